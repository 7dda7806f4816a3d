"""The caller-facing layer over the cuSOLVERMp engine (_mp_route._run): it
builds the call from the op's row of the C op table and undoes the engine's
view of A from the row (_calls.to_engine / from_engine). Checked on CPU with
_mp_route.call replaced by numpy following the rows' conventions for the
collective kind (op_table.c: the Hermitian ops see A^T, the others A; n x n
results row-major; the eigensolvers read the lower triangle of what they
see), against the defining equations in float64, complex Hermitian inputs
included."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmg.pipeline import ffi as _calls
from jaxmg.engines import mp_route as _mp_route
from helpers import request
from jaxmg.ops.eigh_generalized import status_of


def lower_hermitian(x):
    """The Hermitian matrix an eigensolver reads from x's lower triangle."""
    return np.tril(x) + np.tril(x, -1).conj().T


def pencil(M, MB, nv):
    """LAPACK sygvd's (w, Z, info) for the leading nv x nv pencil (M, MB),
    read by their lower triangles: info nv + k where MB's leading minor k is
    not positive definite (w, Z None then)."""
    M, MB = lower_hermitian(M[:nv, :nv]), lower_hermitian(MB[:nv, :nv])
    try:
        Li = np.linalg.inv(np.linalg.cholesky(MB))
    except np.linalg.LinAlgError:
        k = next(k for k in range(1, nv + 1) if np.linalg.eigvalsh(MB[:k, :k])[0] <= 0)
        return None, None, nv + k
    w, Y = np.linalg.eigh(Li @ M @ Li.conj().T)
    return w, Li.conj().T @ Y, 0


def engine(op, grid, mesh, args, *, spec, tile, attrs):
    """What the C engine returns for the row of op, computed with numpy:
    its results in the row's order, global, the status one per device;
    every float result NaN where the input was not finite (the C core's
    nan_results, ops/handle.c)."""
    rets = _results(op, grid, mesh, args, spec=spec, tile=tile, attrs=attrs)
    if any(not np.isfinite(np.asarray(x)).all() for x in args):
        rets = tuple(x if b.type == "I" else jnp.full_like(x, np.nan)
                     for x, b in zip(rets, _calls.table()[op].rets))
    return rets


def _results(op, grid, mesh, args, *, spec, tile, attrs):
    row = _calls.table()[op]
    assert len(args) == len(row.args) - 1 and tile >= 1  # `where` is made per device
    # the C core's decode: every shard's height a multiple of the tile
    rows = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    shards = math.prod(mesh.shape[ax] for ax in rows if ax is not None)
    assert args[0].shape[0] % (shards * tile) == 0, (args[0].shape, shards, tile)
    # the C core's non-finite flags (ops/handle.c): no engine runs, status -1 everywhere
    bad = not all(np.isfinite(np.asarray(x)).all() for x in args)
    args = [np.nan_to_num(np.asarray(x), nan=0.0, posinf=0.0, neginf=0.0) for x in args]
    a = args[0]
    A = np.asarray(a).astype(np.complex128)
    sees_at = _mp_route.KIND in row.sees_at
    M, dt, n = (A.T if sees_at else A), a.dtype, A.shape[1]
    rd = np.finfo(dt).dtype
    st = np.full(grid.p * grid.q, -1 if bad else 0, np.int32)

    def c(x, t=dt):
        x = np.asarray(x)
        return jnp.asarray((x if np.issubdtype(t, np.complexfloating) else x.real).astype(t))

    B = None if len(args) < 2 else np.asarray(args[1])
    if op == "potrs":
        return c(a), c(np.linalg.solve(M, B)), st, c(np.linalg.slogdet(M)[1], rd)
    if op == "potri":  # M^-1 written column-major into A's row-major buffer
        return c(np.linalg.inv(M).T), st
    if op == "syevd":  # Q's columns written column-major: A's buffer holds Q^T
        w, Q = np.linalg.eigh(M)
        return c(Q.T), c(w, rd), st
    if op == "sygvd":  # the whole pencil (mp_ops.c refuses a sub-pencil); all NaN on failure
        nv = attrs["nvalid"]
        assert nv == n, "the engine solves the whole pencil only"
        wv, Zv, info = pencil(M, B.T if sees_at else B, nv)
        w, Z = np.zeros(n), np.zeros((n, n), complex)
        if info:
            w[:], Z[:] = np.nan, np.nan
        else:
            w[:nv], Z[:nv, :nv] = wv, Zv
        return c(Z.T), c(w, rd), np.full_like(st, info)
    if op == "lu_solve":
        return c(a), c(np.linalg.solve(M, B)), st
    if op == "least_squares":
        return c(a), c(np.linalg.lstsq(M, B, rcond=None)[0]), st
    if op == "qr":
        Q, R = np.linalg.qr(M)
        return c(Q), c(R), st
    U, s, VT = np.linalg.svd(M, full_matrices=False)
    if op == "gesvd":
        u = U[:, : attrs["ucols"]]
        return c(a), c(u), c(s, rd), c(VT[: attrs["vrows"]]), st
    H = (VT.conj().T * s) @ VT
    return c(U @ VT), c(H[: attrs["hrows"]]), st


@pytest.fixture
def mesh(monkeypatch):
    monkeypatch.setattr(_mp_route, "call", engine)
    return Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))


def rand(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x


def hpd(rng, n, dtype):
    """A Hermitian positive definite n x n matrix."""
    x = rand(rng, (n, n), dtype)
    return (x @ x.conj().T / n + np.eye(n)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("op", _mp_route.OPS)
def test_results_satisfy_the_defining_equations(mesh, rng, op, dtype):
    n = 8
    tall = op in ("least_squares", "qr", "gesvd", "polar")
    m = 16 if tall else n
    if op in ("potrs", "potri", "syevd", "sygvd"):
        a = hpd(rng, n, dtype)
    elif op == "lu_solve":
        a = rand(rng, (n, n), dtype) + 4 * np.eye(n)
    else:
        a = rand(rng, (m, n), dtype)
    a = a.astype(dtype)
    b = rand(rng, (m, 2), dtype).astype(dtype)
    A = jax.device_put(a, NamedSharding(mesh, P("r", "c")))
    B = jnp.asarray(b) if op in ("potrs", "lu_solve", "least_squares") else None
    if op == "sygvd":
        bm = hpd(rng, n, dtype)
        B = jax.device_put(bm, NamedSharding(mesh, P("r", "c")))
    req = request(op, A, *([] if B is None else [B]), T_A=2, mesh=mesh, specs=P("r", "c"))
    out = _mp_route._run(req, A, B)
    o = {k: np.asarray(v) for k, v in out.items()}
    tol = 1e-10
    assert o["status"] == 0
    if op in ("potrs", "lu_solve"):
        np.testing.assert_allclose(a @ o["x"], b, atol=tol)
    if op == "potrs":
        assert abs(o["logdet"] - np.linalg.slogdet(a)[1]) < tol
    if op == "potri":
        np.testing.assert_allclose(o["a"] @ a, np.eye(n), atol=tol)
    if op == "syevd":
        np.testing.assert_allclose(a @ o["a"], o["a"] * o["w"], atol=tol)
    if op == "sygvd":
        V = o["a"]
        np.testing.assert_allclose(a @ V, bm @ V * o["w"], atol=tol)
        np.testing.assert_allclose(V.conj().T @ bm @ V, np.eye(n), atol=tol)
    if op == "least_squares":
        np.testing.assert_allclose(o["x"], np.linalg.lstsq(a, b, rcond=None)[0], atol=tol)
    if op == "qr":
        np.testing.assert_allclose(o["a"] @ o["r"], a, atol=tol)
    if op == "gesvd":
        np.testing.assert_allclose((o["u"] * o["s"]) @ o["vh"], a, atol=tol)
    if op == "polar":
        np.testing.assert_allclose(o["a"] @ o["h"], a, atol=tol)
        np.testing.assert_allclose(o["h"], o["h"].conj().T, atol=tol)


def test_the_view_is_undone_from_the_rows(rng):
    """Per kind, what to_engine / from_engine do is the rows' data: potrs's
    b and x conjugated for both kinds, syevd's vectors conjugate-transposed,
    lu_solve's A and qr's untouched (their engines undo A^T themselves)."""
    x = jnp.asarray(rand(rng, (3, 3), np.complex128))
    for kind in ("leader", "collective"):
        a, b, = _calls.to_engine("potrs", kind, (x, x))
        assert np.array_equal(a, x) and np.array_equal(b, jnp.conj(x))
        v, w, st = _calls.from_engine("syevd", kind, (x, x[0].real, 0))
        assert np.array_equal(v, jnp.conj(x).T) and np.array_equal(w, x[0].real)
        assert np.array_equal(_calls.to_engine("qr", kind, (x,))[0], x)
        assert np.array_equal(_calls.to_engine("lu_solve", kind, (x, x))[0], x)
    real = jnp.asarray(rand(rng, (3, 2), np.float64))
    assert _calls.to_engine("potrs", "collective", (real, real))[1] is real


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_sygvd_reads_upper_triangles_and_maps_info(mesh, rng, dtype):
    """sygvd's rows (sees_at, the vectors' view) meet the public contract:
    A and B are read by their upper triangles (garbage below changes
    nothing), and LAPACK's info for B's failing leading minor k becomes
    status k, outputs NaN."""
    n = 8
    a, bm = hpd(rng, n, dtype), hpd(rng, n, dtype)
    low = np.tril(np.ones((n, n), bool), -1)
    spec = NamedSharding(mesh, P("r", "c"))

    def run(a_, b_):
        A, B = jax.device_put(a_, spec), jax.device_put(b_, spec)
        req = request("sygvd", A, B, T_A=2, mesh=mesh, specs=P("r", "c"))
        return {k: np.asarray(v) for k, v in _mp_route._run(req, A, B).items()}

    o = run(np.where(low, 7.0, a).astype(dtype), np.where(low, -5.0, bm).astype(dtype))
    assert o["status"] == 0
    np.testing.assert_allclose(a @ o["a"], bm @ o["a"] * o["w"], atol=1e-10)
    bad = bm.copy()
    bad[2, 2] = -1.0
    o = run(a, bad)
    k = next(k for k in range(1, n + 1) if np.linalg.eigvalsh(bad[:k, :k])[0] <= 0)
    # LAPACK's info (n + k), mapped as the op declares (status_of), as on every engine
    assert o["status"] == k and status_of(jnp.int32(n + k), n) == k
    assert np.isnan(o["w"]).all() and np.isnan(o["a"]).all()
