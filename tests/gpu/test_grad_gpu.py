"""Gradients on GPUs (issue 16) through the public functions: potrs (A and
b), its logdet and syevd, through cuSolverMg ("multi") and cuSOLVER
("single"), and per shard (syevd_shardmap_ctx with V in columns,
lu_solve_shardmap_ctx inside a shard_map), against jnp.linalg on one device
in float64 / complex128; A's cotangent stays row-sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmg
from gpu_inputs import herm as _herm, hpd as _hpd, rand as _rand

ROW, REP = P("x", None), P(None, None)
DTYPES = [np.float64, np.complex128]
N = 512


def _sym(A):
    return (A + jnp.conj(A).T) / 2


def _mesh(gpus):
    return Mesh(np.array(gpus), ("x",))


def _rows(mesh, a):
    return jax.device_put(a, NamedSharding(mesh, ROW))


def _one_gpu(gpus, *xs):
    return [jax.device_put(x, gpus[0]) for x in xs]


def _close(got, ref, rel):
    got, ref = np.asarray(got), np.asarray(ref)
    assert np.abs(got - ref).max() <= rel * np.abs(ref).max(), np.abs(got - ref).max()


@pytest.mark.parametrize("dispatch", ["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_potrs_grad_gpu(gpus, dtype, dispatch):
    m = _mesh(gpus)
    rng = np.random.default_rng(160)
    A, b, w = _hpd(rng, N, dtype), _rand(rng, (N, 4), dtype), _rand(rng, (N, 4), dtype)
    solve = lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), dispatch=dispatch)  # noqa: E731
    loss = lambda A, b: jnp.sum(jnp.abs(solve(A, b) - w) ** 2)  # noqa: E731
    ref = lambda A, b: jnp.sum(jnp.abs(jnp.linalg.solve(_sym(A), b) - w) ** 2)  # noqa: E731
    gA, gb = jax.jit(jax.grad(loss, (0, 1)))(_rows(m, A), b)
    rA, rb = jax.jit(jax.grad(ref, (0, 1)))(*_one_gpu(gpus, A, b))
    _close(gA, rA, 1e-9)
    _close(gb, rb, 1e-9)
    assert gA.sharding.is_equivalent_to(NamedSharding(m, ROW), 2), gA.sharding


@pytest.mark.parametrize("dtype", DTYPES)
def test_logdet_grad_gpu(gpus, dtype):
    m = _mesh(gpus)
    rng = np.random.default_rng(161)
    A, b = _hpd(rng, N, dtype), _rand(rng, (N, 1), dtype)
    def loss(A, b):
        x, logdet = jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True)
        return jnp.real(jnp.vdot(b, x)) / 2 + logdet / 2

    def ref(A, b):
        S = _sym(A)
        return jnp.real(jnp.vdot(b, jnp.linalg.solve(S, b))) / 2 + jnp.linalg.slogdet(S)[1] / 2

    gA, gb = jax.jit(jax.grad(loss, (0, 1)))(_rows(m, A), b)
    rA, rb = jax.jit(jax.grad(ref, (0, 1)))(*_one_gpu(gpus, A, b))
    _close(gA, rA, 1e-9)
    _close(gb, rb, 1e-9)
    assert gA.sharding.is_equivalent_to(NamedSharding(m, ROW), 2), gA.sharding


@pytest.mark.parametrize("dtype", DTYPES)
def test_syevd_grad_gpu(gpus, dtype):
    """Eigenvalues and |V|^2 (phase invariant), against jnp.linalg.eigh."""
    m = _mesh(gpus)
    rng = np.random.default_rng(162)
    n = 256
    A = _herm(rng, n, dtype)
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))
    loss = lambda w, V: jnp.sum(cw * w) + jnp.sum(cv * jnp.abs(V) ** 2)  # noqa: E731
    g = jax.jit(jax.grad(lambda A: loss(*jaxmg.syevd(A, None, m, (ROW,)))))(_rows(m, A))
    r = jax.jit(jax.grad(lambda A: loss(*jnp.linalg.eigh(A))))(*_one_gpu(gpus, A))
    gap = np.diff(np.linalg.eigvalsh(A)).min()
    _close(g, r, 1e-10 / gap)
    assert g.sharding.is_equivalent_to(NamedSharding(m, ROW), 2), g.sharding


def _smap(body, m, in_specs):
    return jax.shard_map(body, mesh=m, in_specs=in_specs, out_specs=P(), check_vma=False)


def _my_block(c, axis):
    nloc = c.shape[axis] // jax.lax.axis_size("x")
    return jax.lax.dynamic_slice_in_dim(c, jax.lax.axis_index("x") * nloc, nloc, axis=axis)


@pytest.mark.parametrize("dtype", DTYPES)
def test_syevd_shardmap_ctx_grad_gpu(gpus, dtype):
    """Per shard, V in columns (0.0.x's layout): eigenvalues and |V|^2."""
    m = _mesh(gpus)
    rng = np.random.default_rng(163)
    n = 256
    A = _herm(rng, n, dtype)
    cw, cv = rng.standard_normal(n), rng.standard_normal((n, n))

    def body(a):
        w, V, _ = jaxmg.syevd_shardmap_ctx(a, None)
        return jnp.sum(cw * w) + jax.lax.psum(jnp.sum(_my_block(cv, 1) * jnp.abs(V) ** 2), "x")

    g = jax.jit(jax.grad(_smap(body, m, (ROW,))))(_rows(m, A))
    loss = lambda w, V: jnp.sum(cw * w) + jnp.sum(cv * jnp.abs(V) ** 2)  # noqa: E731
    r = jax.jit(jax.grad(lambda A: loss(*jnp.linalg.eigh(A))))(*_one_gpu(gpus, A))
    _close(g, r, 1e-10 / np.diff(np.linalg.eigvalsh(A)).min())


@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_solve_shardmap_ctx_grad_gpu(gpus, dtype):
    m = _mesh(gpus)
    rng = np.random.default_rng(164)
    A, b = _rand(rng, (N, N), dtype) + 4 * np.sqrt(N) * np.eye(N), _rand(rng, (N, 2), dtype)

    def body(a, b):
        return jnp.sum(jnp.abs(jaxmg.lu_solve_shardmap_ctx(a, b, None)[0]) ** 2)

    gA, gb = jax.jit(jax.grad(_smap(body, m, (ROW, REP)), (0, 1)))(_rows(m, A), b)
    ref = lambda A, b: jnp.sum(jnp.abs(jnp.linalg.solve(A, b)) ** 2)  # noqa: E731
    rA, rb = jax.jit(jax.grad(ref, (0, 1)))(*_one_gpu(gpus, A, b))
    _close(gA, rA, 1e-9)
    _close(gb, rb, 1e-9)


# ---------------------------------------------------------------------------
# factor reuse (issue 16): one factorization per derivative


def _ffi_calls(fn, *args):
    import re

    text = jax.jit(fn).lower(*args).compile().as_text()
    names = re.findall(r'custom_call_target="jaxmg_([a-z_]+)"', text)
    return {k: names.count(k) for k in set(names)}


@pytest.mark.parametrize("dispatch", ["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_factor_ops_gpu(gpus, dtype, dispatch):
    """The factor ops on both GPU paths against numpy: one factor, a
    solve, the inverse and logdet from it. N = 500 with T_A = 64: shards
    padded to whole tiles; the cuSolverMg factor is of the tile-reordered
    matrix, which the solve and the inverse must undo."""
    from jaxmg.ops import cholesky
    from jaxmg.ops.potrs import POTRS, Options
    from jaxmg.pipeline import request as _request

    m = _mesh(gpus)
    rng = np.random.default_rng(163)
    n = 500 - 500 % len(gpus)
    A, b = _hpd(rng, n, dtype), _rand(rng, (n, 3), dtype)
    req = _request.normalise(POTRS, Options(), A, b, T_A=64, mesh=m, specs=(ROW, REP),
                             dispatch=dispatch)

    def run(A, b):
        F, fstatus, logdet = cholesky.factor_global(req, A)
        x, s1 = cholesky.solve_global(req, F, fstatus, b)
        inv, s2 = cholesky.inverse_global(req, F, fstatus)
        return x, inv, logdet, jnp.stack([fstatus, s1, s2])

    x, inv, logdet, status = jax.jit(run)(_rows(m, A), b)
    assert np.all(np.asarray(status) == 0), status
    _close(x, np.linalg.solve(A, b), 1e-10)
    _close(inv, np.linalg.inv(A), 1e-10)
    assert abs(float(logdet) - np.linalg.slogdet(A)[1]) <= 1e-10 * n


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_grad_factors_once_gpu(gpus, dispatch):
    """grad of a solve and of a Gaussian-process loss: one chol_factor, no
    second potrs, no potri; the gradients as jnp's."""
    m = _mesh(gpus)
    rng = np.random.default_rng(164)
    A, b = _hpd(rng, N, np.float64), _rand(rng, (N, 1), np.float64)
    kw = dict(dispatch=dispatch)

    def gp(A, b):
        x, logdet = jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True, **kw)
        return jnp.vdot(b, x) / 2 + logdet / 2

    def gp_ref(A, b):
        S = _sym(A)
        return jnp.vdot(b, jnp.linalg.solve(S, b)) / 2 + jnp.linalg.slogdet(S)[1] / 2

    solve = lambda A, b: jnp.sum(jaxmg.potrs(A, b, None, m, (ROW, REP), **kw) ** 2)  # noqa: E731
    Ar = _rows(m, A)
    got = _ffi_calls(jax.grad(solve, (0, 1)), Ar, b)
    assert got == {"chol_factor": 1, "chol_solve": 2}, got
    got = _ffi_calls(jax.grad(gp, (0, 1)), Ar, b)
    assert got.get("chol_factor") == 1 and got.get("chol_inverse") == 1, got
    assert "potrs" not in got and "potri" not in got, got
    gA, gb = jax.jit(jax.grad(gp, (0, 1)))(Ar, b)
    rA, rb = jax.jit(jax.grad(gp_ref, (0, 1)))(*_one_gpu(gpus, A, b))
    _close(gA, rA, 1e-9)
    _close(gb, rb, 1e-9)


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_grad_not_positive_definite_gpu(gpus, dispatch):
    """A failing factor on the GPU: the primal's status, NaN gradients."""
    m = _mesh(gpus)
    rng = np.random.default_rng(165)
    A, b = _hpd(rng, N, np.float64), _rand(rng, (N, 1), np.float64)
    A[300, 300] = -50.0

    def loss(A, b):
        x, logdet, status = jaxmg.potrs(A, b, None, m, (ROW, REP), return_logdet=True,
                                        return_status=True, dispatch=dispatch)
        return jnp.sum(x ** 2) + logdet, status

    _, want = jaxmg.potrs(A, b, None, m, (ROW, REP), return_status=True, dispatch=dispatch)
    (val, status), (gA, gb) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(_rows(m, A), b)
    assert int(status) == int(want) > 0
    assert np.isnan(float(val)) and np.all(np.isnan(np.asarray(gA))) and np.all(np.isnan(np.asarray(gb)))
