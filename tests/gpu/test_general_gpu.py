"""lu_solve, least_squares, qr, gesvd and polar on GPUs: one GPU through
cuSOLVER ("single", every op) and cuSolverMg across the GPUs of the axis
("multi", lu_solve), every dtype, checked by their defining equations
against float64; and potrs's log det on both GPU paths."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmg.pipeline import ffi as _calls
from jaxmg.pipeline import decide as _decide
from jaxmg.engines import library as _library
from jaxmg.pipeline import shard as _shard
import jaxmg as g

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
EPS = {np.float32: 1.2e-7, np.float64: 2.2e-16, np.complex64: 1.2e-7, np.complex128: 2.2e-16}
ROW, REP = P("x", None), P(None, None)


def randn(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def up(x):
    return np.asarray(x).astype(np.complex128)


def tol(dtype, n, factor=100.0):
    return factor * n * EPS[dtype]


def mesh_of(devs):
    return Mesh(np.array(devs), ("x",))


def put(a, mesh, spec):
    if spec[0] is not None and a.shape[0] % mesh.devices.size:
        return a
    return jax.device_put(a, NamedSharding(mesh, spec))


@pytest.mark.parametrize("dispatch", ["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_solve(gpus, dtype, dispatch):
    n, mesh = 1500, mesh_of(gpus)  # padded, several tiles per device
    a, b = randn((n, n), dtype, 1), randn((n, 3), dtype, 2)
    x, st = g.lu_solve(put(a, mesh, ROW), put(b, mesh, REP), 256, mesh, (ROW, REP),
                       return_status=True, dispatch=dispatch)
    assert int(st) == 0
    A, X = up(a), up(x)
    res = np.linalg.norm(A @ X - b) / (np.linalg.norm(A, 2) * np.linalg.norm(X))
    assert res < tol(dtype, n), res


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_lu_solve_singular(gpus, dispatch):
    n, mesh = 512, mesh_of(gpus)
    a = randn((n, n), np.float64, 3)
    a[:, 100] = 0
    x, st = g.lu_solve(put(a, mesh, ROW), put(np.ones((n, 1)), mesh, REP), 128, mesh, (ROW, REP),
                       return_status=True, dispatch=dispatch)
    assert int(st) > 0 and np.all(np.isnan(np.asarray(x)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_least_squares_and_qr(gpus, dtype):
    m, n, mesh = 1203, 500, mesh_of(gpus)
    a, b = randn((m, n), dtype, 4), randn((m, 2), dtype, 5)
    A = put(a, mesh, ROW)
    x = g.least_squares(A, put(b, mesh, REP), 128, mesh, (ROW, REP))
    ref = np.linalg.lstsq(up(a), up(b), rcond=None)[0]
    assert np.linalg.norm(up(x) - ref) / np.linalg.norm(ref) < tol(dtype, m) * np.linalg.cond(up(a))
    q, r = g.qr(A, 128, mesh, (ROW,))
    Q, R = up(q), up(r)
    assert np.all(np.tril(R, -1) == 0)
    assert np.linalg.norm(Q @ R - up(a)) / np.linalg.norm(up(a)) < tol(dtype, m)
    assert np.linalg.norm(Q.conj().T @ Q - np.eye(n)) < tol(dtype, m)


@pytest.mark.parametrize("shape", [(1100, 400), (300, 700)], ids=str)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gesvd(gpus, dtype, full, shape):
    m, n = shape
    mesh = mesh_of(gpus)
    a = randn(shape, dtype, 6)
    u, s, vh = g.gesvd(put(a, mesh, ROW), 128, mesh, (ROW,), full_matrices=full)
    U, S, Vh = up(u), np.asarray(s), up(vh)
    k = min(m, n)
    ref = np.linalg.svd(up(a), compute_uv=False)
    assert np.all(np.diff(S) <= 0) and np.abs(S - ref).max() < tol(dtype, max(m, n)) * ref[0]
    assert np.linalg.norm(U.conj().T @ U - np.eye(U.shape[1])) < tol(dtype, m)
    assert np.linalg.norm(Vh @ Vh.conj().T - np.eye(Vh.shape[0])) < tol(dtype, n)
    rec = (U[:, :k] * S) @ Vh[:k]
    assert np.linalg.norm(rec - up(a)) / np.linalg.norm(up(a)) < tol(dtype, max(m, n))
    s_only = g.gesvd(put(a, mesh, ROW), 128, mesh, (ROW,), compute_u=False, compute_vh=False)
    assert np.abs(np.asarray(s_only) - ref).max() < tol(dtype, max(m, n)) * ref[0]


@pytest.mark.parametrize("shape", [(900, 400), (400, 400), (250, 600)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_polar(gpus, dtype, shape):
    m, n = shape
    mesh = mesh_of(gpus)
    a = randn(shape, dtype, 7)
    up_, h = g.polar(put(a, mesh, ROW), 128, mesh, (ROW,))
    Up, H, A = up(up_), up(h), up(a)
    k = min(m, n)
    gram = Up.conj().T @ Up if m >= n else Up @ Up.conj().T
    assert np.linalg.norm(gram - np.eye(k)) < tol(dtype, max(m, n))
    assert np.linalg.norm(H - H.conj().T) < tol(dtype, n) * np.linalg.norm(A, 2)
    assert np.linalg.norm(Up @ H - A) / np.linalg.norm(A) < tol(dtype, max(m, n))


@pytest.mark.parametrize("dispatch", [_decide.c_code("mg"), _decide.c_code("single")],
                         ids=["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_potrs_logdet(gpus, dtype, dispatch):
    n, mesh = 1024, mesh_of(gpus)
    x = randn((n, n), dtype, 8).astype(np.complex128 if np.iscomplexobj(np.zeros(0, dtype)) else np.float64)
    a = (x @ x.conj().T / n + np.eye(n)).astype(dtype)
    b = randn((n, 1), dtype, 9)
    _library.ensure_registered("gpu")
    nparties = mesh.devices.size

    def body(a_, b_):
        where = _shard.where_am_i(("x",))
        bb = jnp.conj(b_) if np.iscomplexobj(b_) else b_
        x_, st, ld = _calls.potrs_with_logdet(a_, bb, where, site=_shard.new_site(),
                                              tile=a_.shape[0] // 2, nparties=nparties,
                                              dispatch=dispatch)
        return st.reshape(1), ld.reshape(1)

    st, ld = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(ROW, REP), out_specs=(P("x"), P("x")),
                                   check_vma=False))(put(a, mesh, ROW), put(b, mesh, REP))
    ref = np.linalg.slogdet(a.astype(np.complex128))[1]
    assert np.all(np.asarray(st) == 0)
    assert np.abs(np.asarray(ld) - ref).max() < tol(dtype, n) * abs(ref)
