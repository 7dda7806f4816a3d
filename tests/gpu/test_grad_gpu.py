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
ROW, REP = P("x", None), P(None, None)
DTYPES = [np.float64, np.complex128]
N = 512


def _rand(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _hpd(rng, n, dtype):
    x = _rand(rng, (n, n), dtype)
    return (x @ x.conj().T / n + np.eye(n)).astype(dtype)


def _herm(rng, n, dtype):
    x = _rand(rng, (n, n), dtype)
    return ((x + x.conj().T) / 2).astype(dtype)


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
