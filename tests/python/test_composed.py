"""jaxmg.composed: polar by QDWH, QR by CholeskyQR2/3, the SVD from polar
and least squares from the QR on row-sharded tall A, against numpy / scipy in float64 on fresh
random inputs; errors scaled by eps(dtype), N and the condition number."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import helpers
from helpers import DTYPES, ROW, eps, mesh, put, randn, up
from jaxmg.composed import lstsq_cholesky, polar_qdwh, qr_cholesky, svd_polar

C = 30.0  # the constant in front of N eps (and cond) in every bound


def conditioned(rng, m, n, cond, dtype):
    """A (m, n) with singular values logspaced from 1 to 1 / cond."""
    cplx = helpers.is_complex(dtype)
    wide = np.complex128 if cplx else np.float64
    u = np.linalg.qr(randn(rng, (m, n), wide))[0]
    v = helpers.unitary(rng, n, wide)
    return ((u * np.logspace(0, -np.log10(cond), n)) @ v.conj().T).astype(dtype)


def orth_err(q):
    q = up(q)
    return np.linalg.norm(q.conj().T @ q - np.eye(q.shape[1]))


def rel(x, y):
    return np.linalg.norm(up(x) - up(y)) / np.linalg.norm(up(y))


def check_polar(A, Up, H, dtype, cond):
    n = A.shape[1]
    bound = C * n * eps(dtype)
    assert orth_err(Up) <= bound
    assert rel(up(Up) @ up(H), A) <= bound
    Hh = up(H)
    assert np.linalg.norm(Hh - Hh.conj().T) <= bound * np.linalg.norm(Hh)
    assert np.linalg.eigvalsh(Hh).min() >= -bound * np.linalg.norm(Hh, 2)
    up_ref, h_ref = sl.polar(up(A))
    assert rel(H, h_ref) <= bound
    assert rel(Up, up_ref) <= bound * cond


def rand_a(rng, m, n, dtype):
    return randn(rng, (m, n), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_qr(rng, dtype):
    m, n, k = 96, 32, 4
    A = rand_a(rng, m, n, dtype)
    Q, R, status = qr_cholesky(put(A, mesh(k), ROW), mesh(k), "x")
    assert int(status) == 0
    assert Q.sharding.spec == ROW and R.sharding.spec == ROW
    R = up(R)
    bound = C * n * eps(dtype)
    assert orth_err(Q) <= bound
    assert rel(up(Q) @ R, A) <= bound
    assert np.all(np.tril(R, -1) == 0)
    assert np.all(np.diagonal(R).real > 0) and np.all(np.diagonal(R).imag == 0)
    r_ref = np.linalg.qr(up(A))[1]  # equal up to the signs (phases) of its rows
    r_ref = r_ref * (np.abs(np.diagonal(r_ref)) / np.diagonal(r_ref))[:, None]
    assert rel(R, r_ref) <= bound * np.linalg.cond(up(A))


def check_lstsq(A, b, x, dtype, cond):
    """x against lstsq in float64: the normal equations' residual at the
    backward-stable level (no cond), the error within cond + cond^2
    ||r|| / (||A|| ||x||) of it."""
    A, b, x = up(A), up(b), up(x)
    n_eps = C * A.shape[1] * eps(dtype)
    an = np.linalg.norm(A, 2)
    r = A @ x - b
    assert np.linalg.norm(A.conj().T @ r) <= n_eps * an * (an * np.linalg.norm(x) +
                                                          np.linalg.norm(b))
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    r_ref = np.linalg.norm(A @ ref - b)
    assert rel(x, ref) <= n_eps * (cond + cond ** 2 * r_ref / (an * np.linalg.norm(ref)))


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])  # real and complex, both precisions
def test_lstsq(rng, dtype):
    m, n = 96, 32
    cond = 1e2 if eps(dtype) > 1e-10 else 1e6
    A = conditioned(rng, m, n, cond, dtype)
    b = randn(rng, (m, 3), dtype)
    x, status = lstsq_cholesky(put(A, mesh(4), ROW), b, mesh(4), "x")
    assert int(status) == 0 and x.shape == (n, 3) and x.sharding.is_fully_replicated
    check_lstsq(A, b, x, dtype, cond)
    x1, _ = lstsq_cholesky(put(A, mesh(4), ROW), b[:, 1], mesh(4), "x")
    assert x1.shape == (n,)
    np.testing.assert_allclose(up(x1), up(x)[:, 1], rtol=0, atol=C * n * eps(dtype) * cond *
                               np.abs(up(x)).max())


def test_lstsq_failures(rng):
    """Non-finite b: status -1, x NaN; a zero column (rank deficient beyond
    the shift): status > 0, x NaN; the wrong b: a ValueError first."""
    m8 = mesh(8)
    A = randn(rng, (64, 16), np.float64)
    b = randn(rng, (64,), np.float64)
    b[5] = np.inf
    x, status = lstsq_cholesky(put(A, m8, ROW), b, m8, "x")
    assert int(status) == -1 and np.isnan(up(x)).all()
    A[:, 3] = 0
    x, status = lstsq_cholesky(put(A, m8, ROW), np.ones(64), m8, "x")
    assert int(status) > 0 and np.isnan(up(x)).all()
    with pytest.raises(ValueError, match=r"b must be \(M,\) or \(M, K\)"):
        lstsq_cholesky(put(A, m8, ROW), np.ones(63), m8, "x")
    with pytest.raises(ValueError, match="b's dtype complex128 is not A's float64"):
        lstsq_cholesky(put(A, m8, ROW), np.ones(64, complex), m8, "x")


@pytest.mark.parametrize("dtype", DTYPES)
def test_polar(rng, dtype):
    m, n = 128, 64
    A = rand_a(rng, m, n, dtype)
    Up, H, status = polar_qdwh(put(A, mesh(8), ROW), mesh(8), "x")
    assert int(status) == 0
    assert Up.sharding.spec == ROW and H.sharding.spec == ROW
    check_polar(A, Up, H, dtype, np.linalg.cond(up(A)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_svd(rng, dtype):
    m, n = 64, 32
    A = rand_a(rng, m, n, dtype)
    U, s, Vh, status = svd_polar(put(A, mesh(4), ROW), mesh(4), "x")
    assert int(status) == 0
    n_eps = C * n * eps(dtype)
    u_ref, s_ref, vh_ref = np.linalg.svd(up(A), full_matrices=False)
    s = up(s)
    assert np.all(np.diff(s) <= 0)
    assert np.abs(s - s_ref).max() <= n_eps * s_ref[0]
    assert orth_err(U) <= n_eps and orth_err(up(Vh).conj().T) <= n_eps
    assert rel((up(U) * s) @ up(Vh), A) <= n_eps
    # each singular vector pair, up to its phase, within eps / gap
    gap = np.min(np.abs(np.diff(s_ref))) / s_ref[0]
    phase = np.diagonal(u_ref.conj().T @ up(U))
    assert np.abs(np.abs(phase) - 1).max() <= n_eps / gap
    assert rel(up(Vh) * phase.conj()[:, None], vh_ref) <= n_eps / gap


@pytest.mark.parametrize("dtype,cond", [(np.float64, 1e8), (np.complex128, 1e8),
                                        (np.float64, 1e13), (np.float32, 1e4),
                                        (np.complex64, 1e4)])
def test_ill_conditioned(rng, dtype, cond):
    """cond(A) far beyond CholeskyQR2's u^-1/2: the shifted pass takes over
    in qr (shift='auto'), and QDWH's QR-based steps always use it."""
    m, n = 128, 64
    A = conditioned(rng, m, n, cond, dtype)
    m8 = mesh(8)
    Up, H, status = polar_qdwh(put(A, m8, ROW), m8, "x")
    assert int(status) == 0
    check_polar(A, Up, H, dtype, cond)
    Q, R, status = qr_cholesky(put(A, m8, ROW), m8, "x")
    assert int(status) == 0
    bound = C * n * eps(dtype)
    assert orth_err(Q) <= bound and rel(up(Q) @ up(R), A) <= bound
    U, s, Vh, status = svd_polar(put(A, m8, ROW), m8, "x")
    assert int(status) == 0
    assert np.abs(up(s) - np.linalg.svd(up(A), compute_uv=False)).max() <= bound
    assert orth_err(U) <= bound and rel((up(U) * up(s)) @ up(Vh), A) <= bound


def test_cholesky_qr2_alone_loses_orthogonality_where_shift_does_not(rng):
    """The reason for shift='auto': at cond 1e10 (above u^-1/2) CholeskyQR2
    fails or is far from orthogonal; the shifted pass fixes it."""
    A = conditioned(rng, 64, 32, 1e10, np.float64)
    m4 = mesh(4)
    Q, _, status = qr_cholesky(put(A, m4, ROW), m4, "x", shift=False)
    assert int(status) > 0 or orth_err(Q) > 1e-8
    Q, _, status = qr_cholesky(put(A, m4, ROW), m4, "x", shift=True)
    assert int(status) == 0 and orth_err(Q) <= C * 32 * eps(np.float64)


def test_flattened_and_2d_mesh(rng):
    """Rows over two axes (("a", "b")), and over one axis of a 2-D mesh
    (each group along the other axis solves its own copy)."""
    A = rand_a(rng, 64, 32, np.float64)
    m2 = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    for axes, spec in ((("a", "b"), P(("a", "b"), None)), (("b",), P("b", None))):
        Up, H, status = polar_qdwh(put(A, m2, spec), m2, axes)
        assert int(status) == 0
        check_polar(A, Up, H, np.float64, np.linalg.cond(A))


def test_compute_h_false_and_one_device(rng):
    A = rand_a(rng, 48, 16, np.complex128)
    m1 = mesh(1)
    Up, H, status = polar_qdwh(put(A, m1, ROW), m1, "x", compute_h=False)
    assert int(status) == 0 and H.shape == (0, 16)
    assert rel(Up, sl.polar(A)[0]) <= C * 16 * eps(np.float64) * np.linalg.cond(A)


@pytest.mark.parametrize("fn", [qr_cholesky, polar_qdwh, svd_polar])
def test_nonfinite(fn, rng):
    A = rand_a(rng, 32, 16, np.float64)
    A[5, 3] = np.inf
    out = fn(put(A, mesh(4), ROW), mesh(4), "x")
    assert int(out[-1]) == -1
    assert all(np.isnan(up(o)).all() for o in out[:-1])


def test_rank_deficient_qr_reports(rng):
    """A zero column: no Cholesky of the Gram matrix exists without the
    shift, so CholeskyQR2 reports the failing minor; shift='auto' then
    factors with the shift, and the result stays a valid A = Q R."""
    A = rand_a(rng, 32, 16, np.float64)
    A[:, 5] = 0
    m4 = mesh(4)
    Q, R, status = qr_cholesky(put(A, m4, ROW), m4, "x", shift=False)
    assert int(status) > 0 and np.isnan(up(Q)).all()
    Q, R, status = qr_cholesky(put(A, m4, ROW), m4, "x")
    if int(status) == 0:
        assert rel(up(Q) @ up(R), A) <= C * 16 * eps(np.float64)
    else:
        assert np.isnan(up(Q)).all() and np.isnan(up(R)).all()


@pytest.mark.parametrize("shape,axes,err", [
    ((16, 32), "x", "tall"), ((30, 16), "x", "multiples"), ((32, 18), "x", "multiples"),
    ((32, 16), "y", "not an axis"), ((32,), "x", "matrix")])
def test_bad_input(shape, axes, err):
    A = np.zeros(shape)
    for fn in (qr_cholesky, polar_qdwh, svd_polar):
        with pytest.raises(ValueError, match=err):
            fn(A, mesh(4), axes)


def test_bad_dtype_and_options():
    with pytest.raises(TypeError, match="dtype"):
        polar_qdwh(np.zeros((8, 4), np.int32), mesh(4), "x")
    with pytest.raises(TypeError, match="compute_h"):
        polar_qdwh(np.zeros((8, 4)), mesh(4), "x", compute_h=1)
    with pytest.raises(ValueError, match="l0"):
        polar_qdwh(np.zeros((8, 4)), mesh(4), "x", l0=2.0)
    with pytest.raises(ValueError, match="shift"):
        qr_cholesky(np.zeros((8, 4)), mesh(4), "x", shift="yes")


def test_memory_falls_with_devices():
    """XLA's per-device buffers for the whole polar program shrink with the
    device count: nothing of size M x N (or N x N) is held whole."""
    m, n = 512, 256
    sizes = {}
    for k in (2, 8):
        mk = mesh(k)
        A = jax.ShapeDtypeStruct((m, n), np.float64,
                                 sharding=jax.sharding.NamedSharding(mk, ROW))
        fn = jax.jit(lambda a, mk=mk: polar_qdwh(a, mk, "x"))
        ma = fn.lower(A).compile().memory_analysis()
        sizes[k] = ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes
    assert sizes[8] < 0.4 * sizes[2], sizes  # 1/4 but for the N^2/P terms


# ---------------------------------------------------------------------------
# the public ops on the composed route (dispatch="composed", or the engine
# decision for a matrix too large for one GPU)


@pytest.mark.parametrize("op", ["qr", "gesvd", "polar"])
def test_public_ops_take_the_composed_route(op):
    """jaxmg.qr / gesvd / polar with dispatch="composed": the op's
    defining equations, A's layout kept for the row results."""
    import jaxmg

    m = mesh(4)
    rng = np.random.default_rng(7)
    A = rng.standard_normal((16, 8))
    Ar = jax.device_put(A, NamedSharding(m, P("x", None)))
    out = getattr(jaxmg, op)(Ar, None, m, P("x", None), dispatch="composed", return_status=True)
    assert int(out[-1]) == 0
    # R, s, Vh and H come back replicated, as on every other engine
    assert all(x.sharding.is_fully_replicated for x in out[1:-1])
    out = [np.asarray(x) for x in out[:-1]]
    if op == "qr":
        np.testing.assert_allclose(out[0] @ out[1], A, atol=1e-12)
    elif op == "gesvd":
        np.testing.assert_allclose((out[0] * out[1]) @ out[2], A, atol=1e-12)
        np.testing.assert_allclose(out[1], np.linalg.svd(A, compute_uv=False), atol=1e-12)
    else:
        np.testing.assert_allclose(out[0] @ out[1], A, atol=1e-12)
        np.testing.assert_allclose(out[0].T @ out[0], np.eye(8), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.complex128])
def test_least_squares_takes_the_composed_route(rng, dtype):
    """jaxmg.least_squares with dispatch="composed": the solution as
    lstsq's, x replicated, and the derivative in A and b the host
    engine's."""
    import jaxmg

    m = mesh(4)
    A, b = randn(rng, (32, 8), dtype), randn(rng, (32, 2), dtype)
    Ar = jax.device_put(A, NamedSharding(m, P("x", None)))
    x, status = jaxmg.least_squares(Ar, b, None, m, P("x", None), dispatch="composed",
                                    return_status=True)
    assert int(status) == 0 and x.sharding.is_fully_replicated
    check_lstsq(A, b, x, dtype, np.linalg.cond(A))

    def loss(how):
        return lambda a, b: jnp.sum(jnp.abs(jaxmg.least_squares(a, b, None, m, P("x", None),
                                                                dispatch=how)) ** 2)

    got = jax.grad(loss("composed"), argnums=(0, 1))(Ar, b)
    want = jax.grad(loss("host"), argnums=(0, 1))(Ar, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-9, atol=1e-11)


def test_composed_route_is_mesh_level_only():
    import jaxmg

    m = mesh(4)
    f = jax.shard_map(lambda a: jaxmg.qr_shardmap_ctx(a, None, dispatch="composed"), mesh=m,
                      in_specs=(P("x", None),), out_specs=(P("x", None), P(), P()),
                      check_vma=False)
    with pytest.raises(ValueError, match="composed route runs mesh-level calls"):
        f(np.ones((16, 8)))


def test_decision_takes_the_composed_route_when_one_gpu_is_too_small():
    from jaxmg.pipeline import decide

    big = decide.Problem(op="polar", dtype=np.float64, n=65536, nparties=4, platform="gpu",
                         device_bytes=16 << 30, routes=helpers.declared("polar").routes)
    assert decide.decide(big) == "composed"
    assert decide.decide(dataclasses.replace(big, mp_available=True)) == "mp"
    assert decide.decide(dataclasses.replace(big, n=1024)) != "composed"
