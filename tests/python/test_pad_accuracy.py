"""Padding never costs accuracy (issue 26 item 4, issue 27 item 2).

N = 301 on 4 devices (76 rows a shard, 3 rows of padding after A), at
T_A None, 16, 64 and 37 (which does not divide the shard), every dtype,
ill-conditioned inputs (cond 1e8 in double, 1e4 in single precision): the
backward error of every op is within 2 x LAPACK's (scipy's, the same
routine on the same matrix). syevd lost up to 40 x with tile padding
inside the shards; the host engine now pads nothing at all.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from helpers import DTYPES, ROW, eps, is_complex, mesh, put, randn, request, rng_for, up

import jaxmg
from jaxmg.ops import cholesky
from jaxmg.pipeline import request as _request

N = 301
TILES = (None, 16, 64, 37)
CASES = [(dt, t) for dt in DTYPES for t in TILES]
IDS = [f"{np.dtype(dt).name}-T{t}" for dt, t in CASES]


@functools.lru_cache(maxsize=None)
def _mesh():
    return mesh(4)


def _cond(dtype):
    return 1e8 if np.finfo(np.dtype(dtype)).bits > 32 else 1e4


def _within(err, ref, what):
    """err within 2 x LAPACK's ref, both in units of eps (a floor of one
    eps: below it the two are rounding noise)."""
    assert np.isfinite(err) and err <= 2 * max(ref, 1.0), f"{what}: {err:.2f} eps, LAPACK {ref:.2f}"


def _unitary(rng, n, dtype):
    q, r = np.linalg.qr(randn(rng, (n, n), np.complex128 if is_complex(dtype) else np.float64))
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


def _matrix(key, dtype, m=N, n=N, hermitian=False, positive=False):
    """An m x n matrix with singular values (eigenvalues) from 1 down to
    1/cond: Hermitian with both signs, or positive definite, or general."""
    rng = rng_for(key)
    cond = _cond(dtype)
    k = min(m, n)
    s = np.logspace(0, -np.log10(cond), k)
    u = _unitary(rng, m, dtype)[:, :k]
    if hermitian or positive:
        if not positive:
            s = s * np.where(rng.random(k) < 0.5, -1.0, 1.0)
        a = (u * s) @ u.conj().T
        a = (a + a.conj().T) / 2
    else:
        a = (u * s) @ _unitary(rng, n, dtype)[:, :k].conj().T
    return a.astype(dtype)


def _anorm(a):
    return np.linalg.norm(up(a), 2)


def _solve_err(a, x, b):
    a, x, b = up(a), up(x), up(b)
    return np.linalg.norm(a @ x - b) / (_anorm(a) * np.linalg.norm(x) + np.linalg.norm(b))


def _A(a):
    return put(a, _mesh(), ROW)


@pytest.mark.parametrize("dtype,T", CASES, ids=IDS)
def test_potrs(dtype, T):
    a = _matrix(f"potrs{dtype}", dtype, positive=True)
    b = randn(rng_for(f"b{dtype}"), (N, 2), dtype)
    x = jaxmg.potrs(_A(a), jnp.asarray(b), T, mesh=_mesh(), in_specs=ROW)
    ref = sl.solve(a, b, assume_a="pos")
    _within(_solve_err(a, x, b) / eps(dtype), _solve_err(a, ref, b) / eps(dtype), "potrs")


def _inverse_err(a, inv):
    a, inv = up(a), up(inv)
    return np.linalg.norm(a @ inv - np.eye(a.shape[0])) / (_anorm(a) * np.linalg.norm(inv, 2))


@pytest.mark.parametrize("dtype,T", CASES, ids=IDS)
def test_potri(dtype, T):
    a = _matrix(f"potri{dtype}", dtype, positive=True)
    inv = jaxmg.potri(_A(a), T, mesh=_mesh(), in_specs=ROW)
    lower = sl.lapack.get_lapack_funcs("potri", (a,))(sl.cholesky(a, lower=True), lower=1)[0]
    ref = np.tril(lower) + np.tril(lower, -1).conj().T
    _within(_inverse_err(a, inv) / eps(dtype), _inverse_err(a, ref) / eps(dtype), "potri")


def _eig_errs(a, w, v):
    """(residual ||A V - V W|| / ||A||, orthogonality ||V^H V - I||,
    eigenvalue error max |w - w_true| / ||A||), in eps of the dtype; the
    true eigenvalues from the (rounded) matrix in double precision."""
    e = eps(a.dtype)
    A, w, v = up(a), up(w).real, up(v)
    nrm = _anorm(A)
    true = np.linalg.eigvalsh(A)
    return (np.linalg.norm(A @ v - v * w) / (nrm * e),
            np.linalg.norm(v.conj().T @ v - np.eye(len(w))) / e,
            np.max(np.abs(w - true)) / (nrm * e))


@pytest.mark.parametrize("dtype,T", CASES, ids=IDS)
def test_syevd(dtype, T):
    a = _matrix(f"syevd{dtype}", dtype, hermitian=True)
    w, v = jaxmg.syevd(_A(a), T, mesh=_mesh(), in_specs=ROW)
    got = _eig_errs(a, w, v)
    ref = _eig_errs(a, *sl.eigh(a, driver="evd"))
    for what, g, r in zip(("residual", "orthogonality", "eigenvalues"), got, ref):
        _within(g, r, f"syevd {what}")
    # without eigenvectors LAPACK runs another algorithm (no divide and conquer)
    w_only = jaxmg.syevd(_A(a), T, mesh=_mesh(), in_specs=ROW, return_eigenvectors=False)
    true = np.linalg.eigvalsh(up(a))
    e = lambda w_: np.max(np.abs(up(w_).real - true)) / (_anorm(a) * eps(dtype))  # noqa: E731
    _within(e(w_only), e(sl.eigh(a, eigvals_only=True, driver="evd")), "syevd eigenvalues alone")


@pytest.mark.parametrize("dtype,T", CASES, ids=IDS)
def test_lu_solve(dtype, T):
    a = _matrix(f"lu{dtype}", dtype)
    b = randn(rng_for(f"lub{dtype}"), (N, 2), dtype)
    x = jaxmg.lu_solve(_A(a), jnp.asarray(b), T, mesh=_mesh(), in_specs=ROW)
    ref = sl.solve(a, b)
    _within(_solve_err(a, x, b) / eps(dtype), _solve_err(a, ref, b) / eps(dtype), "lu_solve")


@pytest.mark.parametrize("dtype,T", CASES, ids=IDS)
def test_chol_factor_solve_inverse(dtype, T):
    """The factor-reuse ops (potrs's derivatives run on them)."""
    a = _matrix(f"chol{dtype}", dtype, positive=True)
    b = randn(rng_for(f"cholb{dtype}"), (N, 2), dtype)
    A = _A(a)
    req = request("potrs", A, jnp.asarray(b), T_A=T, mesh=_mesh(), specs=ROW)

    def core(A, b, req):
        F, s, logdet = cholesky.factor_global(req, A)
        x, _ = cholesky.solve_global(req, F, s, b)
        inv, _ = cholesky.inverse_global(req, F, s)
        return x, inv, logdet

    x, inv, logdet = _request.run(core, req, A, jnp.asarray(b))
    ref_x = sl.solve(a, b, assume_a="pos")
    _within(_solve_err(a, x, b) / eps(dtype), _solve_err(a, ref_x, b) / eps(dtype), "chol_solve")
    ref_inv = np.linalg.inv(up(a)).astype(dtype)
    _within(_inverse_err(a, inv) / eps(dtype), max(_inverse_err(a, ref_inv) / eps(dtype), 1),
            "chol_inverse")
    true = np.linalg.slogdet(up(a))[1]
    ref_ld = 2 * np.sum(np.log(np.abs(np.diagonal(sl.cholesky(a, lower=True)))))
    scale = eps(dtype) * abs(true)
    _within(abs(float(logdet) - true) / scale, abs(float(ref_ld) - true) / scale, "logdet")


# The rectangular ops: M = 303 rows (not a multiple of 4), N = 101. They
# gather on every engine and take no tile (T_A is validated only): two
# T_A are enough to show it.
M_T, N_T = 303, 101
RECT = [(dt, t) for dt in DTYPES for t in (None, 37)]
RECT_IDS = [f"{np.dtype(dt).name}-T{t}" for dt, t in RECT]


@pytest.mark.parametrize("dtype,T", RECT, ids=RECT_IDS)
def test_least_squares(dtype, T):
    a = _matrix(f"ls{dtype}", dtype, M_T, N_T)
    b = randn(rng_for(f"lsb{dtype}"), (M_T, 2), dtype)
    x = jaxmg.least_squares(_A(a), jnp.asarray(b), T, mesh=_mesh(), in_specs=ROW)
    q, r = sl.qr(a, mode="economic")
    ref = sl.solve_triangular(r, q.conj().T @ b)

    def err(x):  # the normal equations' backward error
        A, x, b2 = up(a), up(x), up(b)
        return np.linalg.norm(A.conj().T @ (A @ x - b2)) / (
            _anorm(A) * (_anorm(A) * np.linalg.norm(x) + np.linalg.norm(b2)) * eps(dtype))

    _within(err(x), err(ref), "least_squares")


def _factor_errs(a, left, right, unitary):
    """||A - left right|| / ||A|| and ||unitary^H unitary - I||, in eps."""
    e = eps(a.dtype)
    A, L, R, U = up(a), up(left), up(right), up(unitary)
    return (np.linalg.norm(A - L @ R) / (_anorm(A) * e),
            np.linalg.norm(U.conj().T @ U - np.eye(U.shape[1])) / e)


@pytest.mark.parametrize("dtype,T", RECT, ids=RECT_IDS)
def test_qr(dtype, T):
    a = _matrix(f"qr{dtype}", dtype, M_T, N_T)
    q, r = jaxmg.qr(_A(a), T, mesh=_mesh(), in_specs=ROW)
    rq, rr = sl.qr(a, mode="economic")
    for g, ref, what in zip(_factor_errs(a, q, r, q), _factor_errs(a, rq, rr, rq), ("A - QR", "Q")):
        _within(g, ref, f"qr {what}")


@pytest.mark.parametrize("dtype,T", RECT, ids=RECT_IDS)
def test_gesvd(dtype, T):
    a = _matrix(f"svd{dtype}", dtype, M_T, N_T)
    u, s, vh = jaxmg.gesvd(_A(a), T, mesh=_mesh(), in_specs=ROW)
    ru, rs, rvh = sl.svd(a, full_matrices=False, lapack_driver="gesvd")
    got = _factor_errs(a, up(u) * up(s), vh, u)
    ref = _factor_errs(a, up(ru) * up(rs), rvh, ru)
    for g, r, what in zip(got, ref, ("A - U S Vh", "U")):
        _within(g, r, f"gesvd {what}")
    true = np.linalg.svd(up(a), compute_uv=False)
    e = lambda s_: np.max(np.abs(up(s_) - true)) / (_anorm(a) * eps(dtype))  # noqa: E731
    _within(e(s), e(rs), "gesvd singular values")


@pytest.mark.parametrize("dtype,T", RECT, ids=RECT_IDS)
def test_polar(dtype, T):
    a = _matrix(f"polar{dtype}", dtype, M_T, N_T)
    up_, h = jaxmg.polar(_A(a), T, mesh=_mesh(), in_specs=ROW)
    ru, rh = sl.polar(a)
    for g, r, what in zip(_factor_errs(a, up_, h, up_), _factor_errs(a, ru, rh, ru),
                          ("A - U H", "U")):
        _within(g, r, f"polar {what}")
