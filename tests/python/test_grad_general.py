"""Derivatives of the general operations of issue 15 (lu_solve, least_squares,
qr, gesvd, polar; rules in jaxmg.rules.general) over their engine cores,
against jnp.linalg / jax.scipy.linalg in float64 and complex128, with
check_grads along free directions and A's cotangent in rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxmg.rules import hermitian as ad
from jaxmg.rules import general as adg
from jaxmg.pipeline import mesh as _mesh
from helpers import ROW, declared, mesh, put, randn, request


class g:
    """The ops' non-differentiable cores on global arrays in rows over the
    solve axes (b replicated), by the request the public functions make."""

    @staticmethod
    def _core(row, arrays, mesh, axes, T_A, pad, dispatch, **opts):
        op = declared(row)
        req = request(row, *arrays, opts=op.options(**opts), T_A=T_A, mesh=mesh,
                      specs=jax.sharding.PartitionSpec(axes, None), pad=pad, dispatch=dispatch)
        return _mesh.run_core(req, *arrays)

    @staticmethod
    def _core_lu_solve(A, b, **kw):
        return g._core("lu_solve", (A, b), **kw)

    @staticmethod
    def _core_least_squares(A, b, **kw):
        return g._core("least_squares", (A, b), **kw)

    @staticmethod
    def _core_qr(A, **kw):
        return g._core("qr", (A,), **kw)

    @staticmethod
    def _core_gesvd(A, **kw):
        return g._core("gesvd", (A,), **kw)

    @staticmethod
    def _core_polar(A, **kw):
        return g._core("polar", (A,), **kw)

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731
M, N = 12, 5


def _setup(ndev=4):
    m = mesh(ndev)
    return m, dict(mesh=m, axes=("x",), T_A=None, pad=True, dispatch="auto"), ad.Layout(("x",), m)


def _close(got, ref, rel=1e-9):
    got, ref = np.asarray(got), np.asarray(ref)
    np.testing.assert_allclose(got, ref, atol=rel * max(np.abs(ref).max(), 1e-300))


def _in_rows(x, m):
    assert x.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), x.sharding


def _tall(rng, dtype):
    return randn(rng, (M, N), dtype) + 2 * np.eye(M, N)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_lu_solve_grad(rng, dtype):
    m, kw, lay = _setup()
    f = ad.linear_solve(lambda A, b: g._core_lu_solve(A, b, **kw), lay)
    n = 8
    A, b = randn(rng, (n, n), dtype) + 3 * np.eye(n), randn(rng, (n, 2), dtype)
    check_grads(jax.jit(lambda A, b: f(A, b)[0]), (A, b), order=1, modes=("fwd", "rev"))
    loss = lambda solve: lambda A, b: jnp.sum(jnp.abs(solve(A, b)) ** 2)  # noqa: E731
    gA, gb = jax.jit(jax.grad(loss(lambda A, b: f(A, b)[0]), (0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(loss(jnp.linalg.solve), (0, 1))(A, b)
    _close(gA, rA)
    _close(gb, rb)
    _in_rows(gA, m)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_least_squares_grad(rng, dtype):
    m, kw, lay = _setup()
    f = adg.least_squares(lambda A, b: g._core_least_squares(A, b, **kw), lay)
    A, b = _tall(rng, dtype), randn(rng, (M, 2), dtype)
    check_grads(jax.jit(lambda A, b: f(A, b)[0]), (A, b), order=1, modes=("fwd", "rev"))

    def ref(A, b):
        return jnp.linalg.solve(jnp.conj(A).T @ A, jnp.conj(A).T @ b)

    loss = lambda solve: lambda A, b: jnp.sum(jnp.abs(solve(A, b)) ** 2)  # noqa: E731
    gA, gb = jax.jit(jax.grad(loss(lambda A, b: f(A, b)[0]), (0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(loss(ref), (0, 1))(A, b)
    _close(gA, rA)
    _close(gb, rb)
    _in_rows(gA, m)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_qr_grad(rng, dtype):
    m, kw, lay = _setup()
    f = adg.qr(lambda A: g._core_qr(A, **kw), lay)
    A = _tall(rng, dtype)
    Q, R, _ = f(A)
    rQ, rR = jnp.linalg.qr(A)
    _close(Q, rQ, 1e-12)  # the same Householder QR (signs included)
    check_grads(jax.jit(lambda A: f(A)[:2]), (A,), order=1, modes=("fwd", "rev"))
    wq, wr = randn(rng, (M, N), dtype), randn(rng, (N, N), dtype)
    loss = lambda q, r: jnp.real(jnp.sum(wq * q) + jnp.sum(wr * r))  # noqa: E731
    gA = jax.jit(jax.grad(lambda A: loss(*f(A)[:2])))(put(A, m, ROW))
    _close(gA, jax.grad(lambda A: loss(*jnp.linalg.qr(A)))(A))
    _in_rows(gA, m)


def _svd_loss(rng, shape, dtype):
    k = min(shape)
    ws, wu, wv = rng.standard_normal(k), rng.standard_normal((shape[0], k)), \
        rng.standard_normal((k, shape[1]))
    return lambda u, s, vh: jnp.sum(ws * s) + jnp.sum(wu * jnp.abs(u) ** 2) \
        + jnp.sum(wv * jnp.abs(vh) ** 2)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("shape", [(M, N), (4, 9)], ids=str)
def test_gesvd_grad(rng, dtype, shape):
    """Singular values and |U|^2, |Vh|^2 (phase invariant) against
    jnp.linalg.svd, tall and wide."""
    m, kw, lay = _setup()
    f = adg.gesvd(lambda A: g._core_gesvd(A, compute_u=True, compute_vh=True,
                                          full_matrices=False, **kw), lay)
    A = randn(rng, shape, dtype)
    loss = _svd_loss(rng, shape, dtype)
    gA = jax.jit(jax.grad(lambda A: loss(*f(A)[:3])))(put(A, m, ROW))
    r = jax.grad(lambda A: loss(*jnp.linalg.svd(A, full_matrices=False)))(A)
    _close(gA, r, 1e-8)
    _in_rows(gA, m)


def test_singular_values_second_order(rng):
    m, kw, lay = _setup()
    full = lambda A: g._core_gesvd(A, compute_u=True, compute_vh=True,  # noqa: E731
                                   full_matrices=False, **kw)
    values = lambda A: g._core_gesvd(A, compute_u=False, compute_vh=False,  # noqa: E731
                                     full_matrices=False, **kw)[1::2]
    f = adg.singular_values(values, full, lay)
    A = randn(rng, (M, N), np.float64)
    check_grads(jax.jit(lambda A: f(A)[0]), (A,), order=2, modes=("fwd", "rev"))
    g1 = jax.jit(jax.grad(lambda A: jnp.sum(f(A)[0] ** 3)))(A)
    r = jax.grad(lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False) ** 3))(A)
    _close(g1, r)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_polar_grad(rng, dtype):
    """Against jax.scipy.linalg.polar (through jnp's SVD), tall A."""
    m, kw, lay = _setup()
    svd = lambda A: g._core_gesvd(A, compute_u=True, compute_vh=True,  # noqa: E731
                                  full_matrices=False, **kw)
    f = adg.polar(lambda A: g._core_polar(A, compute_h=True, **kw), lay, svd)
    A = _tall(rng, dtype)
    dA = randn(rng, (M, N), dtype)
    (up, h, _), (dup, dh, _) = jax.jit(lambda A, t: jax.jvp(f, (A,), (t,)))(A, dA)
    ref = lambda A: jax.scipy.linalg.polar(A, method="svd")  # noqa: E731
    (rup, rh), (rdup, rdh) = jax.jvp(ref, (A,), (dA,))
    _close(up, rup, 1e-12)
    _close(dup, rdup)
    _close(dh, rdh)
    check_grads(jax.jit(lambda A: f(A)[:2]), (A,), order=1, modes=("rev",))
    w = randn(rng, (M, N), dtype)
    gA = jax.jit(jax.grad(lambda A: jnp.real(jnp.sum(w * f(A)[0]))))(put(A, m, ROW))
    _close(gA, jax.grad(lambda A: jnp.real(jnp.sum(w * ref(A)[0])))(A))
    _in_rows(gA, m)


def test_lu_solve_grad_singular_is_nan(rng):
    m, kw, lay = _setup(2)
    f = ad.linear_solve(lambda A, b: g._core_lu_solve(A, b, **kw), lay)
    n = 6
    A, b = randn(rng, (n, n), np.float64), randn(rng, (n, 1), np.float64)
    A[:, 2] = 0.0
    status, gA = jax.jit(lambda A: (f(A, b)[1], jax.grad(lambda A: jnp.sum(f(A, b)[0]))(A)))(A)
    assert int(status) > 0 and np.all(np.isnan(np.asarray(gA)))


def test_vmap_general_ops(rng):
    """lu_solve over a batch of b: one FFI call; qr over a batch of A: one
    call in one loop; both against a loop."""
    m, kw, lay = _setup()
    f = ad.linear_solve(lambda A, b: g._core_lu_solve(A, b, **kw), lay)
    n = 8
    A, bs = randn(rng, (n, n), np.float64) + 3 * np.eye(n), randn(rng, (3, n, 2), np.float64)
    x, status = jax.jit(jax.vmap(f, (None, 0)))(A, bs)
    _close(x, np.linalg.solve(A, bs), 1e-12)
    text = jax.jit(jax.vmap(f, (None, 0))).lower(A, bs).as_text()
    assert text.count("stablehlo.while") == 0
    q = adg.qr(lambda A: g._core_qr(A, **kw), lay)
    As = np.stack([_tall(rng, np.float64) for _ in range(3)])
    Q, R, status = jax.jit(jax.vmap(q))(As)
    _close(Q @ R, As, 1e-12)
    assert status.shape == (3,)


def test_general_rules_on_explicit_mesh_axes(rng):
    """Explicit mesh axes (shardings in the types): the contractions over
    the rows state their replicated result; gradients match jnp and stay in
    rows."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    m = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("x",), axis_types=(AxisType.Explicit,))
    kw = dict(mesh=m, axes=("x",), T_A=None, pad=True, dispatch="auto")
    lay = ad.Layout(("x",), m)
    A, b = _tall(rng, np.float64), randn(rng, (M, 2), np.float64)
    Ar, br = (jax.device_put(x, NamedSharding(m, s)) for x, s in ((A, ROW), (b, P(None, None))))
    svd = lambda A: g._core_gesvd(A, compute_u=True, compute_vh=True,  # noqa: E731
                                  full_matrices=False, **kw)
    lstsq = adg.least_squares(lambda A, b: g._core_least_squares(A, b, **kw), lay)
    qr = adg.qr(lambda A: g._core_qr(A, **kw), lay)
    polar = adg.polar(lambda A: g._core_polar(A, compute_h=True, **kw), lay, svd)
    cases = [
        (lambda A: jnp.sum(lstsq(A, br)[0] ** 2),
         lambda A: jnp.sum(jnp.linalg.solve(A.T @ A, A.T @ b) ** 2)),
        (lambda A: jnp.sum(qr(A)[1] ** 3), lambda A: jnp.sum(jnp.linalg.qr(A)[1] ** 3)),
        (lambda A: jnp.sum(adg.gesvd(svd, lay)(A)[1] ** 3),
         lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False) ** 3)),
        (lambda A: jnp.sum(polar(A)[0] ** 3),
         lambda A: jnp.sum(jax.scipy.linalg.polar(A, method="svd")[0] ** 3)),
        (lambda A: jnp.sum(polar(A.T[:4])[0] ** 3),  # wide (4 x 12)
         lambda A: jnp.sum(jax.scipy.linalg.polar(A.T[:4], method="svd")[0] ** 3)),
        (lambda A: jnp.sum(adg.svd_parts(  # U alone
            lambda A: g._core_gesvd(A, compute_u=True, compute_vh=False, full_matrices=False,
                                    **kw), svd, lay, True, False)(A)[0] ** 4),
         lambda A: jnp.sum(jnp.linalg.svd(A, full_matrices=False)[0] ** 4)),
    ]
    for loss, ref in cases:
        gA = jax.jit(jax.grad(loss))(Ar)
        _close(gA, jax.grad(ref)(A))
        _in_rows(gA, m)


def test_public_general_ops_grad(rng):
    """Through the public functions (they call the rules): lu_solve with a
    vector b, least_squares, qr, gesvd, its singular values alone, polar."""
    import jaxmg

    m = mesh(4)
    n = 8
    A, b = randn(rng, (n, n), np.complex128) + 3 * np.eye(n), randn(rng, (n,), np.complex128)
    T, bt = _tall(rng, np.complex128), randn(rng, (M, 2), np.complex128)
    Ar, Tr = put(A, m, ROW), put(T, m, ROW)
    sq = lambda x: jnp.sum(jnp.abs(x) ** 2)  # noqa: E731
    cases = [
        (lambda A: sq(jaxmg.lu_solve(A, b, None, m, ROW)), Ar, A,
         lambda A: sq(jnp.linalg.solve(A, b))),
        (lambda A: sq(jaxmg.least_squares(A, bt, None, m, ROW)), Tr, T,
         lambda A: sq(jnp.linalg.solve(jnp.conj(A).T @ A, jnp.conj(A).T @ bt))),
        (lambda A: sq(jaxmg.qr(A, None, m, ROW)[1]), Tr, T, lambda A: sq(jnp.linalg.qr(A)[1])),
        (lambda A: jnp.sum(jaxmg.gesvd(A, None, m, ROW)[1] ** 3), Tr, T,
         lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False) ** 3)),
        (lambda A: jnp.sum(jaxmg.gesvd(A, None, m, ROW, compute_u=False, compute_vh=False) ** 3),
         Tr, T, lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False) ** 3)),
        (lambda A: jnp.real(jnp.sum(bt[:, :1] * jaxmg.polar(A, None, m, ROW)[0])), Tr, T,
         lambda A: jnp.real(jnp.sum(bt[:, :1] * jax.scipy.linalg.polar(A, method="svd")[0]))),
    ]
    for loss, X, X0, ref in cases:
        gA = jax.jit(jax.grad(loss))(X)
        _close(gA, jax.grad(ref)(X0))
        _in_rows(gA, m)


@pytest.mark.parametrize("ndev", [1, 2, 4])
def test_public_gesvd_one_factor_and_full_matrices(rng, ndev):
    """U alone, Vh alone (the rule runs the reduced SVD and returns the
    requested part), full_matrices on a square A and on a tall A whose
    longer factor is not computed: jnp.linalg.svd's gradients. A tall A's
    full U has no derivative: NotImplementedError naming the reason."""
    import jaxmg

    m = mesh(ndev)
    T, S = randn(rng, (M, N), np.complex128), randn(rng, (N, N), np.float64)
    Tr, Sr = put(T, m, ROW), put(S, m, ROW)
    ws, wu, wv = _svd_weights_mesh(rng, (M, N))
    svd = lambda A: jnp.linalg.svd(A, full_matrices=False)  # noqa: E731
    a2 = lambda x: jnp.abs(x) ** 2  # noqa: E731
    cases = [
        (lambda A: jnp.sum(ws * jaxmg.gesvd(A, None, m, ROW, compute_vh=False)[1])
         + jnp.sum(wu * a2(jaxmg.gesvd(A, None, m, ROW, compute_vh=False)[0])), Tr, T,
         lambda A: jnp.sum(ws * svd(A)[1]) + jnp.sum(wu * a2(svd(A)[0]))),
        (lambda A: jnp.sum(wv * a2(jaxmg.gesvd(A, None, m, ROW, compute_u=False)[1])), Tr, T,
         lambda A: jnp.sum(wv * a2(svd(A)[2]))),
        (lambda A: jnp.sum(wv * a2(jaxmg.gesvd(A, None, m, ROW, compute_u=False,
                                               full_matrices=True)[1])), Tr, T,
         lambda A: jnp.sum(wv * a2(svd(A)[2]))),
        (lambda A: jnp.sum(wv[:, :N] * a2(jaxmg.gesvd(A, None, m, ROW, full_matrices=True)[0])),
         Sr, S, lambda A: jnp.sum(wv[:, :N] * a2(svd(A)[0]))),
    ]
    for loss, X, X0, ref in cases:
        gA = jax.jit(jax.grad(loss))(X)
        _close(gA, jax.grad(ref)(X0), 1e-8)
        if X0.shape[0] % ndev == 0:
            _in_rows(gA, m)
    full_u = lambda A: jnp.sum(jaxmg.gesvd(A, None, m, ROW, full_matrices=True)[0])  # noqa: E731
    assert np.isfinite(float(jnp.real(jax.jit(full_u)(Tr))))
    with pytest.raises(NotImplementedError, match="arbitrary orthonormal basis"):
        jax.grad(lambda A: jnp.real(full_u(A)))(Tr)


def _svd_weights_mesh(rng, shape):
    k = min(shape)
    return rng.standard_normal(k), rng.standard_normal((shape[0], k)), \
        rng.standard_normal((k, shape[1]))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,shape", [(1, (4, 9)), (2, (4, 9)), (4, (4, 9)), (2, (5, 9))],
                         ids=str)
def test_polar_wide_grad(rng, dtype, ndev, shape):
    """Wide A (M < N): Up has orthonormal rows, H = (A^H A)^(1/2) has rank
    M; JVP, gradient and finite differences against jax.scipy.linalg.polar
    (M = 5 on 2 devices: A padded by the core)."""
    import jaxmg

    m = mesh(ndev)
    A = randn(rng, shape, dtype) + 2 * np.eye(*shape)
    dA = randn(rng, shape, dtype)
    f = lambda A: jaxmg.polar(A, None, m, ROW)  # noqa: E731
    ref = lambda A: jax.scipy.linalg.polar(A, method="svd")  # noqa: E731
    (up, h), (dup, dh) = jax.jit(lambda A, t: jax.jvp(f, (A,), (t,)))(put(A, m, ROW), dA)
    (rup, rh), (rdup, rdh) = jax.jvp(ref, (A,), (dA,))
    _close(up, rup, 1e-12)
    _close(h, rh, 1e-12)
    _close(dup, rdup)
    _close(dh, rdh)
    check_grads(jax.jit(f), (A,), order=1, modes=("fwd", "rev"))
    w = randn(rng, shape, dtype)
    gA = jax.jit(jax.grad(lambda A: jnp.real(jnp.sum(w * f(A)[0]))))(put(A, m, ROW))
    _close(gA, jax.grad(lambda A: jnp.real(jnp.sum(w * ref(A)[0])))(A))


def test_general_ctx_global_forms_grad(rng):
    """The *_shardmap_ctx forms outside a shard_map (JAXMg 1.4's, on global
    arrays) run the same rules."""
    import jaxmg

    m = mesh(4)
    n = 8
    A, b = randn(rng, (n, n), np.float64) + 3 * np.eye(n), randn(rng, (n, 2), np.float64)
    T, bt = _tall(rng, np.float64), randn(rng, (M, 2), np.float64)
    sq = lambda x: jnp.sum(x ** 2)  # noqa: E731
    cases = [
        (lambda A: sq(jaxmg.lu_solve_shardmap_ctx(A, b, None, m, ROW)[1]), A,
         lambda A: sq(jnp.linalg.solve(A, b))),
        (lambda A: sq(jaxmg.least_squares_shardmap_ctx(A, bt, None, m, ROW)[2]), T,
         lambda A: sq(jnp.linalg.solve(A.T @ A, A.T @ bt))),
        (lambda A: sq(jaxmg.qr_shardmap_ctx(A, None, m, ROW)[1]), T,
         lambda A: sq(jnp.linalg.qr(A)[1])),
        (lambda A: sq(jaxmg.gesvd_shardmap_ctx(A, None, m, ROW, compute_u=False)[1]), T,
         lambda A: sq(jnp.linalg.svd(A, compute_uv=False))),
        (lambda A: sq(jaxmg.polar_shardmap_ctx(A, None, m, ROW)[1]), T,
         lambda A: sq(jax.scipy.linalg.polar(A, method="svd")[1])),
    ]
    for loss, X, ref in cases:
        gA = jax.jit(jax.grad(loss))(put(X, m, ROW))
        _close(gA, jax.grad(ref)(X))
        _in_rows(gA, m)
