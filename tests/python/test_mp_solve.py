"""_mp.solve, the caller-facing layer over the cuSOLVERMp engine: it must
undo the engine's conventions (mp_ops.c). Checked on CPU with _mp.call
replaced by numpy following exactly those conventions, against the defining
equations in float64, complex Hermitian inputs included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmg import _mp


def engine(op, grid, mesh, a, b=None, *, spec, tile, jobz=1):
    """What the C engine returns, computed with numpy."""
    _mp.validate(op, grid, mesh, a, b, spec, tile)
    A = np.asarray(a).astype(np.complex128)
    M, dt, n = A.T, a.dtype, A.shape[1]
    rd = np.finfo(dt).dtype
    st = np.zeros(grid.p * grid.q, np.int32)
    def c(x, t=dt):
        x = np.asarray(x)
        return jnp.asarray((x if np.issubdtype(t, np.complexfloating) else x.real).astype(t))

    B = None if b is None else np.asarray(b)
    if op == "potrs":
        return c(a), c(np.linalg.solve(M, B).T), c(np.linalg.slogdet(M)[1], rd), st
    if op == "potri":
        return c(np.linalg.inv(M).T), st
    if op == "syevd":
        w, Q = np.linalg.eigh(M)
        return c(Q.T), c(w, rd), st
    if op == "lu_solve":
        return c(a), c(np.linalg.solve(A, B).T), st
    if op == "least_squares":
        out = B.astype(np.complex128).copy()
        out[:n] = np.linalg.lstsq(A, B, rcond=None)[0]
        return c(a), c(out.T), st
    if op == "qr":
        Q, R = np.linalg.qr(A)
        return c(Q), c(R.T), st
    U, s, VT = np.linalg.svd(A, full_matrices=False)
    if op == "gesvd":
        return c(U), c(s, rd), c(VT.T), st
    return c(U @ VT), c(((VT.conj().T * s) @ VT).T), st


@pytest.fixture
def mesh(monkeypatch):
    monkeypatch.setattr(_mp, "call", engine)
    return Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))


def rand(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("op", _mp.OPS)
def test_results_satisfy_the_defining_equations(mesh, rng, op, dtype):
    n = 8
    m = 16 if op in ("least_squares", "qr", "gesvd", "polar") else n
    if op in ("potrs", "potri", "syevd"):
        x = rand(rng, (n, n), dtype)
        a = x @ x.conj().T / n + np.eye(n)
    elif op == "lu_solve":
        a = rand(rng, (n, n), dtype) + 4 * np.eye(n)
    else:
        a = rand(rng, (m, n), dtype)
    a = a.astype(dtype)
    b = rand(rng, (m, 2), dtype).astype(dtype)
    A = jax.device_put(a, NamedSharding(mesh, P("r", "c")))
    B = jnp.asarray(b) if op in ("potrs", "lu_solve", "least_squares") else None
    out = _mp.solve(op, A, B, mesh=mesh, axes=("r", "c"), tile=2)
    o = {k: np.asarray(v) for k, v in out.items()}
    tol = 1e-10
    assert o["status"] == 0
    if op in ("potrs", "lu_solve"):
        np.testing.assert_allclose(a @ o["x"], b, atol=tol)
    if op == "potrs":
        assert abs(o["logdet"] - np.linalg.slogdet(a)[1]) < tol
    if op == "potri":
        np.testing.assert_allclose(o["inv"] @ a, np.eye(n), atol=tol)
    if op == "syevd":
        np.testing.assert_allclose(a @ o["v"], o["v"] * o["w"], atol=tol)
    if op == "least_squares":
        np.testing.assert_allclose(o["x"], np.linalg.lstsq(a, b, rcond=None)[0], atol=tol)
    if op == "qr":
        np.testing.assert_allclose(o["q"] @ o["r"], a, atol=tol)
        assert np.allclose(np.tril(o["r"], -1), 0)
    if op == "gesvd":
        np.testing.assert_allclose((o["u"] * o["s"]) @ o["vh"], a, atol=tol)
    if op == "polar":
        np.testing.assert_allclose(o["u"] @ o["h"], a, atol=tol)
        np.testing.assert_allclose(o["h"], o["h"].conj().T, atol=tol)


def test_needs_a_sharded_array(mesh):
    with pytest.raises(ValueError, match="sharded global array"):
        _mp.solve("potri", np.eye(4), mesh=mesh, axes=("r", "c"), tile=2)
