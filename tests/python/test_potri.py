"""potri: the full inverse of an SPD / HPD matrix, sharded like A."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

import jaxmg
from helpers import DTYPES, ROW, check_inverse, mesh, put, spd

CASES = [
    (1, 6, 4),
    (2, 24, 5),   # shard 12, tile 5: padded
    (3, 30, 4),   # shard 10, tile 4: padded
    (4, 13, 2),   # N not divisible by the device count
    (8, 64, 8),
    (4, 20, 100), # tile > shard
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndev,n,T_A", CASES, ids=lambda c: str(c))
def test_potri(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A = spd(rng, n, dtype)
    inv = jaxmg.potri(put(A, m, ROW), T_A, m, (ROW,))
    assert inv.shape == (n, n) and inv.dtype == np.dtype(dtype)
    check_inverse(A, inv, dtype)


@pytest.mark.parametrize("ndev,n,T_A", [(4, 16, 3), (2, 24, 5), (3, 9, 9)])
def test_potri_output_sharding(rng, ndev, n, T_A):
    # (N divisible by the devices: JAX holds no unevenly row-sharded array)
    m = mesh(ndev)
    A = spd(rng, n, np.complex128)
    inv, status = jaxmg.potri(put(A, m, ROW), T_A, m, (ROW,), return_status=True)
    assert int(status) == 0
    assert inv.sharding.is_equivalent_to(NamedSharding(m, ROW), 2), inv.sharding
    check_inverse(A, inv, np.complex128)


def test_potri_both_triangles(rng):
    """The strict upper and lower triangles each match numpy's inverse
    (not just one of them mirrored or left as garbage)."""
    m, n = mesh(2), 12
    A = spd(rng, n, np.complex128)
    inv = np.asarray(jaxmg.potri(put(A, m, ROW), 2, m, (ROW,)))
    ref = np.linalg.inv(A)
    tol = 1e-12 * np.abs(ref).max()
    np.testing.assert_allclose(np.triu(inv, 1), np.triu(ref, 1), atol=tol, rtol=0)
    np.testing.assert_allclose(np.tril(inv, -1), np.tril(ref, -1), atol=tol, rtol=0)
    np.testing.assert_allclose(np.diag(inv).imag, 0, atol=tol)


def test_potri_under_jit(rng):
    m, n = mesh(4), 20
    A = spd(rng, n, np.float32)
    f = jax.jit(lambda A: jaxmg.potri(A * 2, 3, m, (ROW,)) * 2)
    inv = f(put(A, m, ROW))
    check_inverse(A, inv, np.float32)
