"""Only jaxmg's rendezvous synchronises before the engine (issue 26).

- No JAX collective is compiled before an op's FFI call: the lowered
  program and the compiled schedule of every op have no all-reduce,
  all-to-all, all-gather or collective-permute ahead of the custom call.
- A NaN or an infinity in one shard only gives status -1 and NaN outputs
  on every op: each device flags its own shard, the flags meet in the C
  rendezvous, and no engine runs.
- A device that never arrives (a process that skips a call, a device under
  `lax.cond(axis_index == 0, ...)`) is jaxmg's error after JAXMG_TIMEOUT_S,
  naming it, never a hang or XLA's abort.
- Two processes calling different ops at one source line meet and both
  fail naming both calls, long before the timeout.
- JAXMG_TIMEOUT_S has one parser (csrc/util/timeout.h) that Python reads.

The multi-process jobs run through test_multiprocess.launch (mp_worker.py),
each process under a time limit.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxmg
from helpers import REP, ROW, mesh, put, randn, spd
from test_multiprocess import launch

N, K = 16, 4  # 4 devices, shards of 4 rows: no tile padding anywhere

COLLECTIVE_LOWERED = re.compile(r"stablehlo\.(all_reduce|all_to_all|all_gather|collective_permute|"
                                r"reduce_scatter|collective_broadcast)")
COLLECTIVE_COMPILED = re.compile(r"\b(all-reduce|all-to-all|all-gather|collective-permute|"
                                 r"reduce-scatter|collective-broadcast)(-start)?\(")


def _ops(m):
    """op name -> (function of (A, b), A's shape): every public op, with
    its status, as a user calls it."""
    st = dict(return_status=True)
    return {
        "potrs": (lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True, **st),
                  (N, N)),
        "potri": (lambda A, b: jaxmg.potri(A, None, m, (ROW,), **st), (N, N)),
        "syevd": (lambda A, b: jaxmg.syevd(A, None, m, (ROW,), **st), (N, N)),
        "lu_solve": (lambda A, b: jaxmg.lu_solve(A, b, None, m, (ROW, REP), **st), (N, N)),
        "least_squares": (lambda A, b: jaxmg.least_squares(A, b, None, m, (ROW, REP), **st),
                          (N, N // 2)),
        "qr": (lambda A, b: jaxmg.qr(A, None, m, (ROW,), **st), (N, N // 2)),
        "gesvd": (lambda A, b: jaxmg.gesvd(A, None, m, (ROW,), **st), (N, N // 2)),
        "polar": (lambda A, b: jaxmg.polar(A, None, m, (ROW,), **st), (N, N // 2)),
    }


def _inputs(rng, shape, dtype, m):
    A = spd(rng, N, dtype) if shape[0] == shape[1] else randn(rng, shape, dtype)
    b = randn(rng, (N, 2), dtype)
    return np.asarray(A), b


def _before_first_call(lowered_text: str) -> str:
    """main's body up to its first jaxmg custom call (the ops inline their
    shard_map there), plus every private function main calls before it."""
    main = lowered_text[lowered_text.index("func.func public @main"):]
    head = main[: main.index("custom_call @jaxmg_")]
    called = set(re.findall(r"call @([\w.]+)\(", head))
    bodies = [m.group(0) for m in re.finditer(r"func\.func private @([\w.]+)\(.*?\n  }", lowered_text,
                                              re.S) if m.group(1) in called]
    return head + "".join(bodies)


def _scheduled_before_first_call(compiled_text: str) -> str:
    entry = compiled_text[compiled_text.index("\nENTRY"):]
    return entry[: entry.index('custom_call_target="jaxmg_')]


@pytest.mark.parametrize("op", ["potrs", "potri", "syevd", "lu_solve", "least_squares", "qr",
                                "gesvd", "polar"])
def test_no_collective_before_the_call(rng, op):
    m = mesh(4)
    fn, shape = _ops(m)[op]
    A, b = _inputs(rng, shape, np.float64, m)
    lowered = jax.jit(fn).lower(put(A, m, ROW), put(b, m, REP))
    text = lowered.as_text()
    assert "custom_call @jaxmg_" in text
    found = COLLECTIVE_LOWERED.findall(_before_first_call(text))
    assert not found, f"{op}: {found} compiled before the FFI call"
    found = COLLECTIVE_COMPILED.findall(_scheduled_before_first_call(lowered.compile().as_text()))
    assert not found, f"{op}: {found} scheduled before the FFI call"


def _bad_in_one_shard(A, shard=2, value=np.nan):
    """A with one non-finite entry, in rows of device `shard` only."""
    A = np.array(A)
    A[shard * 4 + 1, 3] = value
    return A


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
@pytest.mark.parametrize("op", ["potrs", "potri", "syevd", "lu_solve", "least_squares", "qr",
                                "gesvd", "polar"])
def test_nonfinite_in_one_shard(rng, op, dtype):
    m = mesh(4)
    fn, shape = _ops(m)[op]
    A, b = _inputs(rng, shape, dtype, m)
    value = np.inf if op in ("qr", "polar") else np.nan
    *outs, status = jax.jit(fn)(put(_bad_in_one_shard(A, value=value), m, ROW), put(b, m, REP))
    assert int(status) == -1, (op, int(status))
    for out in outs:
        assert np.all(np.isnan(np.asarray(out))), (op, out)


@pytest.mark.parametrize("op", ["potrs", "lu_solve", "least_squares"])
def test_nonfinite_b_only(rng, op):
    m = mesh(4)
    fn, shape = _ops(m)[op]
    A, b = _inputs(rng, shape, np.float64, m)
    b[7, 1] = np.nan
    *outs, status = fn(put(A, m, ROW), put(b, m, REP))
    assert int(status) == -1
    x = outs[0]
    assert np.all(np.isnan(np.asarray(x)))


def test_factor_ops_nonfinite_in_one_shard(rng):
    """chol_factor, chol_solve and chol_inverse (the derivative rules'
    factor path): a NaN in one shard of A flags the factor (status -1,
    logdet NaN), and a solve or inverse with that factor runs no engine and
    returns NaN with the factor's status; a good factor with a NaN in b
    gives -1 and NaN too."""
    from jaxmg.ops.cholesky import factor_shard, inverse_shard, solve_shard
    from jaxmg.ops.potrs import POTRS
    from jaxmg.pipeline.per_shard import Statics

    m = mesh(4)
    A = spd(rng, N, np.float64)
    b = randn(rng, (N, 2), np.float64)
    shard = (N // 4, N)
    st_ = Statics(axis_name="x")

    def body(a, bb, a_ok):
        fac, st, ld = factor_shard(POTRS, st_, a)
        x, sx = solve_shard(POTRS, st_, shard, fac, st, bb)
        inv, si = inverse_shard(POTRS, st_, shard, fac, st)
        fac2, st2, _ = factor_shard(POTRS, st_, a_ok)
        x2, sx2 = solve_shard(POTRS, st_, shard, fac2, st2, jnp.full_like(bb, jnp.nan))
        return st, ld, x, sx, inv, si, st2, x2, sx2

    S = P(None)
    f = jax.jit(jax.shard_map(body, mesh=m, in_specs=(ROW, REP, ROW),
                              out_specs=(S, S, REP, S, ROW, S, S, REP, S), check_vma=False))
    st, ld, x, sx, inv, si, st2, x2, sx2 = f(put(_bad_in_one_shard(A), m, ROW), put(b, m, REP),
                                             put(A, m, ROW))
    assert np.all(np.asarray(st) == -1) and np.all(np.isnan(np.asarray(ld)))
    assert np.all(np.asarray(sx) == -1) and np.all(np.isnan(np.asarray(x)))
    assert np.all(np.asarray(si) == -1) and np.all(np.isnan(np.asarray(inv)))
    assert np.all(np.asarray(st2) == 0)
    assert np.all(np.asarray(sx2) == -1) and np.all(np.isnan(np.asarray(x2)))


def _check_nonfinite_everywhere(seen):
    for i, s in enumerate(seen):
        assert s is not None, f"process {i} recorded nothing"
        for op in ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd",
                   "polar"):
            status, pieces, _ = s[op]
            assert status == "ok", f"process {i}, {op}: {pieces}"
            *outs, st = pieces
            assert all(int(d) == -1 for _, _, d in st), (i, op, st)
            for out in outs:
                assert all(np.all(np.isnan(d)) for _, _, d in out), (i, op)
        status, grads, _ = s["grad"]
        assert status == "ok", grads
        assert all(np.all(np.isnan(d)) for g in grads for _, _, d in g)
        status, after, _ = s["after"]
        assert status == "ok" and all(int(d) == 0 for _, _, d in after[1]), after


def test_nonfinite_in_one_process(tmp_path):
    """Two processes, a NaN (or an infinity) in process 1's shard only:
    every op returns -1 and NaN in both, and the next call works."""
    codes, seen, logs = launch(tmp_path, "nonfinite", 2, timeout_s=20.0)
    assert codes == [0, 0], "\n".join(logs)
    _check_nonfinite_everywhere(seen)


def test_process_that_skips_a_call(tmp_path):
    """Process 1 skips the second of two potri calls: process 0 fails in
    jaxmg's meeting after JAXMG_TIMEOUT_S, naming rank 1 (it used to wait
    in the non-finite check's all-reduce forever)."""
    timeout = 4.0
    codes, seen, logs = launch(tmp_path, "skip", 2, timeout_s=timeout)
    assert codes == [0, 0], "\n".join(logs)
    for s in seen:
        assert s["first"][0] == "ok", s["first"]
    status, msg, secs = seen[0]["second"]
    assert status == "error", msg
    assert "missing rank 1" in msg and "timed out" in msg, msg
    assert 0.9 * timeout <= secs <= timeout + 20, secs


def test_different_ops_at_one_line(tmp_path):
    """Process 0 syevd, process 1 potri, at one source line: both fail
    naming both calls, far sooner than the timeout."""
    timeout = 60.0
    codes, seen, logs = launch(tmp_path, "mismatch", 2, timeout_s=timeout)
    assert codes == [0, 0], "\n".join(logs)
    for i, s in enumerate(seen):
        status, msg, secs = s["mismatch"]
        assert status == "error", f"process {i}: {msg}"
        assert "different calls" in msg and "syevd" in msg and "potri" in msg, msg
        assert secs < timeout / 3, secs


COND_SCRIPT = textwrap.dedent("""
    import time
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    import jaxmg

    m = Mesh(np.array(jax.devices()[:2]), ("x",))
    A = jnp.eye(8) * 2.0
    b = jnp.ones((8, 1))

    def body(a, bb):
        def solve(a, bb):
            return jaxmg.potrs_shardmap_ctx(a, bb, 2)[0]
        return jax.lax.cond(jax.lax.axis_index("x") == 0, solve, lambda a, bb: bb, a, bb)

    f = jax.jit(jax.shard_map(body, mesh=m, in_specs=(P("x", None), P(None, None)),
                              out_specs=P("x", None), check_vma=False))
    t0 = time.monotonic()
    try:
        jax.block_until_ready(f(A, b))
        print("NO ERROR")
    except Exception as e:
        print(f"JAXMG-ERROR after {time.monotonic() - t0:.1f} s: {type(e).__name__}: {e}")
""")


def test_device_under_cond_is_an_error_not_an_abort(tmp_path):
    """potrs_shardmap_ctx under lax.cond(axis_index == 0, ...) inside a
    shard_map: device 1 never calls; device 0 gets jaxmg's timeout error
    naming it (it used to end in XLA's abort, SIGABRT, rc 134)."""
    script = tmp_path / "cond.py"
    script.write_text(COND_SCRIPT)
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAXMG_TIMEOUT_S="3",
               JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, (r.returncode, out[-3000:])
    found = re.search(r"JAXMG-ERROR after ([\d.]+) s: (.*)", r.stdout)
    assert found, out[-3000:]
    assert "jaxmg potrs" in found.group(2) and "missing rank 1" in found.group(2), found.group(2)
    assert float(found.group(1)) < 3 + 20


@pytest.mark.parametrize("text, want", [("5", 5.0), ("5 ", 5.0), (" 0.5\t", 0.5), ("", 180.0),
                                        ("soon", 180.0), ("0", 180.0), ("-2", 180.0),
                                        ("inf", 180.0), ("5s", 180.0)])
def test_timeout_one_parser(monkeypatch, text, want):
    """Every reader of JAXMG_TIMEOUT_S gets the C core's value."""
    from jaxmg.engines import library as _library
    from jaxmg.engines import multiproc as _multiproc
    from jaxmg.engines import nccl_bootstrap as _nccl_bootstrap

    monkeypatch.setenv("JAXMG_TIMEOUT_S", text)
    assert _library.timeout_s() == want
    assert _nccl_bootstrap.timeout_s() == want
    assert _multiproc._timeout_ms() == int(1000 * want)
