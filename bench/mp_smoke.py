"""Smoke check of the cuSOLVERMp engine on the GPUs of this one process:
every op, f64 and c64, on a P x 1 grid over all local GPUs (1 x 1 on one
GPU), through jaxmg.engines.mp_route._run (the row-built call, the view undone),
each result checked against its defining equation; then syevd and sygvd
with one tile of padding forced (a P x 1 grid whose N the GPUs divide
never pads), and sygvd's row on a leading sub-pencil, which the engine
refuses. Prints one line per case and exits non-zero if any case fails.
For the device machine when fewer GPUs are lent than the GPU suite's
multi-process cases need (tests/gpu/test_mp_engine.py)."""

import sys
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)
from jaxmg.pipeline import ffi as _calls
from jaxmg.engines import grid as _grid
from jaxmg.engines import mp_route as _mp_route
from jaxmg import ops
from jaxmg.pipeline import request as _request

HERMITIAN = ("potrs", "potri", "syevd", "sygvd")


def matrix(rng, m, n, dtype, hermitian):
    a = rng.standard_normal((m, n))
    if np.issubdtype(dtype, np.complexfloating):
        a = a + 1j * rng.standard_normal((m, n))
    if hermitian:
        a = a @ a.conj().T / m + np.eye(m)
    return a.astype(dtype)


def residual(op, a, b, out):
    """The defining equation's relative residual, in numpy float64/complex128."""
    a = np.asarray(a, np.complex128)
    g = {k: np.asarray(v, np.complex128) for k, v in out.items() if k != "status"}
    norm = np.linalg.norm
    if op in ("potrs", "lu_solve"):
        return norm(a @ g["x"] - b) / (norm(a) * norm(g["x"]))
    if op == "potri":
        return norm(a @ g["a"] - np.eye(len(a))) / (norm(a) * norm(g["a"]))
    if op == "syevd":
        return norm(a @ g["a"] - g["a"] * g["w"]) / norm(a)
    if op == "sygvd":  # A V = B V diag(w) and V^H B V = I
        b = np.asarray(b, np.complex128)
        v = g["a"]
        scale = (norm(a) + norm(b) * np.max(np.abs(g["w"]))) * norm(v)
        return max(norm(a @ v - b @ v * g["w"]) / scale,
                   norm(v.conj().T @ b @ v - np.eye(len(a))) / (norm(b) * norm(v) ** 2))
    if op == "least_squares":
        return norm(a.conj().T @ (a @ g["x"] - b)) / (norm(a) ** 2 * norm(g["x"]))
    if op == "qr":
        return norm(g["a"] @ g["r"] - a) / norm(a)
    if op == "gesvd":
        return norm((g["u"] * g["s"]) @ g["vh"] - a) / norm(a)
    if op == "polar":
        return norm(g["a"] @ g["h"] - a) / norm(a)
    raise ValueError(op)


def sub_pencil(mesh, rows, rng, n, dtype):
    """sygvd's row called directly on an (n + pad) pencil with nvalid = n:
    the engine refuses it (cuSOLVERMp 0.9.1's sygvd on a leading sub-pencil
    gave f64 vectors off by ~1e-3 and a c64 CUSOLVER_STATUS_INTERNAL_ERROR
    on one H100). True if refused with that reason."""
    k = mesh.shape["x"]
    n1 = -(-(n + 1) // k) * k  # at least one padding row and column
    a, b = matrix(rng, n, n, dtype, True), matrix(rng, n, n, dtype, True)

    def pad(x):
        return np.pad(x, ((0, n1 - n), (0, n1 - n))) + np.diag(np.arange(n1) >= n)

    try:
        args = [jax.device_put(pad(x).astype(dtype), rows) for x in (a, b)]
        grid = _grid.grid_from_mesh(mesh, ("x",), op="sygvd")
        rets = _mp_route.call("sygvd", grid, mesh, _calls.to_engine("sygvd", "collective", args),
                              spec=P("x", None), tile=n1 // k, attrs={"jobz": 1, "nvalid": n})
        jax.block_until_ready(rets)
    except Exception as e:
        refused = "whole pencil only" in str(e)
        print(f"{'sygvd nvalid<n':14s} {np.dtype(dtype).name:10s} "
              f"{'refused ok' if refused else 'FAIL ' + type(e).__name__ + ': ' + str(e)[:300]}")
        return refused
    print(f"{'sygvd nvalid<n':14s} {np.dtype(dtype).name:10s} FAIL: not refused")
    return False


def padded_route(mesh, rows, rng, n, tile, dtype, op):
    """op through the route with one tile of padding forced (as on a P x Q
    grid that does not divide N; one GPU never pads): the eigenproblems'
    zero-block padding and the drop of the pad eigenpairs. True if valid."""
    a = matrix(rng, n, n, dtype, True)
    b = matrix(rng, n, n, dtype, True) if op == "sygvd" else None
    layout = _mp_route._padded_layout
    k = mesh.shape["x"]  # one tile more on every shard
    _mp_route._padded_layout = lambda req, spec: (n + k * tile, n + k * tile, tile)
    t0 = time.perf_counter()
    try:
        aj = jax.device_put(a, rows)
        bj = None if b is None else jax.device_put(b, rows)
        decl = ops.by_row(op)
        req = _request.normalise(decl, decl.options(), aj, *([] if bj is None else [bj]),
                                 T_A=tile, mesh=mesh, specs=P("x", None))
        out = jax.tree.map(np.asarray, _mp_route._run(req, aj, bj))
        res, status = residual(op, a, b, out), int(out["status"])
    except Exception as e:  # report and go on: this is a smoke check
        print(f"{op + ' padded':14s} {np.dtype(dtype).name:10s} ERROR {type(e).__name__}: {e}"[:400])
        return False
    finally:
        _mp_route._padded_layout = layout
    limit = 1e-3 if dtype == np.complex64 else 1e-10
    ok = status == 0 and np.isfinite(res) and res < limit
    print(f"{op + ' padded':14s} {np.dtype(dtype).name:10s} status {status} residual {res:.2e} "
          f"{'ok' if ok else 'FAIL'} ({time.perf_counter() - t0:.2f} s)")
    return ok


def main():
    ndev = jax.local_device_count()
    mesh = jax.make_mesh((ndev,), ("x",))
    rows = NamedSharding(mesh, P("x", None))
    rng = np.random.default_rng(0)
    n, tile, failed = 512 * ndev, 128, 0
    for op in ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar",
               "sygvd"):
        for dtype in (np.float64, np.complex64):
            m = 2 * n if op in ("least_squares", "qr", "gesvd", "polar") else n
            a = matrix(rng, m, n, dtype, op in HERMITIAN)
            b = matrix(rng, m, 4, dtype, False) if op in ("potrs", "lu_solve", "least_squares") else None
            b = matrix(rng, n, n, dtype, True) if op == "sygvd" else b
            t0 = time.perf_counter()
            try:
                bj = None if b is None else jax.device_put(
                    b, rows if op == "sygvd" else NamedSharding(mesh, P(None, None)))
                aj = jax.device_put(a, rows)
                decl = ops.by_row(op)
                req = _request.normalise(decl, decl.options(), aj, *([] if bj is None else [bj]),
                                         T_A=tile, mesh=mesh, specs=P("x", None))
                out = _mp_route._run(req, aj, bj)
                out = jax.tree.map(np.asarray, out)
                res, status = residual(op, a, b, out), int(out["status"])
            except Exception as e:  # report and go on: this is a smoke check
                print(f"{op:14s} {np.dtype(dtype).name:10s} ERROR {type(e).__name__}: {e}"[:400])
                failed += 1
                continue
            limit = 1e-3 if dtype == np.complex64 else 1e-10
            ok = status == 0 and np.isfinite(res) and res < limit
            failed += not ok
            print(f"{op:14s} {np.dtype(dtype).name:10s} status {status} residual {res:.2e} "
                  f"{'ok' if ok else 'FAIL'} ({time.perf_counter() - t0:.2f} s)")
    for dtype in (np.float64, np.complex64):
        for op in ("syevd", "sygvd"):
            failed += not padded_route(mesh, rows, rng, n, tile, dtype, op)
        failed += not sub_pencil(mesh, rows, rng, n, dtype)
    print(f"mp_smoke: {ndev} GPU(s), {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
