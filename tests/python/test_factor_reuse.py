"""Factor reuse (issue 16): the derivatives of potrs and its logdet factor A
once (chol_factor) and solve with that factor (chol_solve), the logdet
gradient is the inverse from it (chol_inverse). Checked here: the factor
ops against numpy, the gradients against jnp.linalg (float64, complex128,
1/2/4/8 devices, padding, Hermitian directions, first and second order),
the count of FFI calls in the compiled programs (the proof of reuse), and
failing inputs (NaN derivatives with the primal's status)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxmg
from jaxmg.rules import hermitian as ad
from jaxmg.ops import cholesky
from jaxmg.ops.potri import POTRI
from jaxmg.ops.potrs import POTRS, Options
from jaxmg.pipeline import mesh as _mesh, request as _request
from helpers import REP, ROW, mesh, put, randn, spd

CDT = [np.float64, np.complex128]
IDS = lambda d: np.dtype(d).name  # noqa: E731


def sym(A):
    return (A + jnp.conj(A).T) / 2


def tol(dtype, n, cond=1.0):
    return 200 * n * np.finfo(np.dtype(dtype)).eps * cond


def herm_dir(f):
    """f along Hermitian directions: f sees S + S^H (pass A / 2)."""
    return jax.jit(lambda S, *rest: f(S + jnp.conj(S).T, *rest))


def calls(fn, *args):
    """The jaxmg FFI calls of fn's compiled program, by op name."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    names = [re.sub(r"_(host|cuda)$", "", t)
             for t in re.findall(r'custom_call_target="jaxmg_([a-z_]+)"', text)]
    return {k: names.count(k) for k in set(names)}


def gp_loss(f):
    """A Gaussian-process style loss of (x, logdet) = f(A, b)."""
    def loss(A, b):
        x, logdet = f(A, b)
        return jnp.real(jnp.vdot(b, x)) / 2 + logdet / 2
    return loss


def gp_ref(A, b):
    S = sym(A)
    return jnp.real(jnp.vdot(b, jnp.linalg.solve(S, b))) / 2 + jnp.linalg.slogdet(S)[1] / 2


# ---------------------------------------------------------------------------
# the factor ops themselves (mesh-level cores)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n,T_A", [(4, 12, 2), (3, 10, None), (1, 7, None)], ids=str)
def test_factor_solve_inverse_match_numpy(rng, dtype, ndev, n, T_A):
    """One factor, two solves and the inverse from it,
    against numpy; logdet as slogdet. (4, 12, 2): shards padded to whole
    tiles; (3, 10): A padded to a multiple of the devices."""
    m = mesh(ndev)
    A = spd(rng, n, dtype)
    b, c = randn(rng, (n, 3), dtype), randn(rng, (n, 3), dtype)
    req = _request.normalise(POTRS, Options(), A, b, T_A=T_A, mesh=m, specs=(ROW, REP))

    @jax.jit
    def run(A, b, c):
        F, fstatus, logdet = cholesky.factor_global(req, A)
        x, s1 = cholesky.solve_global(req, F, fstatus, b)
        y, s2 = cholesky.solve_global(req, F, fstatus, c)
        inv, s3 = cholesky.inverse_global(req, F, fstatus)
        return x, y, inv, logdet, jnp.stack([fstatus, s1, s2, s3])

    x, y, inv, logdet, status = run(A, b, c)
    assert np.all(np.asarray(status) == 0)
    cond = np.linalg.cond(A)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, b), atol=tol(dtype, n, cond))
    np.testing.assert_allclose(np.asarray(y), np.linalg.solve(A, c), atol=tol(dtype, n, cond))
    np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(A),
                               atol=tol(dtype, n, cond) * np.abs(np.linalg.inv(A)).max())
    np.testing.assert_allclose(float(logdet), np.linalg.slogdet(A)[1], rtol=tol(dtype, n, cond))


def test_factor_is_checked_against_the_statics(rng):
    """The host engine keeps the factor in A's own shards, whatever the tile
    (nothing is padded), so a factor made with T_A=2 solves with T_A=3; a
    factor of another shape than the statics' plan (here one padded as
    cuSolverMg's Cholesky would be) is refused with a ValueError, not solved
    with."""
    m, n = mesh(4), 12
    A, b = spd(rng, n, np.float64), randn(rng, (n, 1), np.float64)
    req2 = _request.normalise(POTRS, Options(), A, b, T_A=2, mesh=m, specs=(ROW, REP))
    req3 = _request.normalise(POTRS, Options(), A, b, T_A=3, mesh=m, specs=(ROW, REP))
    F, fstatus, _ = jax.jit(lambda A: cholesky.factor_global(req2, A))(A)
    assert F.shape == (12, 12)  # A's own shards: no tile padding on the host
    x, status = jax.jit(lambda F, s: cholesky.solve_global(req3, F, s, b))(F, fstatus)
    assert int(status) == 0 and np.allclose(np.asarray(x), np.linalg.solve(A, b), atol=1e-12)
    padded = jnp.zeros((16, 16), F.dtype)  # shards of 3 rows padded inside to 4 (tile 2)
    with pytest.raises(ValueError, match="valid only with the tile"):
        jax.jit(lambda F, s: cholesky.solve_global(req3, F, s, b))(padded, fstatus)


def test_factor_ops_not_positive_definite(rng):
    """A failing factor: its status (the failing minor, as potrs's), and
    NaN solves and inverse carrying that status."""
    m, n = mesh(2), 6
    A, b = spd(rng, n, np.float64), randn(rng, (n, 1), np.float64)
    A[3, 3] = -5.0
    req = _request.normalise(POTRS, Options(), A, b, T_A=None, mesh=m, specs=(ROW, REP))

    @jax.jit
    def run(A):
        F, fstatus, logdet = cholesky.factor_global(req, A)
        x, s1 = cholesky.solve_global(req, F, fstatus, b)
        inv, s2 = cholesky.inverse_global(req, F, fstatus)
        return x, inv, logdet, fstatus, s1, s2

    x, inv, logdet, fstatus, s1, s2 = run(A)
    _, ref_status = jaxmg.potrs(A, b, None, m, (ROW, REP), return_status=True)
    assert int(fstatus) == int(ref_status) > 0 and int(s1) == int(s2) == int(fstatus)
    assert np.isnan(float(logdet)) and np.all(np.isnan(np.asarray(x)))
    assert np.all(np.isnan(np.asarray(inv)))


# ---------------------------------------------------------------------------
# the gradients through the public functions


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
@pytest.mark.parametrize("ndev,n", [(1, 6), (2, 8), (4, 10), (8, 16)], ids=str)
def test_grads_match_jnp(rng, dtype, ndev, n):
    """jit(grad) of a solve loss and of a Gaussian-process loss (solve and
    logdet) through jaxmg.potrs: both cotangents equal jnp's of sym(A)."""
    m = mesh(ndev)
    A, b = spd(rng, n, dtype), randn(rng, (n, 2), dtype)
    w = randn(rng, (n, 2), dtype)
    Ar = put(A, m, ROW) if n % ndev == 0 else A

    def solve_loss(A, b):
        return jnp.sum(jnp.abs(jaxmg.potrs(A, b, None, m, (ROW, REP)) - w) ** 2)

    def solve_ref(A, b):
        return jnp.sum(jnp.abs(jnp.linalg.solve(sym(A), b) - w) ** 2)

    logdet_loss = gp_loss(lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True))
    for loss, ref in ((solve_loss, solve_ref), (logdet_loss, gp_ref)):
        g = jax.jit(jax.grad(loss, argnums=(0, 1)))(Ar, b)
        r = jax.grad(ref, argnums=(0, 1))(A, b)
        scale = float(np.abs(r[0]).max())
        for got, want in zip(g, r):
            np.testing.assert_allclose(np.asarray(got), want, atol=tol(dtype, n) * scale)
        if n % ndev == 0:
            assert g[0].sharding.is_equivalent_to(jax.sharding.NamedSharding(m, ROW), 2)


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_potrs_check_grads_second_order(rng, dtype):
    m, n = mesh(4), 8
    A, b = spd(rng, n, dtype), randn(rng, (n, 2), dtype)
    f = lambda A, b: jaxmg.potrs(A, b, 2, m, (ROW, REP))  # noqa: E731
    check_grads(herm_dir(f), (A / 2, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_logdet_check_grads_second_order(rng, dtype):
    m, n = mesh(2), 6
    A, b = spd(rng, n, dtype), randn(rng, (n, 1), dtype)
    f = lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True)  # noqa: E731
    check_grads(herm_dir(f), (A / 2, b), order=2, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------
# the proof of reuse: the FFI calls of the compiled programs


def test_grad_factors_once(rng):
    """grad of a potrs loss: one chol_factor, its solves with chol_solve,
    no potrs (the primal alone keeps the fused potrs); grad of logdet: one
    chol_factor and one chol_inverse, no potri."""
    m, n = mesh(4), 16
    A, b = put(spd(rng, n, np.float64), m, ROW), randn(rng, (n, 2), np.float64)
    solve = lambda A, b: jnp.sum(jaxmg.potrs(A, b, None, m, (ROW, REP)) ** 2)  # noqa: E731
    logdet = lambda A: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True)[1]  # noqa: E731
    gp = gp_loss(lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True))

    assert calls(solve, A, b) == {"potrs": 1}
    assert calls(jax.grad(solve, argnums=(0, 1)), A, b) == {"chol_factor": 1, "chol_solve": 2}
    got = calls(jax.grad(logdet), A)
    assert got.get("chol_factor") == 1 and got.get("chol_inverse") == 1, got
    assert "potri" not in got and "potrs" not in got, got
    got = calls(jax.grad(gp, argnums=(0, 1)), A, b)
    assert got.get("chol_factor") == 1 and got.get("chol_inverse") == 1, got
    assert "potri" not in got and "potrs" not in got, got
    # forward mode likewise: one factor for the primal and its tangent
    jvp = lambda A, dA: jax.jvp(lambda A: jaxmg.potrs(A, b, None, m, (ROW, REP)), (A,), (dA,))  # noqa: E731
    assert calls(jvp, A, A) == {"chol_factor": 1, "chol_solve": 2}


def test_grad_through_shardmap_ctx_factors_once(rng):
    """potrs_shardmap_ctx inside a shard_map, with logdet: the per-shard
    rules reuse the factor too, and match jnp."""
    m, n = mesh(4), 12
    dtype = np.complex128
    A, b = spd(rng, n, dtype), randn(rng, (n, 1), dtype)

    def body(a, b):
        x, logdet, _ = jaxmg.potrs_shardmap_ctx(a, b, 3, return_logdet=True)
        return jnp.real(jnp.vdot(b, x)) / 2 + logdet[0] / 2

    loss = jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=P(), check_vma=False)
    Ar = put(A, m, ROW)
    grad = jax.grad(loss, argnums=(0, 1))
    gA, gb = jax.jit(grad)(Ar, b)
    rA, rb = jax.grad(gp_ref, argnums=(0, 1))(A, b)
    scale = float(np.abs(rA).max())
    np.testing.assert_allclose(np.asarray(gA), rA, atol=tol(dtype, n) * scale)
    np.testing.assert_allclose(np.asarray(gb), rb, atol=tol(dtype, n) * scale)
    got = calls(grad, Ar, b)
    assert got.get("chol_factor") == 1 and got.get("chol_inverse") == 1, got
    assert "potri" not in got and "potrs" not in got, got


@pytest.mark.parametrize("dtype", CDT, ids=IDS)
def test_shardmap_ctx_check_grads_second_order(rng, dtype):
    """The per-shard rules (solve and logdet) to second order."""
    m, n = mesh(2), 6
    A, b = spd(rng, n, dtype), randn(rng, (n, 1), dtype)

    def body(a, b):
        x, logdet, _ = jaxmg.potrs_shardmap_ctx(a, b, None, return_logdet=True)
        return x, logdet

    f = jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=(REP, P(None)),
                      check_vma=False)
    check_grads(herm_dir(f), (A / 2, b), order=2, modes=("fwd", "rev"))


def test_vmap_of_grad_matches_a_loop(rng):
    """vmap over b (one factor for the whole batch) and over A."""
    m, n = mesh(2), 6
    As = np.stack([spd(rng, n, np.float64) for _ in range(2)])
    bs = randn(rng, (3, n, 2), np.float64)
    loss = lambda A, b: jnp.sum(jaxmg.potrs(A, b, None, m, (ROW, REP)) ** 2)  # noqa: E731
    ref = lambda A, b: jnp.sum(jnp.linalg.solve(sym(A), b) ** 2)  # noqa: E731
    over_b = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))
    g = over_b(As[0], bs)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(g[i]), jax.grad(ref)(As[0], bs[i]), atol=1e-11)
    assert calls(jax.vmap(jax.grad(loss), in_axes=(None, 0)), As[0], bs).get("chol_factor") == 1
    g = jax.jit(jax.vmap(jax.grad(loss)))(As, bs[:2])
    for i in range(2):
        np.testing.assert_allclose(np.asarray(g[i]), jax.grad(ref)(As[i], bs[i]), atol=1e-11)
    # a batch of factors: each factor op one batched FFI call
    assert calls(jax.vmap(jax.grad(loss)), As, bs[:2]) == {"chol_factor": 1, "chol_solve": 2}


# ---------------------------------------------------------------------------
# failing inputs


@pytest.mark.parametrize("bad", ["indefinite", "nan"])
def test_failing_input_nan_grads_with_the_primal_status(rng, bad):
    """Not positive definite (status > 0) or non-finite (-1): NaN
    derivatives of the solve and of logdet, the primal's status, no error."""
    m, n = mesh(4), 8
    A, b = spd(rng, n, np.float64), randn(rng, (n, 1), np.float64)
    if bad == "indefinite":
        A[5, 5] = -50.0
    else:
        A[2, 6] = A[6, 2] = np.nan
    _, want = jaxmg.potrs(A, b, None, m, (ROW, REP), return_status=True)
    assert (int(want) > 0) if bad == "indefinite" else int(want) == -1

    def loss(A, b):
        x, logdet, status = jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True,
                                        return_status=True)
        return jnp.sum(x ** 2) + logdet, status

    (val, status), (gA, gb) = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(A, b)
    assert int(status) == int(want) and np.isnan(float(val))
    assert np.all(np.isnan(np.asarray(gA))) and np.all(np.isnan(np.asarray(gb)))


def test_rules_without_factor_ops_still_refactor(rng):
    """A core without factor ops (factored=None, as the cuSOLVERMp route
    and GPUs across processes take) keeps today's rules: potrs again per
    solve, potri for logdet."""
    m, n = mesh(2), 6
    A, b = put(spd(rng, n, np.float64), m, ROW), randn(rng, (n, 1), np.float64)
    req = _request.normalise(POTRS, Options(logdet=True), A, b, T_A=None, mesh=m,
                             specs=(ROW, REP))
    cores = _mesh.MeshCores(req)
    f = ad.potrs_logdet(cores(POTRS, req.opts), cores(POTRI, POTRI.options()), cores.lay, None)
    got = calls(jax.grad(lambda A: f(A, b)[1]), A)
    assert got.get("potri") == 1 and "chol_factor" not in got, got
    r = jax.grad(lambda A: jnp.linalg.slogdet(sym(A))[1])(np.asarray(A))
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(lambda A: f(A, b)[1]))(A)), r,
                               atol=1e-12 * np.abs(r).max())


@pytest.mark.parametrize("nprocs", [2, 3])
def test_grads_across_processes(tmp_path, nprocs):
    """One CPU device per process (the host engine's shared memory carries
    the factor out and back between the calls): grad of a Gaussian-process
    loss equals jnp's, float64 and complex128."""
    from mp_matrices import rng as mp_rng, spd as mp_spd
    from test_multiprocess import assemble, launch, ok

    codes, seen, logs = launch(tmp_path, "grads", nprocs)
    assert codes == [0] * nprocs, "\n".join(logs)
    n = 5 * nprocs
    for dt in CDT:
        A = mp_spd("A", n, dt)
        b = mp_rng("b").standard_normal((n, 1)).astype(dt)
        res = ok(seen, f"grad/{np.dtype(dt).name}")
        # b's cotangent may come back row-sharded: assemble checks copies agree
        gA, gb = assemble([p[0] for p in res], n), assemble([p[1] for p in res], n)
        rA, rb = jax.grad(gp_ref, argnums=(0, 1))(A, b)
        scale = float(np.abs(rA).max())
        np.testing.assert_allclose(gA, rA, atol=tol(dt, n) * scale)
        np.testing.assert_allclose(gb, rb, atol=tol(dt, n) * scale)
