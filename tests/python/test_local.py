"""The one-device route (dispatch="local", _local.py): qr, gesvd and polar
by jnp / jax.scipy's algorithm on the gathered matrix give the results and
status of jaxmg's engines, in the caller's layouts, differentiable; polar's
QDWH falls back to the SVD where its Up would not be unitary."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg
from jaxmg.engines import local as _local
from helpers import DTYPES, ROW, eps, mesh, put, randn

SHAPES = [(24, 24), (32, 12), (12, 32)]  # square, tall, wide (4 devices split rows)


def tol(dtype, n, c=50.0):
    return c * np.sqrt(n) * eps(dtype)


def _orthonormal(Q, k, dtype):
    G = Q.conj().T @ Q if Q.shape[0] >= Q.shape[1] else Q @ Q.conj().T
    return np.linalg.norm(G - np.eye(k)) < tol(dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_polar(rng, dtype, shape):
    m, n = shape
    a = randn(rng, shape, dtype)
    A = put(a, mesh(4), ROW)
    up, h, status = jaxmg.polar(A, None, return_status=True, dispatch="local")
    assert int(status) == 0 and up.sharding.spec == ROW
    up, h = np.asarray(up), np.asarray(h)
    assert _orthonormal(up, min(m, n), dtype)
    assert np.linalg.norm(h - h.conj().T) <= tol(dtype, n) * np.linalg.norm(a, 2)
    assert np.linalg.norm(up @ h - a) <= tol(dtype, max(m, n)) * np.linalg.norm(a)
    assert np.linalg.eigvalsh(h.astype(np.complex128)).min() >= -tol(dtype, n) * np.linalg.norm(a, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_polar_rank_deficient_falls_back_to_the_svd(rng, dtype):
    x = randn(rng, (24, 6), dtype)
    a = (x @ randn(rng, (6, 16), dtype)).astype(dtype)   # rank 6 of 16 columns
    up, h = jaxmg.polar(put(a, mesh(4), ROW), None, dispatch="local")
    up = np.asarray(up)
    assert _orthonormal(up, 16, dtype)
    assert np.linalg.norm(up @ np.asarray(h) - a) <= tol(dtype, 24) * np.linalg.norm(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gesvd(rng, dtype, shape):
    m, n = shape
    a = randn(rng, shape, dtype)
    u, s, vh, status = jaxmg.gesvd(put(a, mesh(4), ROW), None, return_status=True,
                                   dispatch="local")
    assert int(status) == 0
    u, s, vh = map(np.asarray, (u, s, vh))
    assert np.allclose(s, np.linalg.svd(a, compute_uv=False), rtol=0,
                       atol=tol(dtype, max(m, n)) * s[0])
    assert np.linalg.norm((u * s) @ vh - a) <= tol(dtype, max(m, n)) * np.linalg.norm(a)
    s_only = jaxmg.gesvd(put(a, mesh(4), ROW), None, compute_u=False, compute_vh=False,
                         dispatch="local")
    assert np.allclose(np.asarray(s_only), s, rtol=0, atol=tol(dtype, max(m, n)) * s[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_qr(rng, dtype):
    a = randn(rng, (32, 12), dtype)
    q, r, status = jaxmg.qr(put(a, mesh(4), ROW), None, return_status=True, dispatch="local")
    assert int(status) == 0 and q.sharding.spec == ROW
    q, r = np.asarray(q), np.asarray(r)
    assert _orthonormal(q, 12, dtype) and np.allclose(np.tril(r, -1), 0)
    assert np.linalg.norm(q @ r - a) <= tol(dtype, 32) * np.linalg.norm(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vector", [True, False])
def test_lu_solve(rng, dtype, vector):
    """jax.scipy's LU on the gathered matrix: x in b's shape and layout, the
    engines' status for an exactly singular A (the first zero pivot)."""
    n = 12
    a = randn(rng, (n, n), dtype) + 4 * np.eye(n, dtype=dtype)
    b = randn(rng, (n,) if vector else (n, 3), dtype)
    m = mesh(4)
    x, status = jaxmg.lu_solve(put(a, m, ROW), b, None, return_status=True, dispatch="local")
    assert int(status) == 0 and x.shape == b.shape
    res = np.linalg.norm(a @ np.asarray(x) - b) / (np.linalg.norm(a) * np.linalg.norm(x))
    assert res <= tol(dtype, n)
    s = a.copy()
    s[:, 5] = 0
    x, st_local = jaxmg.lu_solve(put(s, m, ROW), b, None, return_status=True, dispatch="local")
    _, st_host = jaxmg.lu_solve(put(s, m, ROW), b, None, return_status=True, dispatch="host")
    assert int(st_local) == int(st_host) > 0 and np.isnan(np.asarray(x)).all()


@pytest.mark.parametrize("op", ["qr", "gesvd", "polar"])
def test_non_finite_input(rng, op):
    a = randn(rng, (16, 8), np.float64)
    a[3, 2] = np.nan
    out = getattr(jaxmg, op)(put(a, mesh(4), ROW), None, return_status=True, dispatch="local")
    assert int(out[-1]) == -1 and all(np.isnan(np.asarray(x)).all() for x in out[:-1])


def test_gradient_matches_the_engine(rng):
    a = randn(rng, (16, 8), np.float64)
    A = put(a, mesh(4), ROW)

    def loss(dispatch):
        return lambda A: jnp.sum(jnp.sin(jaxmg.polar(A, None, dispatch=dispatch)[0]))

    g_local = np.asarray(jax.grad(loss("local"))(A))
    g_host = np.asarray(jax.grad(loss("auto"))(A))
    assert np.allclose(g_local, g_host, atol=1e-10)


def test_under_jit_on_a_2d_mesh(rng):
    a = randn(rng, (16, 16), np.float64)
    m = jax.make_mesh((2, 2), ("r", "c"), devices=jax.devices()[:4])
    A = jax.device_put(a, jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec("r", "c")))
    up, h = jax.jit(lambda A: jaxmg.polar(A, 4, dispatch="local"))(A)
    assert np.linalg.norm(np.asarray(up) @ np.asarray(h) - a) < 1e-12 * np.linalg.norm(a)


@pytest.mark.parametrize("once", [True, False])
def test_cpu_devices_compute_once(rng, monkeypatch, once):
    """On CPU devices (one host's cores) the mesh's first device alone runs
    the algorithm and the others receive its result; on GPUs (stood in for
    by _compute_once = False) every device runs it."""
    m = mesh(4)
    assert _local._compute_once(m)
    monkeypatch.setattr(_local, "_compute_once", lambda mesh_: once)
    runs = []

    def fn(A):
        jax.debug.callback(lambda a: runs.append(1), A[0, 0])
        return 2 * A, jnp.sum(A, dtype=jnp.float64).astype(jnp.int32)

    a = randn(rng, (16, 8), np.float64)
    req = types.SimpleNamespace(mesh=m)
    twice, total = jax.jit(lambda A: _local._replicated(fn, req, A))(put(a, m, ROW))
    jax.effects_barrier()
    assert len(runs) == (1 if once else 4)
    assert np.array_equal(np.asarray(twice), 2 * a)
    assert int(total) == int(np.sum(a))
