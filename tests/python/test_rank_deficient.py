"""Exactly singular / rank-deficient inputs of the general ops give the
status docs/status.md documents, the all-zero matrix included: least_squares
the first exactly zero R(k, k) (k = the first zero column of A when the
columns before it are independent) with x all NaN; lu_solve U(k, k) = 0,
x all NaN; qr no failure (status 0, Q orthonormal, Q R = A)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg as g
from helpers import DTYPES, REP, ROW, eps, mesh, put, randn, up

IDS = dict(ids=lambda d: np.dtype(d).name)

# (devices, M, N, zero columns): all zero, the first column, one in the
# middle, several (the first of them decides), the last; M not divisible by
# the device count, square and tall.
ZERO_COLUMNS = [
    (4, 22, 7, "all"),
    (3, 10, 10, "all"),
    (1, 5, 1, "all"),
    (4, 22, 7, (0,)),
    (2, 13, 6, (3,)),
    (8, 41, 9, (2, 5, 8)),
    (3, 20, 9, (8,)),
]


def with_zero_columns(rng, m, n, dtype, zero):
    A = randn(rng, (m, n), dtype)
    A[:, slice(None) if zero == "all" else list(zero)] = 0
    first = 1 if zero == "all" else min(zero) + 1
    return A, first


# b a vector, one column or three, each dtype with one of them in turn.
RHS_BY_DTYPE = [(d, [(), (1,), (3,)][k % 3]) for k, d in enumerate(DTYPES)]


@pytest.mark.parametrize("dtype,rhs", RHS_BY_DTYPE, ids=lambda c: np.dtype(c).name
                         if not isinstance(c, tuple) else f"rhs{c}")
@pytest.mark.parametrize("ndev,M,N,zero", ZERO_COLUMNS, ids=str)
def test_least_squares_zero_columns(rng, dtype, ndev, M, N, zero, rhs):
    m = mesh(ndev)
    A, first = with_zero_columns(rng, M, N, dtype, zero)
    b = randn(rng, (M,) + rhs, dtype)
    x, status = g.least_squares(put(A, m, ROW), jnp.asarray(b), 2, m, (ROW, REP),
                                return_status=True)
    assert x.shape == (N,) + rhs
    assert int(status) == first
    assert np.all(np.isnan(np.asarray(x)))


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
def test_least_squares_zero_b_full_rank_is_solved(rng, dtype):
    """The all-zero check looks at A only: b = 0 with a full-rank A is x = 0."""
    m = mesh(4)
    A = randn(rng, (18, 5), dtype)
    x, status = g.least_squares(put(A, m, ROW), jnp.zeros((18, 2), dtype), 2, m, (ROW, REP),
                                return_status=True)
    assert int(status) == 0
    np.testing.assert_array_equal(np.asarray(x), 0)


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,n", [(4, 13), (1, 6), (8, 64)], ids=str)
@pytest.mark.parametrize("zero", ["all", (0,)], ids=["all", "first_column"])
def test_lu_solve_zero_matrix_status_one(rng, dtype, ndev, n, zero):
    m = mesh(ndev)
    A, first = with_zero_columns(rng, n, n, dtype, zero)
    b = randn(rng, (n, 2), dtype)
    x, status = g.lu_solve(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP), return_status=True)
    assert int(status) == first == 1
    assert np.all(np.isnan(np.asarray(x)))


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,M,N,zero", ZERO_COLUMNS, ids=str)
def test_qr_zero_columns_is_not_a_failure(rng, dtype, ndev, M, N, zero):
    m = mesh(ndev)
    A, _ = with_zero_columns(rng, M, N, dtype, zero)
    Q, R, status = g.qr(put(A, m, ROW), 2, m, (ROW,), return_status=True)
    assert int(status) == 0
    Q, R = up(Q), up(R)
    tol = 50 * max(M, N) * eps(dtype)
    np.testing.assert_allclose(Q.conj().T @ Q, np.eye(N), atol=tol)
    np.testing.assert_allclose(Q @ R, up(A), atol=tol * max(1.0, np.linalg.norm(up(A), 2)))
    np.testing.assert_array_equal(np.tril(R, -1), 0)
