"""Every derivative rule of an op with a right-hand side (potrs, potrs with
logdet, lu_solve, least_squares), in every form (the public function, the
*_shardmap_ctx forms on global arrays and inside the caller's shard_map,
and potrs's rules that refactor, which GPUs across processes use), with
every b shape the primal takes: (N,), (N, 1) and (N, K). Gradients in A
and b and JVPs against jnp in float64 and complex128, and
jax.test_util.check_grads (finite differences, forward and reverse)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxmg
from jaxmg.rules import hermitian as ad
from helpers import REP, ROW, mesh, put, randn, spd

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731
N, M, K = 8, 12, 3
RHS = {"vector": (), "one": (1,), "many": (K,)}
NDEV = 4


def _H(x):
    return jnp.conj(x).T


def _sym(A):
    return (A + _H(A)) / 2


def _rep(ndim):
    return P(*((None,) * ndim))


# ---------------------------------------------------------------------------
# the problems and their jnp references: fn(A, b) -> a tuple of outputs


def _matrix(op, rng, dtype):
    if op.startswith("potrs"):
        return spd(rng, N, dtype)
    if op == "lu_solve":
        return randn(rng, (N, N), dtype) + 3 * np.eye(N)
    return randn(rng, (M, N), dtype) + 2 * np.eye(M, N)


def _reference(op):
    if op == "potrs":
        return lambda A, b: (jnp.linalg.solve(_sym(A), b),)
    if op == "potrs_logdet":
        return lambda A, b: (jnp.linalg.solve(_sym(A), b), jnp.linalg.slogdet(_sym(A))[1])
    if op == "lu_solve":
        return lambda A, b: (jnp.linalg.solve(A, b),)
    return lambda A, b: (jnp.linalg.solve(_H(A) @ A, _H(A) @ b),)


# ---------------------------------------------------------------------------
# jaxmg's forms, on global arrays (A in rows, b replicated)


def _mesh_form(op, m):
    if op == "potrs":
        return lambda A, b: (jaxmg.potrs(A, b, None, m, (ROW, REP)),)
    if op == "potrs_logdet":
        return lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True)
    if op == "lu_solve":
        return lambda A, b: (jaxmg.lu_solve(A, b, None, m, ROW),)
    return lambda A, b: (jaxmg.least_squares(A, b, None, m, ROW),)


def _ctx_global_form(op, m):
    if op == "potrs":
        return lambda A, b: (jaxmg.potrs_shardmap_ctx(A, b, None, m, ROW)[1],)
    if op == "potrs_logdet":
        return lambda A, b: jaxmg.potrs_shardmap_ctx(A, b, None, m, ROW, return_logdet=True)[1:3]
    if op == "lu_solve":
        return lambda A, b: (jaxmg.lu_solve_shardmap_ctx(A, b, None, m, ROW)[1],)
    return lambda A, b: (jaxmg.least_squares_shardmap_ctx(A, b, None, m, ROW)[2],)


def _local_body(op):
    """The per-shard call: (a, b) -> its outputs without the status."""
    if op == "potrs":
        return lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, None)[:1]
    if op == "potrs_logdet":
        return lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, None, return_logdet=True)[:2]
    if op == "lu_solve":
        return lambda a, b: jaxmg.lu_solve_shardmap_ctx(a, b, None)[:1]
    return lambda a, b: jaxmg.least_squares_shardmap_ctx(a, b, None)[:1]


def _in_shard_map(body, m, op):
    """body(a, b) inside a shard_map over A's rows; logdet (1,) -> ()."""

    def f(A, b):
        outs = jax.shard_map(body, mesh=m, in_specs=(ROW, _rep(b.ndim)),
                             out_specs=(_rep(b.ndim),) + ((P(None),) if op == "potrs_logdet"
                                                          else ()),
                             check_vma=False)(A, b)
        return outs[:1] + tuple(o[0] for o in outs[1:])

    return f


def _ctx_local_form(op, m):
    return _in_shard_map(_local_body(op), m, op)


def _refactor_form(op, m):
    """potrs's rules without the factor path (ad.potrs / ad.potrs_logdet
    with factored=None), at mesh level."""
    lay = ad.Layout(("x",), m)
    if op == "potrs":
        core = lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_status=True)  # noqa: E731
        return lambda A, b: ad.potrs(core, lay)(A, b)[:1]

    def core(A, b):
        return jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True, return_status=True)

    potri_core = lambda A: jaxmg.potri(A, None, m, (ROW,), return_status=True)  # noqa: E731
    return lambda A, b: ad.potrs_logdet(core, potri_core, lay)(A, b)[:2]


def _refactor_local_form(op, m):
    """The same per shard (the rules without a Factored)."""
    logdet = op == "potrs_logdet"
    lay = ad.Layout(("x",))

    def potri_body(a):
        return jaxmg.potri_shardmap_ctx(a, None)

    def local(a, b):
        if logdet:
            x, ld, _ = ad.potrs_logdet(
                lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, None, return_logdet=True),
                potri_body, lay)(a, b)
            return (x, ld)
        x, _ = ad.potrs(lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, None), lay)(a, b)
        return (x,)

    return _in_shard_map(local, m, op)


FORMS = {"mesh": _mesh_form, "ctx_global": _ctx_global_form, "ctx_local": _ctx_local_form,
         "refactor": _refactor_form, "refactor_local": _refactor_local_form}
CASES = [(op, form) for op in ("potrs", "potrs_logdet", "lu_solve", "least_squares")
         for form in FORMS if op.startswith("potrs") or not form.startswith("refactor")]


def _close(got, ref, rel=1e-9):
    got, ref = np.asarray(got), np.asarray(ref)
    np.testing.assert_allclose(got, ref, atol=rel * max(np.abs(ref).max(), 1e-300))


def _loss(fn, ws):
    """A real scalar of every output, weighted by ws."""
    return lambda A, b: sum(jnp.real(jnp.sum(w * o)) for w, o in zip(ws, fn(A, b)))


# Each shape of b in one dtype, each op and form in both (the dtypes take
# the same paths whatever b's shape).
RHS_DTYPES = [("vector", np.float64), ("one", np.complex128), ("many", np.complex128),
              ("many", np.float64)]


@pytest.mark.parametrize("rhs,dtype", RHS_DTYPES, ids=lambda c: IDS(c) if not isinstance(c, str) else c)
@pytest.mark.parametrize("op,form", CASES, ids=lambda c: str(c))
def test_grad_and_jvp_every_rhs_shape(rng, op, form, rhs, dtype):
    m = mesh(NDEV)
    A = _matrix(op, rng, dtype)
    b = randn(rng, (A.shape[0],) + RHS[rhs], dtype)
    fn, ref = FORMS[form](op, m), _reference(op)
    outs = ref(A, b)
    ws = [randn(rng, o.shape, dtype) for o in outs]

    got = jax.jit(jax.grad(_loss(fn, ws), (0, 1)))(put(A, m, ROW), b)
    want = jax.grad(_loss(ref, ws), (0, 1))(A, b)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape
        _close(g_, w_)

    dA, db = randn(rng, A.shape, dtype), randn(rng, b.shape, dtype)
    primal, tangent = jax.jit(lambda A, b, dA, db: jax.jvp(fn, (A, b), (dA, db)))(
        put(A, m, ROW), b, dA, db)
    rp, rt = jax.jvp(ref, (A, b), (dA, db))
    for p_, t_, rp_, rt_ in zip(primal, tangent, rp, rt):
        assert p_.shape == rp_.shape and t_.shape == rt_.shape
        _close(p_, rp_)
        _close(t_, rt_)


@pytest.mark.parametrize("rhs", list(RHS), ids=str)
@pytest.mark.parametrize("op,form", CASES, ids=lambda c: str(c))
def test_check_grads_every_rhs_shape(rng, op, form, rhs):
    """Finite differences, complex128. The potrs forms read one triangle of
    A, so they are perturbed along Hermitian directions (S + S^H)."""
    m = mesh(NDEV)
    dtype = np.complex128
    A = _matrix(op, rng, dtype)
    b = randn(rng, (A.shape[0],) + RHS[rhs], dtype)
    fn = FORMS[form](op, m)
    if op.startswith("potrs"):
        f = lambda S, b: fn(S + _H(S), b)  # noqa: E731
        A = A / 2
    else:
        f = fn
    check_grads(jax.jit(f), (A, b), order=1, modes=("fwd", "rev"))
