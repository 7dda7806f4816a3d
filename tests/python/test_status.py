"""Matrices that are not positive definite: status = the first failing
leading minor (1-based, in A's own order), NaN output, no crash."""

import jax
import numpy as np
import pytest

import jaxmg
from helpers import REP, ROW, check_inverse, check_solve, hermitian, mesh, put, randn, spd


def first_failing_minor(A):
    for k in range(1, A.shape[0] + 1):
        try:
            np.linalg.cholesky(A[:k, :k])
        except np.linalg.LinAlgError:
            return k
    return 0


def diag_with_negative(rng, n, k, dtype):
    """SPD except the leading minor of order k (1-based) fails."""
    A = spd(rng, n, dtype).astype(np.complex128 if np.iscomplexobj(np.zeros(0, dtype)) else np.float64)
    A[k - 1, :] = 0
    A[:, k - 1] = 0
    A[k - 1, k - 1] = -1.0
    return A.astype(dtype)


# (devices, N, T_A, k): padded cases (T_A not dividing N/P, N not divisible
# by P), failures in the first, a middle and the last shard.
CASES = [
    (1, 6, 4, 3),
    (2, 12, 6, 1),
    (4, 16, 4, 9),
    (3, 21, 3, 20),   # shard 7, tile 3: padded; last shard
    (4, 22, 4, 12),   # N % 4 != 0 and tile padding
    (4, 13, 2, 13),   # last row of the matrix
    (8, 24, 2, 5),    # shard 3, tile 2: padded
]


@pytest.mark.parametrize("ndev,n,T_A,k", CASES, ids=str)
def test_potrs_status_negative_diagonal(rng, ndev, n, T_A, k):
    m = mesh(ndev)
    dtype = np.float64
    A = diag_with_negative(rng, n, k, dtype)
    assert first_failing_minor(A) == k
    b = randn(rng, (n, 2), dtype)
    x, status = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP), return_status=True)
    assert int(status) == k
    assert np.all(np.isnan(np.asarray(x)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndev,n,T_A", [(3, 21, 2), (4, 18, 100)], ids=str)
def test_potrs_status_random_indefinite(rng, dtype, ndev, n, T_A):
    """A random symmetric/Hermitian indefinite matrix with a positive
    leading block, so the failure is somewhere inside."""
    m = mesh(ndev)
    for _ in range(100):
        H = hermitian(rng, n, np.complex128 if np.iscomplexobj(np.zeros(0, dtype)) else np.float64)
        H[np.diag_indices(n)] += 2.5
        H = H.astype(dtype)
        k = first_failing_minor(H.astype(np.complex128 if np.iscomplexobj(H) else np.float64))
        # keep away from near-singular minors, where rounding could move the failure
        if k > 3 and abs(np.linalg.eigvalsh(H[:k, :k].astype(np.complex128)).min()) > 0.05 and \
                np.linalg.eigvalsh(H[: k - 1, : k - 1].astype(np.complex128)).min() > 0.05:
            break
    else:
        pytest.fail("no suitable matrix")
    b = randn(rng, (n, 1), dtype)
    x, status = jaxmg.potrs(put(H, m, ROW), put(b, m, REP), T_A, m, (ROW, REP), return_status=True)
    assert int(status) == k, (int(status), k)
    assert np.all(np.isnan(np.asarray(x)))


@pytest.mark.parametrize("ndev,n,T_A,k", [(4, 16, 4, 9), (3, 21, 3, 20), (4, 13, 2, 6)], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.complex64], ids=lambda d: np.dtype(d).name)
def test_potri_status(rng, ndev, n, T_A, k, dtype):
    m = mesh(ndev)
    A = diag_with_negative(rng, n, k, dtype)
    inv, status = jaxmg.potri(put(A, m, ROW), T_A, m, (ROW,), return_status=True)
    assert int(status) == k
    assert np.all(np.isnan(np.asarray(inv)))


def test_potrs_status_under_jit_then_normal_calls(rng):
    m, n, T_A = mesh(4), 20, 3
    f = jax.jit(lambda A, b: jaxmg.potrs(A, b, T_A, m, (ROW, REP), return_status=True))
    bad = diag_with_negative(rng, n, 7, np.float64)
    b = randn(rng, (n, 1), np.float64)
    x, status = f(put(bad, m, ROW), put(b, m, REP))
    assert int(status) == 7 and np.all(np.isnan(np.asarray(x)))
    good = spd(rng, n, np.float64)
    x, status = f(put(good, m, ROW), put(b, m, REP))
    assert int(status) == 0
    check_solve(good, x, b, np.float64)
    # and the other ops on the same devices
    check_inverse(good, jaxmg.potri(put(good, m, ROW), T_A, m, (ROW,)), np.float64)
    x, status = f(put(bad, m, ROW), put(b, m, REP))
    assert int(status) == 7


def test_status_without_return_status_gives_nan(rng):
    m, n = mesh(2), 8
    A = -np.eye(n)
    x = jaxmg.potrs(put(A, m, ROW), put(np.ones((n, 1)), m, REP), 2, m, (ROW, REP))
    assert np.all(np.isnan(np.asarray(x)))
    inv = jaxmg.potri(put(A, m, ROW), 2, m, (ROW,))
    assert np.all(np.isnan(np.asarray(inv)))


def test_nan_input_does_not_crash(rng):
    m, n = mesh(4), 12
    A = spd(rng, n, np.float64)
    A[5, 5] = np.nan
    x, status = jaxmg.potrs(put(A, m, ROW), put(np.ones((n, 1)), m, REP), 3, m, (ROW, REP),
                            return_status=True)
    assert int(status) != 0 or np.all(np.isnan(np.asarray(x)))
    good = spd(rng, n, np.float64)
    b = np.ones((n, 1))
    check_solve(good, jaxmg.potrs(put(good, m, ROW), put(b, m, REP), 3, m, (ROW, REP)), b, np.float64)
