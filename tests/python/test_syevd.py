"""syevd: eigenvalues ascending and eigenvectors as columns, A V = V diag(w)."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

import jaxmg
from helpers import DTYPES, ROW, check_eigh, hermitian, mesh, put, unitary, up

CASES = [
    (1, 7, 3),
    (2, 24, 5),   # shard 12, tile 5: padded
    (3, 30, 4),   # shard 10, tile 4: padded
    (4, 13, 2),   # N not divisible by the device count
    (8, 64, 3),
    (4, 20, 100), # tile > shard
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndev,n,T_A", CASES, ids=lambda c: str(c))
def test_syevd(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A = hermitian(rng, n, dtype)
    w, V = jaxmg.syevd(put(A, m, ROW), T_A, m, (ROW,))
    check_eigh(A, w, V, dtype)


def test_syevd_complex_is_not_conjugated(rng):
    """A genuinely complex Hermitian matrix: A V = V diag(w) fails for
    conj(V), and w matches eigvalsh(A) (equal to that of conj(A), so the
    vectors are the real test)."""
    m, n = mesh(4), 16
    A = hermitian(rng, n, np.complex128)
    w, V = jaxmg.syevd(put(A, m, ROW), 2, m, (ROW,))
    V = up(V)
    w = np.asarray(w)
    np.testing.assert_allclose(A @ V, V * w, atol=1e-10 * np.linalg.norm(A, 2))
    assert np.linalg.norm(A @ V.conj() - V.conj() * w) > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("ndev,n,T_A", [(3, 30, 4), (4, 13, 2), (2, 8, 4)], ids=str)
def test_syevd_values_only(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A = hermitian(rng, n, dtype)
    w = jaxmg.syevd(put(A, m, ROW), T_A, m, (ROW,), return_eigenvectors=False)
    assert not isinstance(w, tuple)
    check_eigh(A, w, None, dtype)
    w2, status = jaxmg.syevd(put(A, m, ROW), T_A, m, (ROW,), return_eigenvectors=False, return_status=True)
    assert int(status) == 0
    check_eigh(A, w2, None, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_syevd_status(rng, dtype):
    m, n = mesh(4), 12
    A = hermitian(rng, n, dtype)
    w, V, status = jaxmg.syevd(put(A, m, ROW), 2, m, (ROW,), return_status=True)
    assert int(status) == 0
    check_eigh(A, w, V, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("ndev,n,T_A", [(4, 16, 4), (3, 13, 2)], ids=str)
def test_syevd_repeated_eigenvalues(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    Q = unitary(rng, n, dtype)
    d = np.repeat(np.arange(1, n // 2 + 2), 2)[:n].astype(float)
    A = (Q * d) @ Q.conj().T
    A = ((A + A.conj().T) / 2).astype(dtype)
    w, V = jaxmg.syevd(put(A, m, ROW), T_A, m, (ROW,))
    np.testing.assert_allclose(np.asarray(w), np.sort(d), atol=1e-12 * n * d.max())
    check_eigh(A, w, V, dtype)


def test_syevd_negative_definite_padded(rng):
    """All eigenvalues negative and large: the pad block must not mix in."""
    m, n = mesh(3), 10  # N not divisible by 3, shard 4 with tile 3: both paddings
    A = hermitian(rng, n, np.float64) - 50 * np.eye(n)
    w, V = jaxmg.syevd(put(A, m, ROW), 3, m, (ROW,))
    check_eigh(A, w, V, np.float64)


def test_syevd_zero_matrix_padded():
    m, n = mesh(4), 10
    A = np.zeros((n, n))
    w, V = jaxmg.syevd(put(A, m, ROW), 3, m, (ROW,))
    check_eigh(A, w, V, np.float64)


def test_syevd_output_sharding(rng):
    m, n = mesh(4), 16
    A = hermitian(rng, n, np.complex64)
    w, V = jaxmg.syevd(put(A, m, ROW), 3, m, (ROW,))
    assert V.sharding.is_equivalent_to(NamedSharding(m, ROW), 2), V.sharding
    assert w.sharding.is_fully_replicated
    check_eigh(A, w, V, np.complex64)


def test_syevd_under_jit(rng):
    m, n = mesh(2), 14
    A = hermitian(rng, n, np.complex128)

    @jax.jit
    def f(A):
        w, V = jaxmg.syevd(A, 3, m, (ROW,))
        return w, V, (V * w) @ V.conj().T

    w, V, rec = f(put(A, m, ROW))
    check_eigh(A, w, V, np.complex128)
    np.testing.assert_allclose(np.asarray(rec), A, atol=1e-12 * n * np.abs(A).max())
