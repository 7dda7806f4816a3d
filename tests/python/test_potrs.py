"""potrs: A x = b for SPD / HPD A, row-sharded over 1..8 host devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg
from helpers import DTYPES, REP, ROW, check_solve, mesh, put, randn, spd

# (devices, N, T_A): odd N, N not a tile multiple, N not divisible by the
# device count, T_A = 1 and T_A > N / devices.
CASES = [
    (1, 7, 3),
    (2, 24, 5),
    (3, 30, 4),
    (4, 13, 2),
    (8, 64, 3),
    (4, 32, 100),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndev,n,T_A", CASES, ids=lambda c: str(c))
def test_potrs_matrix_rhs(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 3), dtype)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP))
    assert x.shape == (n, 3) and x.dtype == np.dtype(dtype)
    check_solve(A, x, b, dtype)


@pytest.mark.parametrize("ndev,n,T_A", [(1, 5, 1), (2, 11, 1), (3, 9, 2), (8, 20, 1), (4, 200, 16)])
def test_potrs_tile_sizes_f64(rng, ndev, n, T_A):
    m = mesh(ndev)
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP))
    check_solve(A, x, b, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_potrs_single_column(rng, dtype):
    m, n = mesh(3), 17
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 1), dtype)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 4, m, (ROW, REP))
    assert x.shape == (n, 1)
    check_solve(A, x, b, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
def test_potrs_vector_rhs(rng, dtype):
    m, n = mesh(4), 22
    A = spd(rng, n, dtype)
    b = randn(rng, (n,), dtype)
    x = jaxmg.potrs(put(A, m, ROW), jnp.asarray(b), 3, m, (ROW, REP))
    assert x.shape == (n,) and x.dtype == np.dtype(dtype)
    check_solve(A, np.asarray(x)[:, None], b[:, None], dtype)


def test_potrs_many_columns(rng):
    m, n = mesh(2), 16
    A = spd(rng, n, np.complex128)
    b = randn(rng, (n, 9), np.complex128)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP))
    assert x.shape == (n, 9)
    check_solve(A, x, b, np.complex128)
    # each column solved on its own
    for j in range(9):
        check_solve(A, np.asarray(x)[:, j : j + 1], b[:, j : j + 1], np.complex128)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_potrs_under_jit(rng, dtype):
    m, n = mesh(4), 26
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 2), dtype)

    @jax.jit
    def f(A, b):
        x, status = jaxmg.potrs(A, b, 3, m, (ROW, REP), return_status=True)
        return 2 * x, status

    x2, status = f(put(A, m, ROW), put(b, m, REP))
    assert int(status) == 0
    check_solve(A, np.asarray(x2) / 2, b, dtype)
    # called again with other data: same executable, new answer
    A2 = spd(rng, n, dtype)
    b2 = randn(rng, (n, 2), dtype)
    x2, status = f(put(A2, m, ROW), put(b2, m, REP))
    assert int(status) == 0
    check_solve(A2, np.asarray(x2) / 2, b2, dtype)


def test_potrs_jit_vector_rhs(rng):
    m, n = mesh(2), 9
    A = spd(rng, n, np.float64)
    b = randn(rng, (n,), np.float64)
    x = jax.jit(lambda A, b: jaxmg.potrs(A, b, 2, m, (ROW, REP)))(put(A, m, ROW), jnp.asarray(b))
    assert x.shape == (n,)
    check_solve(A, np.asarray(x)[:, None], b[:, None], np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_potrs_status_zero(rng, dtype):
    m, n = mesh(4), 14
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 2), dtype)
    x, status = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP), return_status=True)
    assert np.asarray(status).dtype == np.int32
    assert int(status) == 0
    check_solve(A, x, b, dtype)


def test_potrs_output_replicated(rng):
    m, n = mesh(4), 12
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP))
    assert x.sharding.is_fully_replicated
    for s in x.addressable_shards:
        check_solve(A, s.data, b, np.float64)


def test_potrs_numpy_inputs(rng):
    m, n = mesh(2), 10
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 1), np.float64)
    x = jaxmg.potrs(A, b, 5, m, (ROW, REP))
    check_solve(A, x, b, np.float64)


def test_potrs_pad_false_when_tiles_fit(rng):
    m, n = mesh(4), 24
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP), pad=False)
    check_solve(A, x, b, np.float64)
