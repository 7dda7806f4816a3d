"""The general ops in multi-process mode (one CPU process per device, as in
test_multiprocess.py): lu_solve, least_squares, qr, gesvd and polar carry
every buffer slot of the op table through the host engine's shared memory
(host_share.c), a batched call (jax.vmap) included, and give numpy's
answers on 2 and 3 processes, in float64
and complex64, leaving nothing in /dev/shm; and two processes that make
different calls at one call site both fail with an error naming both sides
(the call fingerprint), never a silent pairing.

The correctness job runs in mp_worker.py (scenario "general", with the
inputs below); the mismatch job's worker is this file, run as a script."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

LIMIT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, scenario, nprocs=2):
    port = _free_port()
    env = dict(os.environ, JAXMG_TIMEOUT_S="20", JAXMG_NODE_ID="node0")
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__,
             json.dumps(dict(port=port, nprocs=nprocs, pid=i, scenario=scenario, out=str(tmp_path)))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(nprocs)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=LIMIT_S)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{scenario}: a process hung past {LIMIT_S} s")
        assert p.returncode == 0, logs[-1][-3000:]
    return [pickle.loads((tmp_path / f"{i}.pkl").read_bytes()) for i in range(nprocs)]


def _matrices(n, m):
    r = np.random.default_rng(5)
    return r.standard_normal((n, n)), r.standard_normal((n, 2)), r.standard_normal((m, 3)), \
        r.standard_normal((m, 1))


# ---- correctness across processes ---------------------------------------------


def inputs(k, dtype):
    """The scenario's matrices for k processes (the worker builds the same):
    A square 4k, b (4k, 2); B tall (6k, 5), c (6k, 3); W wide (2k, 7)."""
    from mp_matrices import rng

    def randn(key, shape):
        r = rng(f"{key}{k}")
        x = r.standard_normal(shape)
        if np.issubdtype(np.dtype(dtype), np.complexfloating):
            x = x + 1j * r.standard_normal(shape)
        return x.astype(dtype)

    n = 4 * k
    return dict(A=randn("A", (n, n)), b=randn("b", (n, 2)), B=randn("B", (6 * k, 5)),
                c=randn("c", (6 * k, 3)), W=randn("W", (2 * k, 7)))


def _shm_names():
    return {n for n in os.listdir("/dev/shm") if n.startswith("jaxmg")}


def _tol(dtype, size, cond=1.0, c=50.0):
    return c * size * float(np.finfo(np.dtype(dtype)).eps) * cond


def _close(x, ref, tol, what):
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.3e}"


def _orthonormal(Q, dtype, what, rows=False):
    Q = Q.conj().T if rows else Q
    err = np.linalg.norm(Q.conj().T @ Q - np.eye(Q.shape[1]))
    assert err <= _tol(dtype, Q.shape[0]), f"{what}: not orthonormal ({err:.3e})"


def _results(seen, name, dtype, kinds, rows=0):
    """One op's outputs from every process: 'r' a result of `rows` rows
    sharded as A (assembled), 'p' a replicated one (copies equal); status 0
    everywhere."""
    from test_multiprocess import assemble, ok, replicas

    res = ok(seen, name)
    out = []
    for i, kind in enumerate(kinds):
        pieces = [p[i] for p in res]
        out.append(replicas(pieces) if kind == "p" else assemble(pieces, rows))
    status = replicas([p[len(kinds)] for p in res])
    assert int(status) == 0, f"{name}: status {status}"
    real = np.finfo(np.dtype(dtype)).dtype
    for v in out:
        assert v.dtype in (np.dtype(dtype), real), f"{name}: dtype {v.dtype}"
    return [v.astype(np.complex128 if np.iscomplexobj(v) else np.float64) for v in out]


def check_general(seen, k, dtype):
    x = {key: v.astype(np.complex128 if np.iscomplexobj(v) else np.float64)
         for key, v in inputs(k, dtype).items()}
    A, b, B, c, W = x["A"], x["b"], x["B"], x["c"], x["W"]
    n, mt = A.shape[0], B.shape[0]
    cA, cB = np.linalg.cond(A), np.linalg.cond(B)

    (xs,) = _results(seen, f"lu_solve/{dtype}", dtype, "p")
    _close(xs, np.linalg.solve(A, b), _tol(dtype, n, cA), "lu_solve")
    res = np.linalg.norm(A @ xs - b) / (np.linalg.norm(A, 2) * np.linalg.norm(xs))
    assert res <= _tol(dtype, n), f"lu_solve residual {res:.3e}"

    (xl,) = _results(seen, f"least_squares/{dtype}", dtype, "p")
    _close(xl, np.linalg.lstsq(B, c, rcond=None)[0], _tol(dtype, mt, cB ** 2), "least_squares")

    Q, R = _results(seen, f"qr/{dtype}", dtype, "rp", mt)
    _close(Q @ R, B, _tol(dtype, mt), "qr: Q R = A")
    _orthonormal(Q, dtype, "qr: Q")
    assert np.linalg.norm(np.tril(R, -1)) <= _tol(dtype, mt) * np.linalg.norm(R), "R not upper"
    _close(np.abs(np.diag(R)), np.abs(np.diag(np.linalg.qr(B)[1])), _tol(dtype, mt, cB), "|diag R|")

    s_ref = np.linalg.svd(B, compute_uv=False)
    U, s, Vh = _results(seen, f"gesvd/{dtype}", dtype, "rpp", mt)
    _close(s, s_ref, _tol(dtype, mt), "gesvd: s")
    _close((U * s) @ Vh, B, _tol(dtype, mt), "gesvd: U diag(s) Vh = A")
    _orthonormal(U, dtype, "gesvd: U")
    _orthonormal(Vh, dtype, "gesvd: Vh", rows=True)

    U, s, Vh = _results(seen, f"gesvd_full/{dtype}", dtype, "rpp", mt)
    assert U.shape == (mt, mt) and Vh.shape == (5, 5), (U.shape, Vh.shape)
    _close(s, s_ref, _tol(dtype, mt), "gesvd full: s")
    _close((U[:, :5] * s) @ Vh, B, _tol(dtype, mt), "gesvd full: A")
    _orthonormal(U, dtype, "gesvd full: U")

    U, s, Vh = _results(seen, f"gesvd_wide/{dtype}", dtype, "rpp", W.shape[0])
    _close(s, np.linalg.svd(W, compute_uv=False), _tol(dtype, 7), "gesvd wide: s")
    _close((U * s) @ Vh, W, _tol(dtype, 7), "gesvd wide: A")
    _orthonormal(Vh, dtype, "gesvd wide: Vh", rows=True)

    import scipy.linalg

    for name, M, cM in (("polar", A, cA), ("polar_tall", B, cB)):
        size = M.shape[0]
        Up, H = _results(seen, f"{name}/{dtype}", dtype, "rp", size)
        _close(Up @ H, M, _tol(dtype, size, cM), f"{name}: Up H = A")
        _orthonormal(Up, dtype, f"{name}: Up")
        _close(H, scipy.linalg.polar(M)[1], _tol(dtype, size, cM), f"{name}: H")
        assert np.linalg.norm(H - H.conj().T) <= _tol(dtype, size) * np.linalg.norm(H)

    # A failing matrix: the leader's status and NaN reach every process.
    from test_multiprocess import ok, replicas

    # One batched call: each element solved, the singular one NaN with its status.
    res = ok(seen, f"lu_batch/{dtype}")
    xb, st = replicas([p[0] for p in res]), replicas([p[1] for p in res])
    assert xb.shape == (3,) + b.shape and st[0] == 0 and st[1] > 0 and st[2] == 0, st
    assert np.all(np.isnan(xb[1]))
    for i, M in ((0, A), (2, A + 2 * k * np.eye(n))):
        _close(xb[i], np.linalg.solve(M, b), _tol(dtype, n, np.linalg.cond(M)), f"lu batch {i}")

    res = ok(seen, f"lu_singular/{dtype}")
    assert int(replicas([p[1] for p in res])) > 0, "singular A: status 0"
    assert np.all(np.isnan(replicas([p[0] for p in res]))), "singular A: x not NaN"


@pytest.mark.parametrize("nprocs", [2, 3])
def test_general_ops_across_processes(tmp_path, nprocs):
    from test_multiprocess import launch

    before = _shm_names()
    codes, seen, logs = launch(tmp_path, "general", nprocs)
    assert codes == [0] * nprocs, "\n".join(logs)
    for dtype in ("float64", "complex64"):
        check_general(seen, nprocs, dtype)
    # Other jobs on this machine may hold names of their own for a moment:
    # only what outlives a second look is ours.
    left = _shm_names() - before
    if left:
        time.sleep(1.0)
        left &= _shm_names()
    assert not left, f"left in /dev/shm: {sorted(left)}"


# ---- different calls at one site ----------------------------------------------


def test_different_calls_fail_naming_both(tmp_path):
    seen = _launch(tmp_path, "mismatch")
    for s in seen:
        msg = s["mismatch"]
        assert isinstance(msg, str), "a mismatched pair must not succeed"
        assert "different calls" in msg and "rank 0" in msg and "rank 1" in msg, msg
        assert "10 x 4" in msg and "10 x 6" in msg, msg


# ---- the worker -------------------------------------------------------------


def _worker(cfg):
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", num_processes=cfg["nprocs"],
                               process_id=cfg["pid"], initialization_timeout=60)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import jaxmg as g

    me = jax.process_index()
    m = Mesh(np.array(jax.devices()), ("x",))
    row, rep = P("x", None), P(None, None)

    def put(x, spec):
        return jax.make_array_from_callback(x.shape, NamedSharding(m, spec), lambda i: x[i])

    def local(x):
        return np.asarray(x.addressable_shards[0].data)

    seen = {}

    def record(name, fn):
        try:
            seen[name] = local(jax.block_until_ready(fn()))
        except Exception as e:  # judged by the parent
            seen[name] = f"{type(e).__name__}: {e}"

    c = _matrices(8, 10)[3]
    # No XLA collective in this call: the processes reach the meeting with
    # their different A (10 x 4 and 10 x 6).
    B2 = np.random.default_rng(6).standard_normal((10, 4 if me == 0 else 6))
    record("mismatch", lambda: g.least_squares(put(B2, row), put(c, rep), 2, m, (row, rep)))
    # (Whether the next call pairs again depends on the call-site keys,
    # issue 14's other half: here process 0 would reuse its cached trace.)
    with open(os.path.join(cfg["out"], f"{me}.pkl"), "wb") as f:
        pickle.dump(seen, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _worker(json.loads(sys.argv[1]))
