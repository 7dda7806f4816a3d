"""Derivatives through the per-shard *_shardmap_ctx forms, inside the
caller's shard_map (issue 16): syevd (eigenvalues, eigenvectors in both V
layouts, eigenvalues alone) and the general ops (lu_solve, least_squares,
qr, gesvd, polar), against jnp.linalg / jax.scipy.linalg in float64 and
complex128 on 1, 2 and 4 devices, with jax.test_util.check_grads (finite
differences) and jit(grad). The losses are computed inside the shard_map
(sums over the row blocks with a psum), as a user would write them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxmg
from helpers import REP, ROW, hermitian, mesh, put, randn

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731
NDEV = [1, 2, 4]
COLS = P(None, "x")


def smap(body, m, in_specs, out_specs):
    return jax.shard_map(body, mesh=m, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def close(got, ref, rel=1e-9):
    got, ref = np.asarray(got), np.asarray(ref)
    np.testing.assert_allclose(got, ref, atol=rel * max(np.abs(ref).max(), 1e-300))


def in_rows(x, m):
    assert x.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), x.sharding


def my_rows(c, k=0):
    """This device's block of c along axis k (inside the shard_map)."""
    nloc = c.shape[k] // jax.lax.axis_size("x")
    return jax.lax.dynamic_slice_in_dim(c, jax.lax.axis_index("x") * nloc, nloc, axis=k)


def herm_dir(f):
    """f along Hermitian directions: check_grads perturbs S, f sees S + S^H."""
    return lambda S: f(S + jnp.conj(S).T)


# ---------------------------------------------------------------------------
# syevd_shardmap_ctx


def _gap_tol(H, n):
    return 200 * n * np.finfo(np.float64).eps / np.diff(np.linalg.eigvalsh(H)).min()


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev", NDEV)
@pytest.mark.parametrize("v_layout", ["cols", "rows"])
def test_syevd_ctx_grad(rng, dtype, ndev, v_layout):
    """A loss of w and |V|^2 (phase invariant) through syevd_shardmap_ctx,
    V in either layout: the gradient of jnp.linalg.eigh's, A's in rows."""
    m, n = mesh(ndev), 8
    H = hermitian(rng, n, dtype)
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))
    axis = 1 if v_layout == "cols" else 0

    def body(a):
        w, V, _ = jaxmg.syevd_shardmap_ctx(a, None, v_layout=v_layout)
        return jnp.sum(cw * w) + jax.lax.psum(jnp.sum(my_rows(cv, axis) * jnp.abs(V) ** 2), "x")

    g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(H, m, ROW))
    ref = jax.grad(lambda A: jnp.sum(cw * jnp.linalg.eigh(A)[0])
                   + jnp.sum(cv * jnp.abs(jnp.linalg.eigh(A)[1]) ** 2))(H)
    close(g, ref, _gap_tol(H, n))
    in_rows(g, m)


@pytest.mark.parametrize("v_layout", ["cols", "rows"])
def test_syevd_ctx_check_grads_and_padding(rng, v_layout):
    """check_grads (both modes) of w and |V|^2 along Hermitian directions,
    on a shard that the tile pads (N = 12 on 4 devices, T_A = 2)."""
    m, n = mesh(4), 12
    H = hermitian(rng, n, np.complex128)
    vspec = COLS if v_layout == "cols" else ROW

    def body(a):
        w, V, _ = jaxmg.syevd_shardmap_ctx(a, 2, v_layout=v_layout)
        return w, jnp.abs(V) ** 2

    f = jax.jit(herm_dir(smap(body, m, (ROW,), (P(None), vspec))))
    check_grads(f, (H / 2,), order=1, modes=("fwd", "rev"))
    (w, V2), (dw, dV2) = jax.jvp(f, (H / 2,), (hermitian(rng, n, np.complex128),))
    np.testing.assert_allclose(np.asarray(V2), np.abs(np.linalg.eigh(H)[1]) ** 2, atol=1e-10)


@pytest.mark.parametrize("ndev", NDEV)
def test_syevd_ctx_values_only_grad(rng, ndev):
    """return_eigenvectors=False: eigenvalues differentiable (the JVP runs
    the eigenvector solver once); second order by check_grads."""
    m, n = mesh(ndev), 8
    H = hermitian(rng, n, np.complex128)
    c = rng.standard_normal(n)

    def body(a):
        w, _ = jaxmg.syevd_shardmap_ctx(a, None, return_eigenvectors=False)
        return w

    f = smap(body, m, (ROW,), P(None))
    g = jax.jit(jax.grad(lambda A: jnp.sum(c * f(A) ** 2)))(put(H, m, ROW))
    close(g, jax.grad(lambda A: jnp.sum(c * jnp.linalg.eigvalsh(A) ** 2))(H), 1e-11)
    check_grads(jax.jit(herm_dir(f)), (H / 2,), order=2, modes=("fwd", "rev"))


def test_syevd_ctx_grad_non_finite_is_nan(rng):
    m, n = mesh(2), 6
    H = hermitian(rng, n, np.float64)
    H[1, 4] = H[4, 1] = np.nan

    def body(a):
        w, V, status = jaxmg.syevd_shardmap_ctx(a, None)
        return jnp.sum(w) + jax.lax.psum(jnp.sum(V ** 2), "x"), status

    f = smap(body, m, (ROW,), (P(), P(None)))
    (_, status), g = jax.jit(jax.value_and_grad(f, has_aux=True))(put(H, m, ROW))
    assert int(status[0]) != 0 and np.all(np.isnan(np.asarray(g)))


# ---------------------------------------------------------------------------
# the general ops' *_shardmap_ctx forms

M, N = 8, 4
sq = lambda x: jnp.sum(jnp.abs(x) ** 2)  # noqa: E731


def _square(rng, n, dtype):
    return randn(rng, (n, n), dtype) + 3 * np.eye(n)


def _tall(rng, dtype, shape=(M, N)):
    return randn(rng, shape, dtype) + 2 * np.eye(*shape)


def _normal_eq(A, b):
    return jnp.linalg.solve(jnp.conj(A).T @ A, jnp.conj(A).T @ b)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev", NDEV)
def test_lu_solve_ctx_grad(rng, dtype, ndev):
    """A loss of x through lu_solve_shardmap_ctx: both cotangents equal
    jnp.linalg.solve's; A's comes back in rows, b's replicated."""
    m, n = mesh(ndev), 8
    A, b = _square(rng, n, dtype), randn(rng, (n, 2), dtype)
    w = randn(rng, (n, 2), dtype)

    def body(a, b):
        x, _ = jaxmg.lu_solve_shardmap_ctx(a, b, None)
        return sq(x - w)

    gA, gb = jax.jit(jax.grad(smap(body, m, (ROW, REP), P()), (0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(lambda A, b: sq(jnp.linalg.solve(A, b) - w), (0, 1))(A, b)
    close(gA, rA)
    close(gb, rb)
    in_rows(gA, m)


def test_lu_solve_ctx_check_grads_second_order(rng):
    m, n = mesh(2), 6
    A, b = _square(rng, n, np.complex128), randn(rng, (n,), np.complex128)
    f = smap(lambda a, b: jaxmg.lu_solve_shardmap_ctx(a, b, None)[0], m, (ROW, P(None)), P(None))
    check_grads(jax.jit(f), (A, b), order=2, modes=("fwd", "rev"))


def test_lu_solve_ctx_grad_singular_is_nan(rng):
    m, n = mesh(2), 6
    A, b = randn(rng, (n, n), np.float64), randn(rng, (n, 1), np.float64)
    A[:, 2] = 0.0

    def body(a):
        x, status = jaxmg.lu_solve_shardmap_ctx(a, b, None)
        return jnp.sum(x), status

    (_, status), g = jax.jit(jax.value_and_grad(smap(body, m, (ROW,), (P(), P(None))),
                                                has_aux=True))(put(A, m, ROW))
    assert int(status[0]) > 0 and np.all(np.isnan(np.asarray(g)))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev", NDEV)
def test_least_squares_ctx_grad(rng, dtype, ndev):
    m = mesh(ndev)
    A, b = _tall(rng, dtype), randn(rng, (M, 2), dtype)

    def body(a, b):
        x, _ = jaxmg.least_squares_shardmap_ctx(a, b, None)
        return sq(x)

    gA, gb = jax.jit(jax.grad(smap(body, m, (ROW, REP), P()), (0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(lambda A, b: sq(_normal_eq(A, b)), (0, 1))(A, b)
    close(gA, rA)
    close(gb, rb)
    in_rows(gA, m)


def test_least_squares_ctx_check_grads(rng):
    """Finite differences in A and a vector b (second order, reverse)."""
    m = mesh(2)
    A, b = _tall(rng, np.complex128), randn(rng, (M,), np.complex128)
    f = smap(lambda a, b: jaxmg.least_squares_shardmap_ctx(a, b, None)[0], m, (ROW, P(None)),
             P(None))
    check_grads(jax.jit(f), (A, b), order=1, modes=("fwd", "rev"))
    check_grads(jax.jit(f), (A, b), order=2, modes=("rev",))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev", NDEV)
def test_qr_ctx_grad(rng, dtype, ndev):
    m = mesh(ndev)
    A = _tall(rng, dtype)
    wq, wr = randn(rng, (M, N), dtype), randn(rng, (N, N), dtype)

    def body(a):
        q, r, _ = jaxmg.qr_shardmap_ctx(a, None)
        return jnp.real(jax.lax.psum(jnp.sum(my_rows(wq) * q), "x") + jnp.sum(wr * r))

    g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(A, m, ROW))
    ref = jax.grad(lambda A: jnp.real(jnp.sum(wq * jnp.linalg.qr(A)[0])
                                      + jnp.sum(wr * jnp.linalg.qr(A)[1])))(A)
    close(g, ref)
    in_rows(g, m)
    f = smap(lambda a: jaxmg.qr_shardmap_ctx(a, None)[:2], m, (ROW,), (ROW, REP))
    check_grads(jax.jit(f), (A,), order=1, modes=("fwd", "rev"))


def _svd_weights(rng, shape):
    k = min(shape)
    return rng.standard_normal(k), rng.standard_normal((shape[0], k)), \
        rng.standard_normal((k, shape[1]))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,shape", [(1, (M, N)), (2, (M, N)), (4, (M, N)), (4, (N, M))],
                         ids=str)
def test_gesvd_ctx_grad(rng, dtype, ndev, shape):
    """s, |U|^2 and |Vh|^2 (phase invariant) through gesvd_shardmap_ctx,
    tall and wide, against jnp.linalg.svd."""
    m = mesh(ndev)
    A = randn(rng, shape, dtype)
    ws, wu, wv = _svd_weights(rng, shape)

    def body(a):
        u, s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None)
        return jnp.sum(ws * s) + jax.lax.psum(jnp.sum(my_rows(wu) * jnp.abs(u) ** 2), "x") \
            + jnp.sum(wv * jnp.abs(vh) ** 2)

    def ref(A):
        u, s, vh = jnp.linalg.svd(A, full_matrices=False)
        return jnp.sum(ws * s) + jnp.sum(wu * jnp.abs(u) ** 2) + jnp.sum(wv * jnp.abs(vh) ** 2)

    g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(A, m, ROW))
    close(g, jax.grad(ref)(A), 1e-8)
    in_rows(g, m)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("shape", [(M, N), (N, M)], ids=str)
def test_gesvd_ctx_one_factor_and_values(rng, dtype, shape):
    """U alone, Vh alone, s alone: the derivative runs the reduced SVD and
    takes its parts; the same gradients as jnp.linalg.svd's."""
    m = mesh(2)
    A = randn(rng, shape, dtype)
    ws, wu, wv = _svd_weights(rng, shape)

    def u_only(a):
        u, s, _ = jaxmg.gesvd_shardmap_ctx(a, None, compute_vh=False)
        return jnp.sum(ws * s) + jax.lax.psum(jnp.sum(my_rows(wu) * jnp.abs(u) ** 2), "x")

    def vh_only(a):
        s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None, compute_u=False)
        return jnp.sum(ws * s) + jnp.sum(wv * jnp.abs(vh) ** 2)

    def s_only(a):
        s, _ = jaxmg.gesvd_shardmap_ctx(a, None, compute_u=False, compute_vh=False)
        return jnp.sum(ws * s ** 2)

    svd = lambda A: jnp.linalg.svd(A, full_matrices=False)  # noqa: E731
    refs = [lambda A: jnp.sum(ws * svd(A)[1]) + jnp.sum(wu * jnp.abs(svd(A)[0]) ** 2),
            lambda A: jnp.sum(ws * svd(A)[1]) + jnp.sum(wv * jnp.abs(svd(A)[2]) ** 2),
            lambda A: jnp.sum(ws * svd(A)[1] ** 2)]
    for body, ref in zip((u_only, vh_only, s_only), refs):
        g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(A, m, ROW))
        close(g, jax.grad(ref)(A), 1e-8)
        in_rows(g, m)
    f = smap(lambda a: jaxmg.gesvd_shardmap_ctx(a, None, compute_vh=False)[1], m, (ROW,), P(None))
    check_grads(jax.jit(f), (A,), order=1, modes=("fwd", "rev"))


def test_gesvd_ctx_full_matrices(rng):
    """full_matrices=True: square A (the reduced SVD) and a tall A whose
    full U is not computed are differentiable; a tall A's full U is not
    (its extra columns are any basis of a complement): a clear
    NotImplementedError, while the primal still runs."""
    m = mesh(2)
    Sq, T = randn(rng, (N, N), np.complex128), randn(rng, (M, N), np.float64)
    ws, wu, _ = _svd_weights(rng, (N, N))

    def body(a):
        u, s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None, full_matrices=True)
        return jnp.sum(ws * s) + jax.lax.psum(jnp.sum(my_rows(wu) * jnp.abs(u) ** 2), "x")

    g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(Sq, m, ROW))
    ref = jax.grad(lambda A: jnp.sum(ws * jnp.linalg.svd(A)[1])
                   + jnp.sum(wu * jnp.abs(jnp.linalg.svd(A)[0]) ** 2))(Sq)
    close(g, ref, 1e-8)

    def vh_full(a):
        s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None, compute_u=False, full_matrices=True)
        return jnp.sum(s) + jnp.sum(vh[0] ** 2)

    g = jax.jit(jax.grad(smap(vh_full, m, (ROW,), P())))(put(T, m, ROW))
    svd = lambda A: jnp.linalg.svd(A, full_matrices=False)  # noqa: E731
    close(g, jax.grad(lambda A: jnp.sum(svd(A)[1]) + jnp.sum(svd(A)[2][0] ** 2))(T), 1e-8)

    def u_full(a):
        u, s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None, full_matrices=True)
        return jnp.sum(s), u

    f = smap(u_full, m, (ROW,), (P(), ROW))
    assert jax.jit(f)(put(T, m, ROW))[1].shape == (M, M)
    with pytest.raises(NotImplementedError, match="full_matrices=True"):
        jax.grad(lambda A: f(A)[0])(T)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,shape", [(1, (M, N)), (2, (M, N)), (4, (M, N)), (2, (N, M)),
                                        (4, (N, M))], ids=str)
def test_polar_ctx_grad(rng, dtype, ndev, shape):
    """Up and H through polar_shardmap_ctx, tall and wide (M < N), against
    jax.scipy.linalg.polar (its SVD method, jnp's svd derivative)."""
    m = mesh(ndev)
    A = _tall(rng, dtype, shape)
    wu, wh = randn(rng, shape, dtype), randn(rng, (shape[1], shape[1]), dtype)

    def body(a):
        up, h, _ = jaxmg.polar_shardmap_ctx(a, None)
        return jnp.real(jax.lax.psum(jnp.sum(my_rows(wu) * up), "x") + jnp.sum(wh * h))

    ref = lambda A: jax.scipy.linalg.polar(A, method="svd")  # noqa: E731
    g = jax.jit(jax.grad(smap(body, m, (ROW,), P())))(put(A, m, ROW))
    close(g, jax.grad(lambda A: jnp.real(jnp.sum(wu * ref(A)[0]) + jnp.sum(wh * ref(A)[1])))(A))
    in_rows(g, m)


@pytest.mark.parametrize("shape", [(M, N), (N, M)], ids=str)
def test_polar_ctx_check_grads(rng, shape):
    """Finite differences of Up and H (tall and wide), and Up alone
    (compute_h=False)."""
    m = mesh(2)
    A = _tall(rng, np.complex128, shape)
    f = smap(lambda a: jaxmg.polar_shardmap_ctx(a, None)[:2], m, (ROW,), (ROW, REP))
    check_grads(jax.jit(f), (A,), order=1, modes=("fwd", "rev"))
    f = smap(lambda a: jaxmg.polar_shardmap_ctx(a, None, compute_h=False)[0], m, (ROW,), ROW)
    (up,), (dup,) = jax.jvp(jax.jit(lambda A: (f(A),)), (A,), (randn(rng, shape, np.complex128),))
    np.testing.assert_allclose(np.asarray(up), jax.scipy.linalg.polar(A, method="svd")[0],
                               atol=1e-12)
    check_grads(jax.jit(f), (A,), order=1, modes=("rev",))


# ---------------------------------------------------------------------------
# distributed: what the derivative programs move


def test_per_shard_derivatives_move_no_full_matrix(rng):
    """No collective of the compiled gradient program of a per-shard form
    carries more than one device's block: syevd_shardmap_ctx (V in columns)
    and lu_solve_shardmap_ctx (N x N A: at most N/P x N), qr, gesvd and
    polar of a tall A (M x N: at most N x N, the replicated factors)."""
    from test_grad import _collective_sizes

    m, n, p = mesh(4), 32, 4
    H, A = hermitian(rng, n, np.float64), _square(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    T = _tall(rng, np.float64, (64, 8))

    def syevd(a):
        w, V, _ = jaxmg.syevd_shardmap_ctx(a, None)
        return jnp.sum(w ** 2) + jax.lax.psum(jnp.sum(V ** 4), "x")

    def lu(a, b):
        return jnp.sum(jaxmg.lu_solve_shardmap_ctx(a, b, None)[0] ** 2)

    def qr(a):
        q, r, _ = jaxmg.qr_shardmap_ctx(a, None)
        return jnp.sum(r ** 3) + jax.lax.psum(jnp.sum(q ** 3), "x")

    def gesvd(a):
        u, s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None)
        return jnp.sum(s ** 3) + jax.lax.psum(jnp.sum(u ** 4), "x") + jnp.sum(vh ** 4)

    def polar(a):
        up, h, _ = jaxmg.polar_shardmap_ctx(a, None)
        return jnp.sum(h ** 3) + jax.lax.psum(jnp.sum(up ** 3), "x")

    cases = [(syevd, (H,), n * n // p), (lu, (A, b), n * n // p)] + \
        [(f, (T,), 8 * 8) for f in (qr, gesvd, polar)]
    for body, args, bound in cases:
        specs = (ROW, REP)[: len(args)]
        loss = smap(body, m, specs, P())
        sizes = _collective_sizes(jax.grad(loss, argnums=tuple(range(len(args)))),
                                  *(put(x, m, s) for x, s in zip(args, specs)))
        assert sizes and max(sizes) <= bound, (body.__name__, sorted(sizes)[-3:])
    # the check can fail: a body that gathers its A does show up
    gather = smap(lambda a: jnp.sum(jax.lax.all_gather(a, "x", tiled=True) ** 2), m, (ROW,), P())
    assert max(_collective_sizes(jax.grad(gather), put(H, m, ROW))) >= n * n


def test_per_shard_grad_on_two_solve_axes(rng):
    """Solve axes ("x", "y") of a 2 x 2 mesh (axis_name a tuple): the
    collectives of the rules run over both; syevd (V in columns) and
    lu_solve."""
    from jax.sharding import Mesh

    m = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("x", "y"))
    rows, cols = P(("x", "y"), None), P(None, ("x", "y"))
    n = 8
    H, A, b = hermitian(rng, n, np.complex128), _square(rng, n, np.complex128), \
        randn(rng, (n, 2), np.complex128)
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))

    def eig(a):
        w, V, _ = jaxmg.syevd_shardmap_ctx(a, None, axis_name=("x", "y"))
        return w, jnp.abs(V) ** 2

    f = smap(eig, m, (rows,), (P(None), cols))
    g = jax.jit(jax.grad(lambda A: jnp.sum(cw * f(A)[0]) + jnp.sum(cv * f(A)[1])))(H)
    ref = jax.grad(lambda A: jnp.sum(cw * jnp.linalg.eigh(A)[0])
                   + jnp.sum(cv * jnp.abs(jnp.linalg.eigh(A)[1]) ** 2))(H)
    close(g, ref, _gap_tol(H, n))
    lu = smap(lambda a, b: jaxmg.lu_solve_shardmap_ctx(a, b, None, axis_name=("x", "y"))[0], m,
              (rows, REP), REP)
    gA, gb = jax.jit(jax.grad(lambda A, b: sq(lu(A, b)), (0, 1)))(A, b)
    rA, rb = jax.grad(lambda A, b: sq(jnp.linalg.solve(A, b)), (0, 1))(A, b)
    close(gA, rA)
    close(gb, rb)


def test_general_ctx_grads_at_failing_input_are_nan(rng):
    """A rank-deficient A for least_squares (status > 0), a non-finite A
    for qr, gesvd and polar (status -1): NaN gradients, no error."""
    m = mesh(2)
    A = _tall(rng, np.float64)
    A[:, 1] = 0.0
    b = randn(rng, (M, 1), np.float64)
    bad = _tall(rng, np.float64)
    bad[3, 2] = np.inf
    bodies = [
        (lambda a: jaxmg.least_squares_shardmap_ctx(a, b, None), A, 1),
        (lambda a: jaxmg.qr_shardmap_ctx(a, None), bad, -1),
        (lambda a: jaxmg.gesvd_shardmap_ctx(a, None), bad, -1),
        (lambda a: jaxmg.polar_shardmap_ctx(a, None), bad, -1),
    ]
    for call, X, sign in bodies:
        def body(a, call=call):
            *outs, status = call(a)
            return sum(jax.lax.psum(jnp.sum(o), "x") for o in outs), status

        f = smap(body, m, (ROW,), (P(), P(None)))
        (_, status), g = jax.jit(jax.value_and_grad(f, has_aux=True))(put(X, m, ROW))
        assert int(status[0]) * sign > 0 and np.all(np.isnan(np.asarray(g))), (call, status)


def test_vmap_of_per_shard_grads(rng):
    """jax.vmap over a batch of row blocks inside the shard_map, through
    lu_solve_shardmap_ctx and syevd_shardmap_ctx, then grad: the batched
    rules against jnp over the batch."""
    m, n = mesh(2), 6
    As = np.stack([_square(rng, n, np.float64) for _ in range(3)])
    Hs = np.stack([hermitian(rng, n, np.float64) for _ in range(3)])
    b = randn(rng, (n, 2), np.float64)
    batch = P(None, "x", None)

    def lu(a):
        return sq(jax.vmap(lambda a: jaxmg.lu_solve_shardmap_ctx(a, b, None)[0])(a))

    def eig(a):
        w, V, _ = jax.vmap(lambda a: jaxmg.syevd_shardmap_ctx(a, None))(a)
        return jnp.sum(w ** 2) + jax.lax.psum(jnp.sum(V ** 4), "x")

    g = jax.jit(jax.grad(smap(lu, m, (batch,), P())))(As)
    close(g, jax.grad(lambda As: sq(jnp.linalg.solve(As, b[None])))(As))
    g = jax.jit(jax.grad(smap(eig, m, (batch,), P())))(Hs)
    ref = jax.grad(lambda H: jnp.sum(jnp.linalg.eigh(H)[0] ** 2)
                   + jnp.sum(jnp.linalg.eigh(H)[1] ** 4))(Hs)
    close(g, ref, max(_gap_tol(H, n) for H in Hs))


@pytest.mark.parametrize("case", ["qr", "gesvd", "polar_tall", "polar_wide", "syevd"])
def test_per_shard_second_order(rng, case):
    """check_grads to second order through the per-shard rules (each JVP is
    written with differentiable pieces: polar's goes through gesvd's rule;
    syevd along Hermitian directions, eigenvectors as |V|^2)."""
    m = mesh(2)
    T = _tall(rng, np.float64, (6, 3))
    if case == "qr":
        f, X = smap(lambda a: jaxmg.qr_shardmap_ctx(a, None)[:2], m, (ROW,), (ROW, REP)), T
    elif case == "gesvd":
        def svd(a):
            u, s, vh, _ = jaxmg.gesvd_shardmap_ctx(a, None)
            return jnp.abs(u) ** 2, s, jnp.abs(vh) ** 2

        f, X = smap(svd, m, (ROW,), (ROW, P(None), REP)), T
    elif case.startswith("polar"):
        f = smap(lambda a: jaxmg.polar_shardmap_ctx(a, None)[:2], m, (ROW,), (ROW, REP))
        X = T if case == "polar_tall" else _tall(rng, np.float64, (4, 6))
    else:
        def eig(a):
            w, V, _ = jaxmg.syevd_shardmap_ctx(a, None)
            return w, jnp.abs(V) ** 2

        f, X = herm_dir(smap(eig, m, (ROW,), (P(None), COLS))), hermitian(rng, 4, np.float64) / 2
    check_grads(jax.jit(f), (X,), order=2, modes=("rev",) if case == "syevd" else ("fwd", "rev"))
