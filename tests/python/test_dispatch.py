"""The automatic tile (T_A=None) and the choice between cuSolverMg and one
GPU (dispatch): the rules themselves, and that every choice gives the same
right answer on the host engine."""

import numpy as np
import pytest

import jaxmg
from jaxmg import _dispatch
from helpers import ROW, REP, check_inverse, hermitian, mesh, put, spd


@pytest.mark.parametrize("nloc", [1, 7, 255, 1024, 1025, 1536, 2048, 3000, 4096, 7919, 16384])
@pytest.mark.parametrize("cap", [None, 1024])
def test_auto_tile(nloc, cap):
    t = _dispatch.auto_tile(nloc, cap)
    hi = cap or _dispatch.TILE_MAX
    if nloc <= min(_dispatch.TILE_TARGET, hi):
        assert t == nloc  # one tile per shard: no padding, contiguous layout
        return
    assert _dispatch.TILE_MIN <= t <= hi
    padded = -(-nloc // t) * t
    best = min(-(-nloc // d) * d for d in range(_dispatch.TILE_MIN, hi + 1))
    assert padded == best  # pads as little as any allowed width
    if nloc % 1024 == 0 and hi >= 1024:
        assert t == 1024


def test_resolve_rules(monkeypatch):
    gpu = "gpu"
    f64 = np.float64
    monkeypatch.setattr(_dispatch, "_device_memory", lambda: 140 * 2**30)
    r = _dispatch.resolve
    assert r("multi", "potrs", 1000, 4, f64, gpu) == _dispatch.MULTI
    assert r("single", "syevd", 10**5, 4, f64, gpu) == _dispatch.SINGLE
    assert r("auto", "potrs", 4096, 4, f64, gpu) == _dispatch.SINGLE
    assert r("auto", "potrs", 32768, 4, f64, gpu) == _dispatch.MULTI
    assert r("auto", "syevd", 16384, 4, f64, gpu) == _dispatch.SINGLE
    assert r("auto", "syevd", 32768, 4, f64, gpu) == _dispatch.MULTI
    assert r("auto", "potri", 32768, 4, f64, gpu) == _dispatch.SINGLE
    assert r("auto", "potrs", 32768, 1, f64, gpu) == _dispatch.SINGLE  # one device: no Mg
    # too big for one device: multi, whatever the size rule says
    assert r("auto", "potri", 98304, 4, f64, gpu) == _dispatch.MULTI
    assert r("auto", "potrs", 196608, 1, np.float32, gpu) == _dispatch.MULTI
    # the host engine has one path: auto stays auto
    assert r("auto", "potrs", 4096, 4, f64, "cpu") == _dispatch.AUTO


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
