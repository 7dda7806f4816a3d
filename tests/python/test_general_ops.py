"""lu_solve, least_squares, qr, gesvd and polar on 1..8 host devices: the
defining equations against numpy/scipy in float64, every dtype, shapes that
are not multiples of the tile or the device count, well and badly
conditioned matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxmg as g
from helpers import DTYPES, REP, ROW, eps, is_complex, mesh, put, randn, real_dtype, up

IDS = dict(ids=lambda d: np.dtype(d).name)


def conditioned(rng, m, n, dtype, cond):
    """An m x n matrix with singular values spread from 1 to 1 / cond."""
    k = min(m, n)
    wide = np.complex128 if is_complex(dtype) else np.float64
    u, _ = np.linalg.qr(randn(rng, (m, k), wide))
    v, _ = np.linalg.qr(randn(rng, (n, k), wide))
    s = np.logspace(0, -np.log10(cond), k)
    return ((u * s) @ v.conj().T).astype(dtype)


def bad_cond(dtype):
    return 1e3 if real_dtype(dtype) == np.float32 else 1e8


# (devices, N, T_A) for the square lu_solve: odd N, N not a tile multiple,
# N not divisible by the device count, T_A = 1 and T_A > N / devices.
SQUARE = [(1, 7, 3), (2, 24, 5), (3, 30, 4), (4, 13, 2), (8, 64, 3), (4, 32, 100)]
# (devices, M, N, T_A) with M >= N: M not divisible by the device count,
# shards not multiples of the tile, square and tall.
TALL = [(1, 7, 5, 3), (2, 13, 6, 4), (3, 20, 9, 5), (4, 30, 13, 4), (8, 41, 17, 3), (4, 16, 16, 4)]
# and wide ones (M < N) for gesvd / polar.
WIDE = [(3, 7, 12, 2), (8, 9, 20, 3), (2, 1, 5, 1)]


def tol(dtype, n, c=50.0):
    return c * n * eps(dtype)


# ---- lu_solve ----------------------------------------------------------------


def check_lu(A, x, b, dtype, cond):
    A, x, b = up(A), up(x), up(b)
    n = A.shape[0]
    assert np.all(np.isfinite(x))
    res = np.linalg.norm(A @ x - b) / (np.linalg.norm(A, 2) * np.linalg.norm(x))
    assert res <= tol(dtype, n), f"residual {res:.3e}"
    ref = scipy.linalg.solve(A, b)
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err <= tol(dtype, n) * cond, f"forward error {err:.3e}"


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,n,T_A", SQUARE, ids=str)
def test_lu_solve(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A = randn(rng, (n, n), dtype)  # general: neither symmetric nor definite
    b = randn(rng, (n, 3), dtype)
    x = g.lu_solve(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP))
    assert x.shape == (n, 3) and x.dtype == np.dtype(dtype)
    check_lu(A, x, b, dtype, np.linalg.cond(up(A)))


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
def test_lu_solve_badly_conditioned_vector_rhs(rng, dtype):
    m, n = mesh(4), 26
    A = conditioned(rng, n, n, dtype, bad_cond(dtype))
    b = randn(rng, (n,), dtype)
    x, status = g.lu_solve(put(A, m, ROW), jnp.asarray(b), 4, m, (ROW, REP), return_status=True)
    assert x.shape == (n,) and int(status) == 0
    check_lu(A, np.asarray(x)[:, None], b[:, None], dtype, bad_cond(dtype))


@pytest.mark.parametrize("ndev,n,T_A,col", [(3, 10, 2, 0), (4, 13, 3, 12), (2, 8, 4, 5)], ids=str)
def test_lu_solve_singular(rng, ndev, n, T_A, col):
    m = mesh(ndev)
    A = randn(rng, (n, n), np.float64)
    A[:, col] = 0  # exactly singular: some pivot of U is exactly zero
    b = randn(rng, (n, 2), np.float64)
    x, status = g.lu_solve(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP), return_status=True)
    assert int(status) > 0
    assert np.all(np.isnan(np.asarray(x)))


# ---- least_squares -----------------------------------------------------------


def check_lstsq(A, x, b, dtype, cond):
    A, x, b = up(A), up(x), up(b)
    mm, n = A.shape
    assert np.all(np.isfinite(x))
    r = b - A @ x
    # The residual is orthogonal to A's columns, up to rounding.
    na = np.linalg.norm(A, 2)
    ortho = np.linalg.norm(A.conj().T @ r) / (na * (na * np.linalg.norm(x) + np.linalg.norm(b)))
    assert ortho <= tol(dtype, mm), f"A^H r = {ortho:.3e}"
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err <= tol(dtype, mm) * cond * (1 + cond * np.linalg.norm(r) / (na * np.linalg.norm(ref)))


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,M,N,T_A", TALL, ids=str)
def test_least_squares(rng, dtype, ndev, M, N, T_A):
    m = mesh(ndev)
    A = randn(rng, (M, N), dtype)
    b = randn(rng, (M, 2), dtype)
    x = g.least_squares(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP))
    assert x.shape == (N, 2) and x.dtype == np.dtype(dtype)
    check_lstsq(A, x, b, dtype, np.linalg.cond(up(A)))


@pytest.mark.parametrize("dtype", [np.float32, np.complex128], **IDS)
def test_least_squares_badly_conditioned_vector_rhs(rng, dtype):
    m, M, N = mesh(3), 40, 15
    A = conditioned(rng, M, N, dtype, bad_cond(dtype))
    b = randn(rng, (M,), dtype)
    x, status = g.least_squares(put(A, m, ROW), jnp.asarray(b), 2, m, (ROW, REP),
                                return_status=True)
    assert x.shape == (N,) and int(status) == 0
    check_lstsq(A, np.asarray(x)[:, None], b[:, None], dtype, bad_cond(dtype))


def test_least_squares_rank_deficient(rng):
    m = mesh(4)
    A = randn(rng, (22, 7), np.float64)
    A[:, 3] = 0
    b = randn(rng, (22, 1), np.float64)
    x, status = g.least_squares(put(A, m, ROW), put(b, m, REP), 4, m, (ROW, REP),
                                return_status=True)
    assert int(status) > 0
    assert np.all(np.isnan(np.asarray(x)))


# ---- qr ----------------------------------------------------------------------


def check_qr(A, Q, R, dtype):
    A, Q, R = up(A), up(Q), up(R)
    mm, n = A.shape
    assert Q.shape == (mm, n) and R.shape == (n, n)
    assert np.all(np.tril(R, -1) == 0)
    assert np.linalg.norm(Q @ R - A) / np.linalg.norm(A) <= tol(dtype, mm)
    assert np.linalg.norm(Q.conj().T @ Q - np.eye(n)) <= tol(dtype, mm)


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,M,N,T_A", TALL, ids=str)
def test_qr(rng, dtype, ndev, M, N, T_A):
    m = mesh(ndev)
    A = randn(rng, (M, N), dtype)
    Q, R = g.qr(put(A, m, ROW), T_A, m, (ROW,))
    assert Q.dtype == np.dtype(dtype) and R.dtype == np.dtype(dtype)
    check_qr(A, Q, R, dtype)
    # R is unique up to the phases of its diagonal: compare |R| with numpy's.
    Rn = np.linalg.qr(up(A), mode="reduced")[1]
    assert np.allclose(np.abs(up(R)), np.abs(Rn), atol=tol(dtype, M) * np.abs(Rn).max() * 10)


def test_qr_badly_conditioned_and_rank_deficient(rng):
    m = mesh(3)
    A = conditioned(rng, 25, 10, np.float64, 1e12)
    Q, R = g.qr(put(A, m, ROW), 3, m, (ROW,))
    check_qr(A, Q, R, np.float64)
    A[:, 4] = A[:, 1]  # rank deficient: QR still exists
    Q, R, status = g.qr(put(A, m, ROW), 3, m, (ROW,), return_status=True)
    assert int(status) == 0
    check_qr(A, Q, R, np.float64)


# ---- gesvd -------------------------------------------------------------------


def check_svd(A, U, s, Vh, dtype, full):
    A, s = up(A), up(s)
    mm, n = A.shape
    k = min(mm, n)
    assert s.shape == (k,)
    ref = np.linalg.svd(A, compute_uv=False)
    assert np.all(np.diff(s) <= 0), "singular values must descend"
    assert np.abs(s - ref).max() <= tol(dtype, max(mm, n)) * ref[0]
    if U is not None:
        U = up(U)
        assert U.shape == ((mm, mm) if full else (mm, k))
        assert np.linalg.norm(U.conj().T @ U - np.eye(U.shape[1])) <= tol(dtype, mm)
    if Vh is not None:
        Vh = up(Vh)
        assert Vh.shape == ((n, n) if full else (k, n))
        assert np.linalg.norm(Vh @ Vh.conj().T - np.eye(Vh.shape[0])) <= tol(dtype, n)
    if U is not None and Vh is not None:
        rec = (U[:, :k] * s) @ Vh[:k]
        assert np.linalg.norm(rec - A) / np.linalg.norm(A) <= tol(dtype, max(mm, n))


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,M,N,T_A", TALL + WIDE, ids=str)
def test_gesvd(rng, dtype, ndev, M, N, T_A):
    m = mesh(ndev)
    A = randn(rng, (M, N), dtype)
    U, s, Vh = g.gesvd(put(A, m, ROW), T_A, m, (ROW,))
    assert s.dtype == real_dtype(dtype) and U.dtype == np.dtype(dtype)
    check_svd(A, U, s, Vh, dtype, False)


@pytest.mark.parametrize("ndev,M,N", [(3, 20, 9), (4, 9, 14), (2, 10, 10)], ids=str)
def test_gesvd_full_matrices(rng, ndev, M, N):
    m = mesh(ndev)
    A = randn(rng, (M, N), np.complex128)
    U, s, Vh, status = g.gesvd(put(A, m, ROW), 2, m, (ROW,), full_matrices=True,
                               return_status=True)
    assert int(status) == 0
    check_svd(A, U, s, Vh, np.complex128, True)


def test_gesvd_return_forms(rng):
    m, A = mesh(4), randn(rng, (18, 7), np.float64)
    Aj = put(A, m, ROW)
    U, s = g.gesvd(Aj, 2, m, (ROW,), compute_vh=False)
    check_svd(A, U, s, None, np.float64, False)
    s, Vh = g.gesvd(Aj, 2, m, (ROW,), compute_u=False)
    check_svd(A, None, s, Vh, np.float64, False)
    s = g.gesvd(Aj, 2, m, (ROW,), compute_u=False, compute_vh=False)
    check_svd(A, None, s, None, np.float64, False)
    s, status = g.gesvd(Aj, 2, m, (ROW,), compute_u=False, compute_vh=False, return_status=True)
    assert int(status) == 0 and s.shape == (7,)


def test_gesvd_badly_conditioned(rng):
    m = mesh(8)
    A = conditioned(rng, 33, 12, np.float64, 1e10)
    U, s, Vh = g.gesvd(put(A, m, ROW), 2, m, (ROW,))
    check_svd(A, U, s, Vh, np.float64, False)


# ---- polar -------------------------------------------------------------------


def check_polar(A, Up, H, dtype):
    A, Up = up(A), up(Up)
    mm, n = A.shape
    k = min(mm, n)
    assert Up.shape == (mm, n)
    gram = Up.conj().T @ Up if mm >= n else Up @ Up.conj().T
    assert np.linalg.norm(gram - np.eye(k)) <= tol(dtype, max(mm, n))
    if H is None:
        return
    H = up(H)
    assert H.shape == (n, n)
    scale = np.linalg.norm(A, 2)
    assert np.linalg.norm(H - H.conj().T) <= tol(dtype, n) * scale
    assert np.linalg.eigvalsh((H + H.conj().T) / 2).min() >= -tol(dtype, n) * scale
    assert np.linalg.norm(Up @ H - A) / np.linalg.norm(A) <= tol(dtype, max(mm, n))
    if mm >= n:  # unique for full column rank
        u_ref, p_ref = scipy.linalg.polar(A)
        assert np.linalg.norm(H - p_ref) <= tol(dtype, n) * scale * np.linalg.cond(A)


@pytest.mark.parametrize("dtype", DTYPES, **IDS)
@pytest.mark.parametrize("ndev,M,N,T_A", TALL + WIDE, ids=str)
def test_polar(rng, dtype, ndev, M, N, T_A):
    m = mesh(ndev)
    A = randn(rng, (M, N), dtype)
    Up, H = g.polar(put(A, m, ROW), T_A, m, (ROW,))
    assert Up.dtype == np.dtype(dtype) and H.dtype == np.dtype(dtype)
    check_polar(A, Up, H, dtype)


def test_polar_without_h_and_badly_conditioned(rng):
    m = mesh(3)
    A = conditioned(rng, 21, 21, np.complex128, 1e9)
    Up, status = g.polar(put(A, m, ROW), 4, m, (ROW,), compute_h=False, return_status=True)
    assert int(status) == 0
    check_polar(A, Up, None, np.complex128)
    Up2, H = g.polar(put(A, m, ROW), 4, m, (ROW,))
    check_polar(A, Up2, H, np.complex128)


# ---- under jit, inside shard_map, inputs unchanged ---------------------------


def test_under_jit(rng):
    m = mesh(4)
    A = randn(rng, (19, 19), np.float64)
    B = randn(rng, (26, 9), np.float64)
    b = randn(rng, (19, 2), np.float64)

    @jax.jit
    def f(A, b, B):
        x = g.lu_solve(A, b, 2, m, (ROW, REP))
        Q, R = g.qr(B, 2, m, (ROW,))
        s = g.gesvd(B, 2, m, (ROW,), compute_u=False, compute_vh=False)
        Up, H = g.polar(B, 2, m, (ROW,))
        y = g.least_squares(B, Q @ R[:, :2], 2, m, (ROW, REP))
        return x, Q, R, s, Up, H, y

    x, Q, R, s, Up, H, y = f(put(A, m, ROW), put(b, m, REP), put(B, m, ROW))
    check_lu(A, x, b, np.float64, np.linalg.cond(A))
    check_qr(B, Q, R, np.float64)
    check_svd(B, None, s, None, np.float64, False)
    check_polar(B, Up, H, np.float64)
    # B y = B[:, :2] exactly: y is the first two columns of the identity.
    assert np.allclose(np.asarray(y), np.eye(9)[:, :2], atol=1e-10)


def test_shardmap_ctx(rng):
    m = mesh(4)
    A = randn(rng, (16, 16), np.complex128)
    b = randn(rng, (16, 3), np.complex128)
    B = randn(rng, (24, 6), np.complex128)

    def body(a, b_, bb):
        x, st = g.lu_solve_shardmap_ctx(a, b_, 2)
        q, r, st2 = g.qr_shardmap_ctx(bb, 2)
        return x, st, q, r, st2

    x, st, q, r, st2 = jax.jit(jax.shard_map(
        body, mesh=m, in_specs=(ROW, REP, ROW),
        out_specs=(REP, jax.sharding.PartitionSpec(None), ROW, REP, jax.sharding.PartitionSpec(None)),
        check_vma=False))(put(A, m, ROW), put(b, m, REP), put(B, m, ROW))
    assert st.shape == (1,) and int(st[0]) == 0 and int(st2[0]) == 0
    check_lu(A, x, b, np.complex128, np.linalg.cond(A))
    check_qr(B, q, r, np.complex128)


@pytest.mark.parametrize("op", ["lu_solve", "least_squares", "qr", "gesvd", "polar"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_inputs_unchanged(rng, op, jit):
    m = mesh(3)
    M, N = (14, 14) if op == "lu_solve" else (17, 8)
    A0 = randn(rng, (M, N), np.complex128)
    b0 = randn(rng, (M, 2), np.complex128)
    A, b = put(A0, m, ROW), put(b0, m, REP)
    calls = {
        "lu_solve": lambda A, b: g.lu_solve(A, b, 2, m, (ROW, REP)),
        "least_squares": lambda A, b: g.least_squares(A, b, 2, m, (ROW, REP)),
        "qr": lambda A, b: g.qr(A, 2, m, (ROW,)),
        "gesvd": lambda A, b: g.gesvd(A, 2, m, (ROW,)),
        "polar": lambda A, b: g.polar(A, 2, m, (ROW,)),
    }
    f = jax.jit(calls[op]) if jit else calls[op]
    jax.block_until_ready(f(A, b))
    assert not A.is_deleted() and not b.is_deleted()
    np.testing.assert_array_equal(np.asarray(A), A0)
    np.testing.assert_array_equal(np.asarray(b), b0)


# ---- validation --------------------------------------------------------------


def test_validation(rng):
    m = mesh(2)
    sq = jnp.asarray(randn(rng, (6, 6), np.float64))
    tall = jnp.asarray(randn(rng, (8, 5), np.float64))
    wide = jnp.asarray(randn(rng, (5, 8), np.float64))
    b6 = jnp.ones((6, 1))
    with pytest.raises(ValueError, match="square"):
        g.lu_solve(tall, jnp.ones((8, 1)), 2, m, (ROW, REP))
    with pytest.raises(ValueError, match="M >= N"):
        g.least_squares(wide, jnp.ones((5, 1)), 2, m, (ROW, REP))
    with pytest.raises(ValueError, match="M >= N"):
        g.qr(wide, 2, m, (ROW,))
    with pytest.raises(ValueError, match="rows"):
        g.least_squares(tall, b6, 2, m, (ROW, REP))
    with pytest.raises(TypeError, match="dtype"):
        g.lu_solve(jnp.ones((6, 6), jnp.int32), jnp.ones((6, 1), jnp.int32), 2, m, (ROW, REP))
    with pytest.raises(TypeError, match="dtype"):
        g.gesvd(jnp.ones((6, 4), jnp.int32), 2, m, (ROW,))
    with pytest.raises(TypeError, match="dtype"):
        g.lu_solve(sq, b6.astype(jnp.float32), 2, m, (ROW, REP))
    with pytest.raises(ValueError, match="empty"):
        g.polar(jnp.ones((0, 4)), 2, m, (ROW,))
    with pytest.raises(ValueError, match="2-D"):
        g.qr(jnp.ones(6), 2, m, (ROW,))
    with pytest.raises(ValueError, match="multi-GPU"):
        g.qr(tall, 2, m, (ROW,), dispatch="multi")
    with pytest.raises(ValueError, match="dispatch"):
        g.gesvd(tall, 2, m, (ROW,), dispatch="fast")
    with pytest.raises(TypeError, match="full_matrices"):
        g.gesvd(tall, 2, m, (ROW,), full_matrices=1)
    with pytest.raises(TypeError, match="compute_h"):
        g.polar(tall, 2, m, (ROW,), compute_h="yes")
    with pytest.raises(ValueError, match="T_A"):
        g.qr(tall, 0, m, (ROW,))
    with pytest.raises(ValueError, match="in_specs"):
        g.lu_solve(sq, b6, 2, m, (ROW, REP, REP))
    with pytest.raises(ValueError, match="not in the mesh"):
        g.qr(tall, 2, m, (jax.sharding.PartitionSpec("y", None),))


# ---- derivatives through the public functions (issue 16's rules) -------------


def test_public_grads_match_jnp(rng):
    import jax.scipy.linalg as jsl

    m = mesh(4)
    A = randn(rng, (8, 8), np.float64) + 3 * np.eye(8)
    b = randn(rng, (8, 2), np.float64)
    B = randn(rng, (12, 5), np.float64) + 2 * np.eye(12, 5)
    c = randn(rng, (12, 1), np.float64)
    Aj, bj, Bj = put(A, m, ROW), put(b, m, REP), put(B, m, ROW)
    cases = [
        (lambda A, b: jnp.sum(g.lu_solve(A, b, 2, m, (ROW, REP)) ** 2),
         lambda A, b: jnp.sum(jnp.linalg.solve(A, b) ** 2), (Aj, bj), (A, b)),
        (lambda A, b: jnp.sum(g.least_squares(A, b, 2, m, (ROW, REP)) ** 2),
         lambda A, b: jnp.sum(jnp.linalg.lstsq(A, b)[0] ** 2), (Bj, jnp.asarray(c)), (B, c)),
        (lambda A: jnp.sum(g.qr(A, 2, m, (ROW,))[1] ** 2),
         lambda A: jnp.sum(jnp.linalg.qr(A)[1] ** 2), (Bj,), (B,)),
        (lambda A: jnp.sum(g.gesvd(A, 2, m, (ROW,), compute_u=False, compute_vh=False)),
         lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False)), (Bj,), (B,)),
        (lambda A: jnp.sum(g.polar(A, 2, m, (ROW,))[1] ** 2),
         lambda A: jnp.sum(jsl.polar(A, method="svd")[1] ** 2), (Bj,), (B,)),
    ]
    for f, ref, args, ref_args in cases:
        got = jax.grad(f)(*args)
        want = jax.grad(ref)(*ref_args)
        assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-9 * np.abs(want).max()


def test_exported_and_global_ctx_forms(rng):
    import jaxmg

    m = mesh(2)
    A = randn(rng, (10, 10), np.float64)
    b = randn(rng, (10, 1), np.float64)
    B = randn(rng, (14, 6), np.complex128)
    a_work, x, status = jaxmg.lu_solve_shardmap_ctx(put(A, m, ROW), put(b, m, REP), 2, m, ROW)
    assert int(status) == 0 and a_work.shape == (10, 10)
    check_lu(A, x, b, np.float64, np.linalg.cond(A))
    q, r, status = jaxmg.qr_shardmap_ctx(put(B, m, ROW), 2, m, ROW)
    check_qr(B, q, r, np.complex128)
    out = jaxmg.gesvd_shardmap_ctx(put(B, m, ROW), 2, m, ROW, compute_u=False)
    assert len(out) == 4  # (a_work, s, Vh, status)
    check_svd(B, None, out[1], out[2], np.complex128, False)
    # mesh and spec taken from A's sharding (1.4's form)
    Q, R = jaxmg.qr(put(B, m, ROW), 2)
    check_qr(B, Q, R, np.complex128)


def test_non_finite_input(rng):
    m = mesh(3)
    A = randn(rng, (9, 9), np.float64)
    A[4, 2] = np.nan
    x, status = g.lu_solve(put(A, m, ROW), put(np.ones((9, 1)), m, REP), 3, m, (ROW, REP),
                           return_status=True)
    assert int(status) == -1 and np.all(np.isnan(np.asarray(x)))
    B = randn(rng, (12, 4), np.float64)
    B[0, 0] = np.inf
    s, status = g.gesvd(put(B, m, ROW), 2, m, (ROW,), compute_u=False, compute_vh=False,
                        return_status=True)
    assert int(status) == -1 and np.all(np.isnan(np.asarray(s)))
