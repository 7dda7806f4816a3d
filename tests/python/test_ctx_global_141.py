"""The *_shardmap_ctx forms outside a shard_map return what JAXMg 1.4.1's
return: lu_solve (a_work, x, status); least_squares (a_work, b_work, x,
status) with x in b_work's first N rows; qr (Q, R, status); gesvd (a_work,
U, s, Vh, status) less what is not computed; polar (Up, H, status) or (Up,
status), without a_work."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg
from helpers import ROW, eps, mesh, put, randn, up

M, N = 14, 6
IDS = dict(ids=lambda d: np.dtype(d).name)


def _tall(rng, dtype):
    return randn(rng, (M, N), dtype) + 2 * np.eye(M, N)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], **IDS)
@pytest.mark.parametrize("compute_h", [True, False])
def test_polar_ctx_global_has_no_a_work(rng, dtype, compute_h):
    m = mesh(2)
    A = _tall(rng, dtype)
    out = jaxmg.polar_shardmap_ctx(put(A, m, ROW), 2, m, ROW, compute_h=compute_h)
    assert len(out) == (3 if compute_h else 2)
    up_, status = out[0], out[-1]
    assert int(status) == 0 and up_.shape == (M, N)
    Up = up(up_)
    U, s, Vh = np.linalg.svd(up(A), full_matrices=False)
    tol = 100 * M * eps(dtype)
    np.testing.assert_allclose(Up, U @ Vh, atol=tol)
    if compute_h:
        H = up(out[1])
        assert H.shape == (N, N)
        np.testing.assert_allclose(Up @ H, up(A), atol=tol * s[0])
        np.testing.assert_allclose(H, (Vh.conj().T * s) @ Vh, atol=tol * s[0])


@pytest.mark.parametrize("rhs", [(), (3,)], ids=["vector", "matrix"])
def test_least_squares_ctx_global_b_work_holds_x(rng, rhs):
    m = mesh(2)
    A, b = _tall(rng, np.complex128), randn(rng, (M,) + rhs, np.complex128)
    a_work, b_work, x, status = jaxmg.least_squares_shardmap_ctx(
        put(A, m, ROW), jnp.asarray(b), 2, m, ROW)
    assert int(status) == 0 and a_work.shape == (M, N) and b_work.shape == b.shape
    np.testing.assert_array_equal(np.asarray(b_work)[:N], np.asarray(x))
    np.testing.assert_array_equal(np.asarray(b_work)[N:], b[N:])
    np.testing.assert_allclose(np.asarray(x), np.linalg.lstsq(A, b, rcond=None)[0],
                               atol=1e-12 * np.abs(b).max() * np.linalg.cond(A))


def test_other_ctx_global_arities(rng):
    m = mesh(2)
    A, T = randn(rng, (N, N), np.float64) + 3 * np.eye(N), _tall(rng, np.float64)
    b = randn(rng, (N, 2), np.float64)
    assert len(jaxmg.lu_solve_shardmap_ctx(put(A, m, ROW), jnp.asarray(b), 2, m, ROW)) == 3
    assert len(jaxmg.qr_shardmap_ctx(put(T, m, ROW), 2, m, ROW)) == 3
    for cu, cv, n in [(True, True, 5), (True, False, 4), (False, True, 4), (False, False, 3)]:
        out = jaxmg.gesvd_shardmap_ctx(put(T, m, ROW), 2, m, ROW, compute_u=cu, compute_vh=cv)
        assert len(out) == n and out[0].shape == (M, N)  # a_work first
