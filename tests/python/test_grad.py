"""Derivatives of potrs (A and b), its logdet, potri and syevd (jaxmg.rules.hermitian)
against jnp.linalg in float64/complex128, with jax.test_util.check_grads
along Hermitian directions (first and second order), jit(grad), the layout
of A's cotangent, and NaN derivatives at a matrix that is not positive
definite.

The rules are tested over the public functions taken as cores (statics
closed over), which is how jaxmg's own call surface wraps its cores.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxmg
from jaxmg.rules import hermitian as ad
from helpers import REP, ROW, hermitian, mesh, put, randn, spd

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731


def sym(A):
    return (A + jnp.conj(A).T) / 2


def rules(m):
    """The differentiable ops over mesh m (rows over 'x')."""
    lay = ad.Layout(("x",), m)
    specs, spec1 = (ROW, REP), (ROW,)
    return dict(
        potrs=ad.potrs(lambda A, b: jaxmg.potrs(A, b, None, m, specs, return_status=True), lay),
        potri=ad.potri(lambda A: jaxmg.potri(A, None, m, spec1, return_status=True), lay),
        syevd=ad.syevd(lambda A: jaxmg.syevd(A, None, m, spec1, return_status=True), lay),
        eigvalsh=ad.eigvalsh(
            lambda A: jaxmg.syevd(A, None, m, spec1, return_eigenvectors=False, return_status=True),
            lambda A: jaxmg.syevd(A, None, m, spec1, return_status=True),
            lay,
        ),
    )


def herm_dir(f):
    """f along Hermitian directions only: check_grads perturbs S freely,
    f sees S + S^H (the point itself is passed as A / 2)."""
    return jax.jit(lambda S, *rest: f(S + jnp.conj(S).T, *rest))


def tol(dtype, n, cond=1.0):
    return 200 * n * np.finfo(np.dtype(dtype)).eps * cond


# ---------------------------------------------------------------------------
# potrs


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_potrs_check_grads_second_order(rng, dtype):
    m, n = mesh(4), 8
    f = rules(m)["potrs"]
    A, b = spd(rng, n, dtype), randn(rng, (n, 2), dtype)
    check_grads(herm_dir(lambda A, b: f(A, b)[0]), (A / 2, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n", [(4, 12), (3, 10)], ids=str)
def test_potrs_jit_grad_matches_jnp(rng, dtype, ndev, n):
    """The full cotangents (A's not projected on Hermitian matrices) equal
    jnp's of solve(sym(A), b): the convention of jnp.linalg.cholesky."""
    m = mesh(ndev)
    f = rules(m)["potrs"]
    A, b = spd(rng, n, dtype), randn(rng, (n, 3), dtype)
    w = randn(rng, (n, 3), dtype)

    def loss(A, b):
        return jnp.sum(jnp.abs(f(A, b)[0] - w) ** 2)

    def ref(A, b):
        return jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b) - w) ** 2)

    gA, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(ref, argnums=(0, 1))(A, b)
    scale = float(np.abs(rA).max())
    np.testing.assert_allclose(np.asarray(gA), rA, atol=tol(dtype, n) * scale)
    np.testing.assert_allclose(np.asarray(gb), rb, atol=tol(dtype, n) * scale)
    if n % ndev == 0:
        assert gA.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), gA.sharding


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_potrs_jvp_vector_rhs(rng, dtype):
    m, n = mesh(2), 6
    f = rules(m)["potrs"]
    A, b = spd(rng, n, dtype), randn(rng, (n,), dtype)
    dA, db = hermitian(rng, n, dtype), randn(rng, (n,), dtype)
    x, dx = jax.jit(lambda *p: jax.jvp(lambda A, b: f(A, b)[0], p[:2], p[2:]))(A, b, dA, db)
    rx, rdx = jax.jvp(jnp.linalg.solve, (A, b), (dA, db))
    np.testing.assert_allclose(np.asarray(x), rx, atol=tol(dtype, n))
    np.testing.assert_allclose(np.asarray(dx), rdx, atol=tol(dtype, n) * float(np.abs(rdx).max()))


def test_potrs_cotangent_keeps_a_2d_layout(rng):
    """A on a 2 x 2 grid as P('r', 'c'): the rules keep tangents and
    cotangents in A's own layout (Layout.spec)."""
    devs = np.array(jax.devices()[:4]).reshape(2, 2)
    m2 = jax.sharding.Mesh(devs, ("r", "c"))
    spec = P("r", "c")
    lay = ad.Layout(("r", "c"), m2, spec)
    core = lambda A, b: jaxmg.potrs(A, b, None, m2, (P(("r", "c"), None), REP), return_status=True)  # noqa: E731
    f = ad.potrs(core, lay)
    n = 8
    A, b = spd(rng, n, np.float64), randn(rng, (n, 1), np.float64)
    g = jax.jit(jax.grad(lambda A: jnp.sum(f(A, b)[0] ** 2)))(put(A, m2, spec))
    r = jax.grad(lambda A: jnp.sum(jnp.linalg.solve(sym(A), b) ** 2))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())
    assert g.sharding.is_equivalent_to(jax.sharding.NamedSharding(m2, spec), 2), g.sharding


def test_potrs_grad_not_positive_definite_is_nan(rng):
    m, n = mesh(4), 8
    f = rules(m)["potrs"]
    A = spd(rng, n, np.float64)
    A[5, 5] = -50.0
    b = randn(rng, (n, 1), np.float64)

    def loss(A, b):
        x, status = f(A, b)
        return jnp.sum(x ** 2), status

    (val, status), (gA, gb) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(A, b)
    assert int(status) > 0 and np.isnan(float(val))
    assert np.all(np.isnan(np.asarray(gA))) and np.all(np.isnan(np.asarray(gb)))
    _, dx = jax.jit(lambda A, t: jax.jvp(lambda A: f(A, b)[0], (A,), (t,)))(A, np.eye(n))
    assert np.all(np.isnan(np.asarray(dx)))


# ---------------------------------------------------------------------------
# potri


@pytest.mark.parametrize("dtype", [np.complex128], ids=IDS)  # real: test_potri_matches_jnp_inv
def test_potri_check_grads_second_order(rng, dtype):
    m, n = mesh(4), 8
    f = rules(m)["potri"]
    A = spd(rng, n, dtype)
    check_grads(herm_dir(lambda A: f(A)[0]), (A / 2,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n", [(4, 8), (3, 7)], ids=str)
def test_potri_matches_jnp_inv(rng, dtype, ndev, n):
    """Along Hermitian directions, jnp.linalg.inv's JVP; the gradient of a
    loss equals jnp's of inv(sym(A)), sharded like A."""
    m = mesh(ndev)
    f = rules(m)["potri"]
    A, dA = spd(rng, n, dtype), hermitian(rng, n, dtype)
    _, d = jax.jit(lambda A, t: jax.jvp(lambda A: f(A)[0], (A,), (t,)))(A, dA)
    _, rd = jax.jvp(jnp.linalg.inv, (A,), (dA,))
    np.testing.assert_allclose(np.asarray(d), rd, atol=tol(dtype, n) * np.abs(rd).max())
    w = randn(rng, (n, n), dtype)
    g = jax.jit(jax.grad(lambda A: jnp.real(jnp.sum(w * f(A)[0]))))(put(A, m, ROW))
    r = jax.grad(lambda A: jnp.real(jnp.sum(w * jnp.linalg.inv(sym(A)))))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=tol(dtype, n) * np.abs(r).max())
    if n % ndev == 0:
        assert g.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), g.sharding


def test_potri_grad_not_positive_definite_is_nan(rng):
    m, n = mesh(2), 6
    f = rules(m)["potri"]
    A = spd(rng, n, np.float64)
    A[0, 0] = -1.0
    (_, status), g = jax.jit(lambda A: (f(A), jax.grad(lambda A: jnp.sum(f(A)[0]))(A)))(A)
    assert int(status) > 0 and np.all(np.isnan(np.asarray(g)))


# ---------------------------------------------------------------------------
# syevd


def _eig_loss(w_weights, v_weights):
    """A loss of eigenvalues and of |V|^2 (eigenvector phase / sign
    invariant, so that it is a function of A)."""

    def loss(w, V):
        return jnp.sum(w_weights * w) + jnp.sum(v_weights * jnp.abs(V) ** 2)

    return loss


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n", [(4, 8), (3, 7)], ids=str)
def test_syevd_grad_matches_jnp_eigh(rng, dtype, ndev, n):
    m = mesh(ndev)
    f = rules(m)["syevd"]
    A = hermitian(rng, n, dtype)
    loss = _eig_loss(rng.standard_normal(n), rng.standard_normal((n, n)))
    g = jax.jit(jax.grad(lambda A: loss(*f(A)[:2])))(put(A, m, ROW))
    r = jax.grad(lambda A: loss(*jnp.linalg.eigh(A)))(A)
    gaps = np.diff(np.linalg.eigvalsh(A)).min()
    np.testing.assert_allclose(np.asarray(g), r, atol=tol(dtype, n, 1 / gaps) * np.abs(r).max())
    if n % ndev == 0:
        assert g.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), g.sharding


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_syevd_jvp_matches_jnp_eigh(rng, dtype):
    """Eigenvalue tangents, and eigenvector tangents in jnp's gauge
    (V^H dV has a zero diagonal), compared after aligning V's phases."""
    m, n = mesh(4), 8
    f = rules(m)["syevd"]
    A, dA = hermitian(rng, n, dtype), hermitian(rng, n, dtype)
    (w, V, _), (dw, dV, _) = jax.jit(lambda A, t: jax.jvp(f, (A,), (t,)))(A, dA)
    (rw, rV), (rdw, rdV) = jax.jvp(jnp.linalg.eigh, (A,), (dA,))
    np.testing.assert_allclose(np.asarray(w), rw, atol=1e-12 * np.abs(rw).max())
    np.testing.assert_allclose(np.asarray(dw), rdw, atol=1e-10 * np.abs(rdw).max())
    V, dV, rV, rdV = map(np.asarray, (V, dV, rV, rdV))
    phase = np.sum(np.conj(V) * rV, axis=0)  # rV = V * phase, column by column
    np.testing.assert_allclose(np.abs(phase), 1, atol=1e-10)
    np.testing.assert_allclose(dV * phase, rdV, atol=1e-9 * np.abs(rdV).max())


@pytest.mark.parametrize("dtype", [np.complex128], ids=IDS)  # real: the jnp comparisons
def test_syevd_check_grads(rng, dtype):
    """First order (both modes) of eigenvalues and of |V|^2; second order
    of the eigenvalues."""
    m, n = mesh(4), 8
    r = rules(m)
    A = hermitian(rng, n, dtype)

    def wv(A):
        w, V, _ = r["syevd"](A)
        return w, jnp.abs(V) ** 2

    check_grads(herm_dir(wv), (A / 2,), order=1, modes=("fwd", "rev"))
    check_grads(herm_dir(lambda A: r["eigvalsh"](A)[0]), (A / 2,), order=2, modes=("fwd", "rev"))


def test_eigvalsh_matches_jnp(rng):
    m, n = mesh(2), 6
    f = rules(m)["eigvalsh"]
    A = hermitian(rng, n, np.complex128)
    c = rng.standard_normal(n)
    g = jax.jit(jax.grad(lambda A: jnp.sum(c * f(A)[0])))(A)
    r = jax.grad(lambda A: jnp.sum(c * jnp.linalg.eigvalsh(A)))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())


# ---------------------------------------------------------------------------
# inside the caller's shard_map


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_grad_through_potrs_shardmap_ctx(rng, dtype):
    """A loss of x from potrs_shardmap_ctx inside a shard_map: the rule runs
    per shard (Layout(axes), mesh None); A's cotangent comes back in rows."""
    m, n = mesh(4), 8
    f = ad.potrs(lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, None), ad.Layout(("x",)))
    A, b, w = spd(rng, n, dtype), randn(rng, (n, 2), dtype), randn(rng, (n, 2), dtype)

    def body(a, b):
        x, _ = f(a, b)
        return jnp.sum(jnp.abs(x - w) ** 2)

    loss = jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=P(), check_vma=False)
    gA, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(put(A, m, ROW), b)
    ref = lambda A, b: jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b) - w) ** 2)  # noqa: E731
    rA, rb = jax.grad(ref, argnums=(0, 1))(A, b)
    scale = float(np.abs(rA).max())
    np.testing.assert_allclose(np.asarray(gA), rA, atol=tol(dtype, n) * scale)
    np.testing.assert_allclose(np.asarray(gb), rb, atol=tol(dtype, n) * scale)
    assert gA.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), gA.sharding


# ---------------------------------------------------------------------------
# logdet


def _logdet_engine(m):
    def core(A, b):
        return jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True, return_status=True)

    return core


def _logdet_rule(m):
    lay = ad.Layout(("x",), m)
    potri_core = lambda A: jaxmg.potri(A, None, m, (ROW,), return_status=True)  # noqa: E731
    return ad.potrs_logdet(_logdet_engine(m), potri_core, lay)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_logdet_grad_matches_jnp(rng, dtype):
    """A Gaussian-process style loss, x^H b / 2 + logdet / 2: both
    cotangents equal jnp's (slogdet and solve of sym(A)), sharded like A."""
    m, n = mesh(4), 8
    f = _logdet_rule(m)
    A, b = spd(rng, n, dtype), randn(rng, (n, 1), dtype)

    def loss(A, b):
        x, logdet, _ = f(A, b)
        return jnp.real(jnp.vdot(b, x)) / 2 + logdet / 2

    def ref(A, b):
        S = sym(A)
        return jnp.real(jnp.vdot(b, jnp.linalg.solve(S, b))) / 2 + jnp.linalg.slogdet(S)[1] / 2

    (v, (gA, gb)), (rv, (rA, rb)) = (
        jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(put(A, m, ROW), b),
        jax.value_and_grad(ref, argnums=(0, 1))(A, b),
    )
    scale = float(np.abs(rA).max())
    np.testing.assert_allclose(float(v), float(rv), rtol=tol(dtype, n))
    np.testing.assert_allclose(np.asarray(gA), rA, atol=tol(dtype, n) * scale)
    np.testing.assert_allclose(np.asarray(gb), rb, atol=tol(dtype, n) * scale)
    assert gA.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), gA.sharding


def test_logdet_check_grads_second_order(rng):
    m, n = mesh(2), 6
    f = _logdet_rule(m)
    A, b = spd(rng, n, np.complex128), randn(rng, (n, 1), np.complex128)
    check_grads(herm_dir(lambda A, b: f(A, b)[:2]), (A / 2, b), order=2, modes=("fwd", "rev"))


def test_logdet_grad_not_positive_definite_is_nan(rng):
    m, n = mesh(2), 6
    f = _logdet_rule(m)
    A, b = spd(rng, n, np.float64), randn(rng, (n, 1), np.float64)
    A[3, 3] = -5.0
    status, g = jax.jit(lambda A: (f(A, b)[2], jax.grad(lambda A: f(A, b)[1])(A)))(A)
    assert int(status) > 0 and np.all(np.isnan(np.asarray(g)))


# ---------------------------------------------------------------------------
# the mesh-level rules, and the rule for general (LU) solves


def test_mesh_rules_keep_the_cores_outputs(rng):
    """The mesh-level rule (pipeline/mesh.differentiable) keeps each core's
    signature and outputs: potrs with a vector b, potri, syevd with and
    without eigenvectors."""
    from jaxmg.ops import potri as op_potri, potrs as op_potrs, syevd as op_syevd
    from jaxmg.pipeline import mesh as _mesh, request as _request

    m, n = mesh(4), 8
    A, b, H = spd(rng, n, np.float64), randn(rng, (n,), np.float64), hermitian(rng, n, np.float64)
    req = _request.normalise(op_potrs.POTRS, op_potrs.Options(), A, b, T_A=None, mesh=m,
                             specs=(ROW, REP))
    f = _mesh.differentiable(req)
    x, status = f(A, b)
    assert x.shape == (n,) and int(status) == 0
    g = jax.jit(jax.grad(lambda A, b: jnp.sum(f(A, b)[0] ** 2), (0, 1)))(A, b)
    r = jax.grad(lambda A, b: jnp.sum(jnp.linalg.solve(sym(A), b) ** 2), (0, 1))(A, b)
    for a, e in zip(g, r):
        np.testing.assert_allclose(np.asarray(a), e, atol=1e-12 * np.abs(e).max())
    for jobz in (True, False):
        req = _request.normalise(op_syevd.SYEVD, op_syevd.Options(jobz), H, T_A=None, mesh=m,
                                 specs=(ROW,))
        f = _mesh.differentiable(req)
        assert len(f(H)) == (3 if jobz else 2)
        g = jax.jit(jax.grad(lambda A: f(A)[0][0]))(H)
        r = jax.grad(lambda A: jnp.linalg.eigvalsh(A)[0])(H)
        np.testing.assert_allclose(np.asarray(g), r, atol=1e-12)
    req = _request.normalise(op_potri.POTRI, op_potri.POTRI.options(), A, T_A=None, mesh=m,
                             specs=(ROW,))
    f = _mesh.differentiable(req)
    g = jax.jit(jax.grad(lambda A: jnp.sum(f(A)[0])))(A)
    r = jax.grad(lambda A: jnp.sum(jnp.linalg.inv(sym(A))))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_linear_solve_rule_general_matrix(rng, dtype):
    """The rule for lu_solve-like ops (issue 15), over a stand-in core: the
    transposed solve runs the core on A^T (distributed transpose)."""
    m, n = mesh(4), 8
    lay = ad.Layout(("x",), m)
    core = lambda A, b: (jnp.linalg.solve(A, b), jnp.int32(0))  # noqa: E731
    f = ad.linear_solve(core, lay)
    A = randn(rng, (n, n), dtype) + 4 * np.eye(n)
    b = randn(rng, (n, 2), dtype)
    check_grads(jax.jit(lambda A, b: f(A, b)[0]), (A, b), order=2, modes=("fwd", "rev"))
    g = jax.jit(jax.grad(lambda A: jnp.sum(jnp.abs(f(A, b)[0]) ** 2)))(put(A, m, ROW))
    r = jax.grad(lambda A: jnp.sum(jnp.abs(jnp.linalg.solve(A, b)) ** 2))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())
    assert g.sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2), g.sharding


# ---------------------------------------------------------------------------
# the public functions (the pipeline wraps their cores in the ops' rules)


def test_public_potrs_grad_tutorial_and_14_forms(rng):
    """The issue's reproduction: jax.grad through jaxmg.potrs, both call
    forms (tutorial: mesh and 2-tuple specs; 1.4: inferred from A)."""
    m, n = mesh(4), 8
    A, b = spd(rng, n, np.complex128), randn(rng, (n,), np.complex128)
    Ar = put(A, m, ROW)
    ref = jax.grad(lambda A, b: jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b)) ** 2), (0, 1))(A, b)
    forms = [
        lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP)),
        lambda A, b: jaxmg.potrs(A, b, 2),
    ]
    for form in forms:
        g = jax.jit(jax.grad(lambda A, b: jnp.sum(jnp.abs(form(A, b)) ** 2), (0, 1)))(Ar, b)
        for a, e in zip(g, ref):
            np.testing.assert_allclose(np.asarray(a), e, atol=1e-12 * np.abs(e).max())
        assert g[0].sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2)
    g_eager = jax.grad(lambda A: jnp.sum(jnp.abs(forms[1](A, b)) ** 2))(Ar)
    np.testing.assert_allclose(np.asarray(g_eager), ref[0], atol=1e-12 * np.abs(ref[0]).max())


def test_public_potri_and_syevd_grad(rng):
    """The issue's other reproduction (grad through syevd failed on pmax)."""
    m, n = mesh(4), 8
    A, H = spd(rng, n, np.float64), hermitian(rng, n, np.float64)
    g = jax.jit(jax.grad(lambda A: jnp.sum(jaxmg.potri(A, None, m, (ROW,)) ** 2)))(put(A, m, ROW))
    r = jax.grad(lambda A: jnp.sum(jnp.linalg.inv(sym(A)) ** 2))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())
    c = rng.standard_normal(n)
    for jobz in (True, False):
        def loss(A):
            out = jaxmg.syevd(A, None, m, (ROW,), return_eigenvectors=jobz)
            return jnp.sum(c * (out[0] if jobz else out))

        g = jax.jit(jax.grad(loss))(put(H, m, ROW))
        r = jax.grad(lambda A: jnp.sum(c * jnp.linalg.eigvalsh(A)))(H)
        np.testing.assert_allclose(np.asarray(g), r, atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_public_grad_through_potrs_shardmap_ctx(rng, dtype):
    m, n = mesh(4), 8
    A, b = spd(rng, n, dtype), randn(rng, (n, 2), dtype)

    def body(a, b):
        x, status = jaxmg.potrs_shardmap_ctx(a, b, None)
        return jnp.sum(jnp.abs(x) ** 2)

    loss = jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=P(), check_vma=False)
    gA, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(put(A, m, ROW), b)
    rA, rb = jax.grad(lambda A, b: jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b)) ** 2), (0, 1))(A, b)
    np.testing.assert_allclose(np.asarray(gA), rA, atol=tol(dtype, n) * np.abs(rA).max())
    np.testing.assert_allclose(np.asarray(gb), rb, atol=tol(dtype, n) * np.abs(rA).max())


def test_public_vmap_potrs(rng):
    m, n = mesh(4), 8
    As = np.stack([spd(rng, n, np.float64) for _ in range(2)])
    bs = randn(rng, (2, n, 3), np.float64)
    x = jax.jit(jax.vmap(lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP))))(As, bs)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(As, bs), rtol=1e-12, atol=1e-12)
    f = lambda b: jaxmg.potrs(As[0], b, None, m, (ROW, REP))  # noqa: E731
    x = jax.jit(jax.vmap(f))(bs)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(As[0], bs), rtol=1e-12, atol=1e-12)
    text = jax.jit(jax.vmap(f)).lower(bs).as_text()
    assert text.count("jaxmg_potrs") == 1 and "stablehlo.while" not in text


def test_syevd_rule_per_shard(rng):
    """The syevd rule inside the caller's shard_map (V in rows)."""
    from jaxmg.ops import syevd as op_syevd
    from jaxmg.pipeline import forms
    from jaxmg.pipeline.per_shard import Statics

    m, n = mesh(4), 8
    H = hermitian(rng, n, np.complex128)
    f = functools.partial(forms.shard_call, op_syevd.SYEVD, op_syevd.Options(),
                          Statics(v_layout="rows"))
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))

    def body(a):
        w, V, _ = f(a)
        return jnp.sum(cw * w) + jax.lax.psum(jnp.sum(_my(cv) * jnp.abs(V) ** 2), "x")

    def _my(c):
        return jax.lax.dynamic_slice_in_dim(c, jax.lax.axis_index("x") * (n // 4), n // 4)

    loss = jax.shard_map(body, mesh=m, in_specs=(ROW,), out_specs=P(), check_vma=False)
    g = jax.jit(jax.grad(loss))(put(H, m, ROW))
    r = jax.grad(lambda A: _eig_loss(cw, cv)(*jnp.linalg.eigh(A)))(H)
    gaps = np.diff(np.linalg.eigvalsh(H)).min()
    np.testing.assert_allclose(np.asarray(g), r, atol=tol(np.complex128, n, 1 / gaps) * np.abs(r).max())


def test_public_grad_through_potri_shardmap_ctx(rng):
    """potri_shardmap_ctx inside a shard_map: a loss of this device's rows
    of A^-1, summed over the devices."""
    m, n = mesh(4), 8
    A = spd(rng, n, np.complex128)
    w = randn(rng, (n, n), np.complex128)

    def body(a, w_rows):
        inv, _ = jaxmg.potri_shardmap_ctx(a, None)
        return jax.lax.psum(jnp.real(jnp.sum(w_rows * inv)), "x")

    loss = jax.shard_map(body, mesh=m, in_specs=(ROW, ROW), out_specs=P(), check_vma=False)
    g = jax.jit(jax.grad(loss))(put(A, m, ROW), put(w, m, ROW))
    r = jax.grad(lambda A: jnp.real(jnp.sum(w * jnp.linalg.inv(sym(A)))))(A)
    np.testing.assert_allclose(np.asarray(g), r, atol=tol(np.complex128, n) * np.abs(r).max())


def test_syevd_grad_at_non_finite_input_is_nan(rng):
    """A failing eigensolve (here: a non-finite entry, status != 0): NaN
    eigenpairs and NaN derivatives, no error."""
    m, n = mesh(2), 6
    f = rules(m)["syevd"]
    H = hermitian(rng, n, np.float64)
    H[1, 4] = H[4, 1] = np.nan
    status, g = jax.jit(lambda A: (f(A)[2], jax.grad(lambda A: jnp.sum(f(A)[0]))(A)))(H)
    assert int(status) != 0 and np.all(np.isnan(np.asarray(g)))


def _collective_sizes(fn, *args):
    """Elements of every collective's result in fn's compiled program."""
    import re

    text = jax.jit(fn).lower(*args).compile().as_text()
    sizes = []
    for line in text.splitlines():
        op = re.search(r" (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
                       r"(-start)?\(", line)
        if op and " = " in line:
            result = line[line.index(" = ") + 3 : op.start()]
            for dims in re.findall(r"\[([\d,]*)\]", result):
                sizes.append(int(np.prod([int(d) for d in dims.split(",") if d] or [1])))
    return sizes


def test_derivatives_move_no_full_matrix(rng):
    """Requirement of issue 16: no collective of a derivative program (grad
    of potrs, logdet, potri, syevd) carries an N x N matrix; the largest
    are row blocks (N/P x N) and right-hand sides (N x K)."""
    m, n = mesh(4), 32
    A, b = put(spd(rng, n, np.float64), m, ROW), randn(rng, (n, 2), np.float64)
    losses = {
        "potrs": lambda A: jnp.sum(jaxmg.potrs(A, b, None, m, (ROW, REP)) ** 2),
        "logdet": lambda A: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True)[1],
        "potri": lambda A: jnp.sum(jaxmg.potri(A, None, m, (ROW,)) ** 2),
        "syevd": lambda A: jnp.sum(jnp.abs(jaxmg.syevd(A, None, m, (ROW,))[1]) ** 3),
    }
    for name, loss in losses.items():
        sizes = _collective_sizes(jax.grad(loss), A)
        assert sizes and max(sizes) <= n * n // 4, (name, sorted(sizes)[-3:])
    # the check can fail: jnp's inverse of a row-sharded A gathers it
    assert max(_collective_sizes(lambda A: jnp.sum(jnp.linalg.inv(A)), A)) >= n * n


def test_explicit_mesh_axes(rng):
    """On Explicit mesh axes (shardings in the types): grads of potrs (b
    replicated, and b row-sharded as 1.4 allows), its logdet, potri, syevd
    without eigenvectors, and vmap over b, through the mesh-level rules."""
    from jax.sharding import AxisType, NamedSharding

    from jaxmg.ops import potri as op_potri, potrs as op_potrs, syevd as op_syevd
    from jaxmg.pipeline import mesh as _mesh, request as _request

    m = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("x",), axis_types=(AxisType.Explicit,))
    n = 8
    A, H = spd(rng, n, np.complex128), hermitian(rng, n, np.complex128)
    b = randn(rng, (n, 2), np.complex128)
    on = lambda x, spec: jax.device_put(x, NamedSharding(m, spec))  # noqa: E731
    Ar, Hr = on(A, ROW), on(H, ROW)

    def rule(op, opts, *xs):
        return _mesh.differentiable(_request.normalise(op, opts, *xs, T_A=2, mesh=m, specs=ROW))

    ref = jax.grad(lambda A: jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b)) ** 2))(A)
    for b_spec in (REP, ROW):
        br = on(b, b_spec)
        potrs = rule(op_potrs.POTRS, op_potrs.Options(), Ar, br)
        g = jax.jit(jax.grad(lambda A, b: jnp.sum(jnp.abs(potrs(A, b)[0]) ** 2), (0, 1)))(Ar, br)
        np.testing.assert_allclose(np.asarray(g[0]), ref, atol=1e-12 * np.abs(ref).max())
        assert g[0].sharding.spec == ROW and g[1].sharding.spec == b_spec
    br = on(b, REP)
    potrs = rule(op_potrs.POTRS, op_potrs.Options(logdet=True), Ar, br)
    g = jax.jit(jax.grad(lambda A: potrs(A, br)[1]))(Ar)
    rl = jax.grad(lambda A: jnp.linalg.slogdet(sym(A))[1])(A)
    np.testing.assert_allclose(np.asarray(g), rl, atol=1e-12 * np.abs(rl).max())
    potri = rule(op_potri.POTRI, op_potri.POTRI.options(), Ar)
    g = jax.jit(jax.grad(lambda A: jnp.sum(jnp.abs(potri(A)[0]) ** 2)))(Ar)
    ri = jax.grad(lambda A: jnp.sum(jnp.abs(jnp.linalg.inv(sym(A))) ** 2))(A)
    np.testing.assert_allclose(np.asarray(g), ri, atol=1e-12 * np.abs(ri).max())
    syevd = rule(op_syevd.SYEVD, op_syevd.Options(jobz=False), Hr)
    g = jax.jit(jax.grad(lambda A: syevd(A)[0][-1]))(Hr)
    rw = jax.grad(lambda A: jnp.linalg.eigvalsh(A)[-1])(H)
    np.testing.assert_allclose(np.asarray(g), rw, atol=1e-12)
    bs = on(randn(rng, (3, n, 2), np.complex128), P(None, None, None))
    potrs = rule(op_potrs.POTRS, op_potrs.Options(), Ar, bs[0])
    x = jax.jit(jax.vmap(lambda b: potrs(Ar, b)[0]))(bs)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, np.asarray(bs)), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=IDS)
def test_single_precision_grads(rng, dtype):
    """float32 / complex64: every rule keeps the dtypes (w and logdet real),
    and the gradients match jnp's float64 ones to single precision."""
    m, n = mesh(4), 8
    r = rules(m)
    A, H, b = spd(rng, n, dtype), hermitian(rng, n, dtype), randn(rng, (n, 2), dtype)
    up = lambda x: x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)  # noqa: E731
    logdet = _logdet_rule(m)
    cases = [
        (lambda A: jnp.sum(jnp.abs(r["potrs"](A, b)[0]) ** 2), A,
         lambda A: jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), up(b))) ** 2)),
        (lambda A: logdet(A, b)[1], A, lambda A: jnp.linalg.slogdet(sym(A))[1]),
        (lambda A: jnp.sum(jnp.abs(r["potri"](A)[0]) ** 2), A,
         lambda A: jnp.sum(jnp.abs(jnp.linalg.inv(sym(A))) ** 2)),
        (lambda A: r["syevd"](A)[0][-1] + jnp.sum(jnp.abs(r["syevd"](A)[1][:, 0]) ** 4), H,
         lambda A: jnp.linalg.eigh(A)[0][-1] + jnp.sum(jnp.abs(jnp.linalg.eigh(A)[1][:, 0]) ** 4)),
    ]
    for loss, X, ref in cases:
        g = jax.jit(jax.grad(loss))(X)
        assert g.dtype == np.dtype(dtype)
        e = jax.grad(ref)(up(X))
        w = np.linalg.eigvalsh(up(X))
        scale = 1 / np.diff(w).min() if X is H else np.linalg.cond(up(X)) ** 2
        np.testing.assert_allclose(np.asarray(g), e, atol=tol(dtype, n, scale) * np.abs(e).max())
