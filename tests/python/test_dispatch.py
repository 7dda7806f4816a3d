"""The automatic tile (T_A=None), and that every dispatch gives the same
right answer on the host engine (the decision's rules: test_decide.py)."""

import numpy as np
import pytest

import jaxmg
from jaxmg.pipeline import tiles as _tiles
from helpers import ROW, REP, check_inverse, hermitian, mesh, put, spd


@pytest.mark.parametrize("nloc", [1, 7, 255, 1024, 1025, 1536, 2048, 3000, 4096, 7919, 16384])
@pytest.mark.parametrize("cap", [None, 1024])
def test_auto_tile(nloc, cap):
    t = _tiles.auto_tile(nloc, cap)
    hi = cap or _tiles.TILE_MAX
    if nloc <= min(_tiles.TILE_TARGET, hi):
        assert t == nloc  # one tile per shard: no padding, contiguous layout
        return
    assert _tiles.TILE_MIN <= t <= hi
    padded = -(-nloc // t) * t
    best = min(-(-nloc // d) * d for d in range(_tiles.TILE_MIN, hi + 1))
    assert padded == best  # pads as little as any allowed width
    if nloc % 1024 == 0 and hi >= 1024:
        assert t == 1024


@pytest.mark.parametrize("dispatch", ["auto", "multi", "single"])
def test_every_choice_same_answer(rng, dispatch):
    n, m = 40, mesh(4)
    A = spd(rng, n, np.complex128)
    b = rng.standard_normal((n, 2)) + 0j
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 4, m, (ROW, REP), dispatch=dispatch)
    assert np.abs(A @ np.asarray(x) - b).max() < 1e-12
    check_inverse(A, jaxmg.potri(put(A, m, ROW), 4, m, (ROW,), dispatch=dispatch), np.complex128)
    H = hermitian(rng, n, np.float64)
    w, v = jaxmg.syevd(put(H, m, ROW), 4, m, (ROW,), dispatch=dispatch)
    v = np.asarray(v)
    assert np.abs(H @ v - v * np.asarray(w)).max() < 1e-12


@pytest.mark.parametrize("ndev,n", [(2, 64), (4, 4100), (3, 30)])
def test_auto_tile_end_to_end(rng, ndev, n):
    """T_A=None: the tile comes from N / devices (4100 / 4 = 1025 rows:
    no divisor near 1024, so the least padding)."""
    m = mesh(ndev)
    A = spd(rng, n, np.float64)
    b = rng.standard_normal(n)
    x = jaxmg.potrs(put(A, m, ROW), b, None, m, (ROW, REP))
    assert np.abs(A @ np.asarray(x) - b).max() < 1e-10
    if n <= 64:
        check_inverse(A, jaxmg.potri(put(A, m, ROW), None, m, (ROW,)), np.float64)
        w, v = jaxmg.syevd(put(A, m, ROW), None, m, (ROW,))
        v = np.asarray(v)
        assert np.abs(A @ v - v * np.asarray(w)).max() < 1e-10
