"""eigh_generalized / sygvd: A x = lambda B x for Hermitian A and Hermitian
positive definite B, against scipy.linalg.eigh(a, b) in float64 on fresh
random inputs: eigenvalues ascending, A V = B V diag(w), V^H B V = I, every
dtype, device counts that do not divide N, ill-conditioned B, the status of
a B that is not positive definite, bad input, every call form, derivatives
in A and B (check_grads and a reference through the Cholesky reduction),
vmap as one FFI call, and two processes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

import jaxmg
from helpers import (DTYPES, REP, ROW, eps, hermitian, is_complex, mesh, put, randn, real_dtype,
                     spd, unitary, up)

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731


def pencil(rng, n, dtype, cond_b=None):
    """A random Hermitian A and a Hermitian positive definite B (condition
    number cond_b if given)."""
    A = hermitian(rng, n, dtype)
    if cond_b is None:
        return A, spd(rng, n, dtype)
    Q = unitary(rng, n, np.complex128 if is_complex(dtype) else np.float64)
    B = (Q * np.logspace(0, -np.log10(cond_b), n)) @ Q.conj().T
    return A, ((B + B.conj().T) / 2).astype(dtype)


def check_pencil(A, B, w, V, dtype, c=30.0):
    """w against scipy's, the residual ||A V - B V W|| / ((||A|| + ||B|| max|w|) ||V||)
    and ||V^H B V - I||, each within c n eps of the dtype (times B's
    condition number where the problem scales with it: the reduction
    C = L^-1 A L^-H and V = L^-H Q go through B's factor)."""
    A, B = up(A), up(B)
    n, e = A.shape[0], eps(dtype)
    w = np.asarray(w)
    assert w.shape == (n,) and w.dtype == real_dtype(dtype), (w.shape, w.dtype)
    w = w.astype(np.float64)
    ref = scipy.linalg.eigh(A, B, eigvals_only=True)
    cond = np.linalg.cond(B)
    an, bn = np.linalg.norm(A, 2), np.linalg.norm(B, 2)
    scale = an + bn * np.abs(ref).max()
    assert np.all(np.diff(w) >= -c * n * e * scale), "eigenvalues not ascending"
    err = np.abs(w - ref).max()
    assert err <= c * n * e * scale * cond / bn, (err, c * n * e * scale * cond / bn)
    if V is None:
        return
    V = np.asarray(V)
    assert V.shape == (n, n) and V.dtype == np.dtype(dtype), (V.shape, V.dtype)
    V = up(V)
    res = np.linalg.norm(A @ V - B @ V * w) / (scale * np.linalg.norm(V))
    assert res <= c * n * e, (res, c * n * e)
    orth = np.linalg.norm(V.conj().T @ B @ V - np.eye(n))
    assert orth <= c * n * e * cond, (orth, c * n * e * cond)


CASES = [
    (1, 7, 3),
    (2, 24, 5),
    (3, 30, 4),
    (4, 13, 2),    # N not divisible by the device count: padded at the end
    (8, 64, 3),
    (8, 21, None),  # 21 over 8 devices, automatic tile
]


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("ndev,n,T_A", CASES, ids=str)
def test_matches_scipy(rng, dtype, ndev, n, T_A):
    m = mesh(ndev)
    A, B = pencil(rng, n, dtype)
    w, V, status = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), T_A, m, (ROW,),
                                          return_status=True)
    assert int(status) == 0
    check_pencil(A, B, w, V, dtype)


def test_complex_is_not_conjugated(rng):
    """Genuinely complex A and B: the pencil's equation fails for conj(V)."""
    m, n = mesh(4), 16
    A, B = pencil(rng, n, np.complex128)
    w, V = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,))
    V, w = up(V), np.asarray(w)
    assert np.linalg.norm(A @ V - B @ V * w) < 1e-9 * np.linalg.norm(A)
    assert np.linalg.norm(A @ V.conj() - B @ V.conj() * w) > 1e-3


@pytest.mark.parametrize("cond_b", [1e6, 1e10])
def test_ill_conditioned_b(rng, cond_b):
    m, n = mesh(4), 22
    A, B = pencil(rng, n, np.float64, cond_b)
    assert np.linalg.cond(B) > cond_b / 10
    w, V = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,))
    check_pencil(A, B, w, V, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=IDS)
def test_values_only(rng, dtype):
    m, n = mesh(3), 10
    A, B = pencil(rng, n, dtype)
    w = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,),
                               return_eigenvectors=False)
    assert not isinstance(w, tuple)
    check_pencil(A, B, w, None, dtype)
    w2, status = jaxmg.sygvd(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,),
                             return_eigenvectors=False, return_status=True)
    assert int(status) == 0
    np.testing.assert_array_equal(np.asarray(w2), np.asarray(w))


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("ndev,n,k", [(4, 13, 6), (2, 8, 1), (3, 9, 9)], ids=str)
def test_b_not_positive_definite(rng, dtype, ndev, n, k):
    """B's leading minor k not positive definite (the first k - 1 are):
    status k, as LAPACK's info n + k maps, and NaN outputs."""
    m = mesh(ndev)
    A, B = pencil(rng, n, dtype)
    B = B.copy()
    B[k - 1, k - 1] = -10 * np.abs(B).sum()
    w, V, status = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,),
                                          return_status=True)
    assert int(status) == k
    assert np.all(np.isnan(np.asarray(w))) and np.all(np.isnan(up(V)))


def test_non_finite_input(rng):
    m, n = mesh(4), 12
    A, B = pencil(rng, n, np.float64)
    for X, Y in ((np.where(np.eye(n) > 0, np.nan, A), B), (A, np.where(np.eye(n) > 0, np.inf, B))):
        w, V, status = jaxmg.eigh_generalized(put(X, m, ROW), put(Y, m, ROW), 2, m, (ROW,),
                                              return_status=True)
        assert int(status) == -1
        assert np.all(np.isnan(np.asarray(w))) and np.all(np.isnan(np.asarray(V)))


def test_status_mapping():
    """LAPACK's info to jaxmg's status: n + k -> k (B's minor), 1..n ->
    n + info (no convergence), 0 -> 0."""
    from jaxmg.ops.eigh_generalized import status_of

    got = np.asarray(status_of(jnp.array([0, 3, 10, 11, 17]), 10))
    np.testing.assert_array_equal(got, [0, 13, 20, 1, 7])


def test_reads_the_upper_triangles(rng):
    """Only the upper triangles are read (as syevd): garbage below the
    diagonal of A and B changes nothing."""
    m, n = mesh(2), 10
    A, B = pencil(rng, n, np.complex128)
    low = np.tril(np.ones((n, n), bool), -1)
    w, V = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,))
    w2, V2 = jaxmg.eigh_generalized(put(np.where(low, 7.0, A), m, ROW),
                                    put(np.where(low, -3.0, B), m, ROW), 2, m, (ROW,))
    np.testing.assert_allclose(np.asarray(w2), np.asarray(w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.abs(up(V2)), np.abs(up(V)), atol=1e-10)


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("case", ["shape", "dtype", "nonsquare", "multi", "mp", "local"])
def test_bad_input_is_a_value_error(rng, case):
    m, n = mesh(2), 8
    A, B = pencil(rng, n, np.float64)
    kw = {}
    if case == "shape":
        B = spd(rng, n + 2, np.float64)
    elif case == "dtype":
        B = B.astype(np.float32)
    elif case == "nonsquare":
        A, B = A[:, :6], B[:, :6]
    elif case in ("multi", "mp"):
        kw = dict(dispatch=case)
    if case == "local":
        # inside a shard_map: shards of different shapes
        f = jax.shard_map(lambda a, b: jaxmg.eigh_generalized_shardmap_ctx(a, b[:, :4], 2),
                          mesh=m, in_specs=(ROW, ROW), out_specs=P(None), check_vma=False)
        with pytest.raises(ValueError, match="one shape and dtype"):
            f(put(A, m, ROW), put(B, m, ROW))
        return
    with pytest.raises(ValueError):
        jaxmg.eigh_generalized(jnp.asarray(A), jnp.asarray(B), 2, m, (ROW,), **kw)


# ---------------------------------------------------------------------------
# call forms


def test_call_forms(rng):
    """0.0.x's explicit mesh and in_specs, 1.4's inferred mesh and spec,
    matrix_specs, the context mesh, a 2-D mesh's axis, jit, donate, and
    B in another layout than A's."""
    n = 12
    A, B = pencil(rng, n, np.complex64)
    m = mesh(4)
    ref = jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, m, (ROW,))
    check_pencil(A, B, *ref, np.complex64)
    outs = [
        jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2),
        jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, REP), 2, m, matrix_specs=ROW),
        jax.jit(lambda a, b: jaxmg.sygvd(a, b, None))(put(A, m, ROW), put(B, m, ROW)),
        jaxmg.eigh_generalized(put(A, m, ROW), put(B, m, ROW), 2, donate=True),
    ]
    with jax.set_mesh(m):
        outs.append(jaxmg.eigh_generalized(jnp.asarray(A), jnp.asarray(B), 2))
    m2 = jax.make_mesh((2, 2), ("x", "y"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    outs.append(jaxmg.eigh_generalized(put(A, m2, P("x", "y")), put(B, m2, P("x", "y")), 2))
    for w, V in outs:
        check_pencil(A, B, w, V, np.complex64)
    w2, V2 = outs[-1]
    assert V2.sharding.is_equivalent_to(NamedSharding(m2, P("x", "y")), 2), V2.sharding


def test_empty(rng):
    m = mesh(2)
    w, V, status = jaxmg.eigh_generalized(jnp.zeros((0, 0)), jnp.zeros((0, 0)), 2, m, (ROW,),
                                          return_status=True)
    assert w.shape == (0,) and V.shape == (0, 0) and int(status) == 0


@pytest.mark.parametrize("v_layout", ["cols", "rows"])
def test_ctx_inside_shard_map(rng, v_layout):
    m, n = mesh(4), 16
    A, B = pencil(rng, n, np.complex128)
    vspec = P(None, "x") if v_layout == "cols" else ROW

    def body(a, b):
        return jaxmg.eigh_generalized_shardmap_ctx(a, b, 2, v_layout=v_layout)

    f = jax.jit(jax.shard_map(body, mesh=m, in_specs=(ROW, ROW),
                              out_specs=(P(None), vspec, P(None)), check_vma=False))
    w, V, status = f(put(A, m, ROW), put(B, m, ROW))
    assert np.asarray(status).tolist() == [0]
    check_pencil(A, B, w, V, np.complex128)
    g = jax.shard_map(lambda a, b: jaxmg.eigh_generalized_shardmap_ctx(
        a, b, 2, return_eigenvectors=False), mesh=m, in_specs=(ROW, ROW),
        out_specs=(P(None), P(None)), check_vma=False)
    w2, _ = g(put(A, m, ROW), put(B, m, ROW))
    check_pencil(A, B, w2, None, np.complex128)


def test_ctx_outside_shard_map(rng):
    m, n = mesh(4), 14
    A, B = pencil(rng, n, np.float64)
    a_work, b_work, w, V, status = jaxmg.eigh_generalized_shardmap_ctx(
        put(A, m, ROW), put(B, m, ROW), 2, m, ROW)
    assert int(status) == 0
    check_pencil(A, B, w, V, np.float64)
    np.testing.assert_array_equal(np.asarray(a_work), A)
    np.testing.assert_array_equal(np.asarray(b_work), B)
    out = jaxmg.eigh_generalized_shardmap_ctx(put(A, m, ROW), put(B, m, ROW), 2,
                                              return_eigenvectors=False)
    assert len(out) == 4
    check_pencil(A, B, out[2], None, np.float64)


# ---------------------------------------------------------------------------
# derivatives


def sym(A):
    return (A + jnp.conj(A).T) / 2


def reference(A, B):
    """The pencil through the Cholesky reduction, in jnp: w and V of
    C = L^-1 A L^-H, V = L^-H Q."""
    L = jnp.linalg.cholesky(B)
    Li = jax.scipy.linalg.solve_triangular(L, jnp.eye(A.shape[0], dtype=A.dtype), lower=True)
    w, Q = jnp.linalg.eigh(Li @ A @ jnp.conj(Li).T)
    return w, jnp.conj(Li).T @ Q


def loss_of(rng, n):
    """A loss of w and of |V|^2 (eigenvector phase invariant)."""
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))
    return lambda w, V: jnp.sum(cw * w) + jnp.sum(cv * jnp.abs(V) ** 2)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n", [(4, 8), (3, 7)], ids=str)
def test_grad_matches_the_reduction(rng, dtype, ndev, n):
    m = mesh(ndev)
    A, B = pencil(rng, n, dtype)
    loss = loss_of(rng, n)
    f = lambda A, B: loss(*jaxmg.eigh_generalized(sym(A), sym(B), None, m, (ROW,)))  # noqa: E731
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(put(A, m, ROW), put(B, m, ROW))
    r = jax.grad(lambda A, B: loss(*reference(sym(A), sym(B))), argnums=(0, 1))(A, B)
    gaps = np.diff(scipy.linalg.eigh(up(A), up(B), eigvals_only=True)).min()
    for got, want in zip(g, r):
        np.testing.assert_allclose(np.asarray(got), want,
                                   atol=1e-9 / gaps * np.abs(want).max())


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_check_grads(rng, dtype):
    """First order, both modes, of w and |V|^2 in A and B; second order of
    the eigenvalues alone (along Hermitian directions: f sees S + S^H)."""
    m, n = mesh(4), 8
    A, B = pencil(rng, n, dtype)

    def wv(S, T):
        w, V = jaxmg.eigh_generalized(S + jnp.conj(S).T, T + jnp.conj(T).T, 2, m, (ROW,))
        return w, jnp.abs(V) ** 2

    def values(S, T):
        return jaxmg.eigh_generalized(S + jnp.conj(S).T, T + jnp.conj(T).T, 2, m, (ROW,),
                                      return_eigenvectors=False)

    # Differences of eigenvectors (1 / gap) carry ~1e-5 of error at
    # check_grads' step; test_grad_matches_the_reduction is the tight check.
    kw = dict(modes=("fwd", "rev"), atol=1e-4, rtol=1e-4)
    check_grads(jax.jit(wv), (A / 2, B / 2), order=1, **kw)
    check_grads(jax.jit(values), (A / 2, B / 2), order=2, **kw)


def test_jvp_against_finite_differences(rng):
    """Tangents of w and of V (aligned in phase: the rule's gauge keeps
    diag(V^H B dV) real) against central differences."""
    m, n = mesh(2), 6
    A, B = pencil(rng, n, np.complex128)
    dA, dB = hermitian(rng, n, np.complex128), hermitian(rng, n, np.complex128)
    f = lambda A, B: jaxmg.eigh_generalized(A, B, 2, m, (ROW,))  # noqa: E731
    (w, V), (dw, dV) = jax.jit(lambda *x: jax.jvp(f, x[:2], x[2:]))(A, B, dA, dB)
    h = 1e-6
    (wp, Vp), (wm, Vm) = f(A + h * dA, B + h * dB), f(A - h * dA, B - h * dB)
    V, Vp, Vm = up(V), up(Vp), up(Vm)
    Bn = up(B)
    # each perturbed V's columns rotated to V's phase (the B inner product)
    Vp = Vp * np.exp(-1j * np.angle(np.sum(np.conj(V) * (Bn @ Vp), axis=0)))
    Vm = Vm * np.exp(-1j * np.angle(np.sum(np.conj(V) * (Bn @ Vm), axis=0)))
    np.testing.assert_allclose(np.asarray(dw), (np.asarray(wp) - np.asarray(wm)) / (2 * h),
                               atol=1e-6 * np.abs(np.asarray(dw)).max())
    np.testing.assert_allclose(up(dV), (Vp - Vm) / (2 * h), atol=1e-5 * np.abs(up(dV)).max())


def test_grad_inside_shard_map(rng):
    """The per-shard form (V in columns, as 0.0.x) differentiates too."""
    m, n = mesh(4), 8
    A, B = pencil(rng, n, np.float64)
    loss = loss_of(rng, n)

    def per_shard(a, b):
        w, v, _ = jaxmg.eigh_generalized_shardmap_ctx(a, b, 2)
        return w, v

    sm = jax.shard_map(per_shard, mesh=m, in_specs=(ROW, ROW), out_specs=(P(None), P(None, "x")),
                       check_vma=False)
    g = jax.jit(jax.grad(lambda A, B: loss(*sm(sym(A), sym(B))), argnums=(0, 1)))(
        put(A, m, ROW), put(B, m, ROW))
    r = jax.grad(lambda A, B: loss(*reference(sym(A), sym(B))), argnums=(0, 1))(A, B)
    for got, want in zip(g, r):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-8 * np.abs(want).max())


# ---------------------------------------------------------------------------
# vmap


@pytest.mark.parametrize("in_axes", [(0, 0), (0, None), (None, 0)], ids=str)
def test_vmap_is_one_call(rng, in_axes):
    m, n, k = mesh(4), 9, 3
    pairs = [pencil(rng, n, np.complex128) for _ in range(k)]
    As, Bs = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    args = [X if ax == 0 else X[0] for X, ax in zip((As, Bs), in_axes)]
    f = lambda A, B: jaxmg.eigh_generalized(A, B, 2, m, (ROW,), return_status=True)  # noqa: E731
    text = jax.jit(jax.vmap(f, in_axes)).lower(*args).as_text()
    assert text.count("jaxmg_sygvd") == 1 and "stablehlo.while" not in text
    w, V, status = jax.vmap(f, in_axes)(*args)
    assert np.asarray(status).tolist() == [0] * k
    for i in range(k):
        A = As[i] if in_axes[0] == 0 else As[0]
        B = Bs[i] if in_axes[1] == 0 else Bs[0]
        check_pencil(A, B, w[i], V[i], np.complex128)


# ---------------------------------------------------------------------------
# two processes


def test_two_processes(tmp_path):
    """One CPU process per device (mp_worker.py, scenario "sygvd"): the host
    engine carries B's shards through its shared memory."""
    from mp_matrices import spd as mspd, sym as msym
    from test_multiprocess import assemble, launch, ok, replicas

    codes, seen, logs = launch(tmp_path, "sygvd", 2)
    assert codes == [0, 0], "\n".join(logs)
    n = 10
    res = ok(seen, "sygvd")
    w, V = replicas([p[0] for p in res]), assemble([p[1] for p in res], n)
    check_pencil(msym("H", n), mspd("B", n), w, V, np.float64)
