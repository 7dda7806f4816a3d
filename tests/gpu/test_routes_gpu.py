"""On GPUs: the one-device JAX route (dispatch="local": jnp / QDWH on the
gathered matrix) for qr, gesvd and polar, and the generalized eigenproblem
on the one-GPU engine (cusolverDn sygvd), every dtype, by their defining
equations against float64."""

import jax
import numpy as np
import pytest
import scipy.linalg
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmg
from gpu_inputs import hpd, herm, rand

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
ROW = P("x", None)


def tol(dtype, n, factor=100.0):
    return factor * n * np.finfo(dtype).eps


def put(a, gpus):
    mesh = Mesh(np.array(gpus), ("x",))
    return jax.device_put(a, NamedSharding(mesh, ROW)), mesh


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1024, 1024), (2048, 512), (512, 1024)])
def test_local_polar_gesvd_qr(gpus, dtype, shape):
    m, n = shape
    a = rand(np.random.default_rng(1), shape, dtype)
    A, mesh = put(a, gpus)
    a64 = a.astype(np.complex128)
    up, h, st = jaxmg.polar(A, None, mesh, ROW, return_status=True, dispatch="local")
    up, h = np.asarray(up).astype(np.complex128), np.asarray(h).astype(np.complex128)
    assert int(st) == 0
    assert np.linalg.norm(up @ h - a64) / np.linalg.norm(a64) < tol(dtype, max(m, n))
    k = min(m, n)
    gram = up.conj().T @ up if m >= n else up @ up.conj().T
    assert np.linalg.norm(gram - np.eye(k)) < tol(dtype, k)
    u, s, vh, st = jaxmg.gesvd(A, None, mesh, ROW, return_status=True, dispatch="local")
    assert int(st) == 0
    s_ref = np.linalg.svd(a64, compute_uv=False)
    assert np.max(np.abs(np.asarray(s) - s_ref)) < tol(dtype, max(m, n)) * s_ref[0]
    if m >= n:
        q, r, st = jaxmg.qr(A, None, mesh, ROW, return_status=True, dispatch="local")
        q, r = np.asarray(q).astype(np.complex128), np.asarray(r).astype(np.complex128)
        assert int(st) == 0
        assert np.linalg.norm(q @ r - a64) / np.linalg.norm(a64) < tol(dtype, m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eigh_generalized_one_gpu(gpus, dtype):
    n = 1000  # not a multiple of the tile
    rng = np.random.default_rng(2)
    a, b = herm(rng, n, dtype), hpd(rng, n, dtype)
    (A, mesh), (B, _) = put(a, gpus), put(b, gpus)
    w, v, st = jaxmg.eigh_generalized(A, B, None, mesh, ROW, return_status=True,
                                      dispatch="single")
    assert int(st) == 0
    w, v = np.asarray(w).astype(np.float64), np.asarray(v).astype(np.complex128)
    a64, b64 = a.astype(np.complex128), b.astype(np.complex128)
    w_ref = scipy.linalg.eigh(a64, b64, eigvals_only=True)
    scale = np.linalg.norm(a64, 2)
    assert np.max(np.abs(w - w_ref)) < tol(dtype, n) * scale * np.linalg.cond(b64)
    assert np.linalg.norm(a64 @ v - b64 @ v * w) / (scale * np.linalg.norm(v)) < tol(dtype, n)
    assert np.linalg.norm(v.conj().T @ b64 @ v - np.eye(n)) < tol(dtype, n) * 10


def test_eigh_generalized_b_not_positive_definite(gpus):
    n = 256
    rng = np.random.default_rng(3)
    a, b = herm(rng, n, np.float64), herm(rng, n, np.float64)
    (A, mesh), (B, _) = put(a, gpus), put(b, gpus)
    w, v, st = jaxmg.eigh_generalized(A, B, None, mesh, ROW, return_status=True,
                                      dispatch="single")
    assert 1 <= int(st) <= n and np.isnan(np.asarray(w)).all()
