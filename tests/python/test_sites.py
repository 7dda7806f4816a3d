"""Every jaxmg call of one program gets its own call-site name (the C
rendezvous pairs the devices' calls by it): calls in a Python loop inside one
jit, on traced or closed-over arrays, under grad (the solve and its
transpose), and ctx calls inside one shard_map."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxmg
from helpers import check_solve, mesh, spd

N = 16


def _sites(lowered):
    return re.findall(r'site = "([^"]+)"', lowered.as_text())


def _setup(rng):
    m = mesh(4)
    A_np = spd(rng, N, np.float64)
    A = jax.device_put(jnp.asarray(A_np), NamedSharding(m, P("x", None)))
    return m, A_np, A, jnp.ones((N, 1))


def _loop(A, b, k=3):
    x = b
    for _ in range(k):
        x = jaxmg.potrs(A, x, 4)
    return x


def test_loop_in_one_jit_distinct_sites(rng):
    m, A_np, A, b = _setup(rng)
    for lowered in (jax.jit(_loop).lower(A, b),                 # traced arguments
                    jax.jit(lambda b: _loop(A, b)).lower(b),     # A closed over
                    jax.jit(lambda: _loop(A, b)).lower()):       # both closed over
        sites = _sites(lowered)
        assert len(sites) >= 3 and len(set(sites)) == len(sites), sites
    x = jax.jit(_loop)(A, b)
    ref = np.linalg.solve(A_np @ A_np @ A_np, np.ones((N, 1)))
    np.testing.assert_allclose(np.asarray(x), ref, rtol=1e-10)
    # and the names are stable across retraces of the same program
    assert _sites(jax.jit(_loop).lower(A, b)) == _sites(jax.jit(_loop).lower(A, b))


def test_grad_solve_and_transpose_distinct_sites(rng):
    m, A_np, A, b = _setup(rng)

    def loss(A, b):
        return jnp.sum(_loop(A, b, 2) ** 2)

    sites = _sites(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(A, b))
    assert len(sites) >= 4 and len(set(sites)) == len(sites), sites


def test_ctx_calls_in_one_shard_map_distinct_sites(rng):
    m, A_np, A, b = _setup(rng)

    def body(a, b):
        x, s1 = jaxmg.potrs_shardmap_ctx(a, b, 4)
        y, s2 = jaxmg.potrs_shardmap_ctx(a, x, 4)
        return y, s1 + s2

    f = jax.jit(jax.shard_map(body, mesh=m, in_specs=(P("x", None), P(None, None)),
                              out_specs=(P(None, None), P(None)), check_vma=False))
    sites = _sites(f.lower(A, b))
    assert len(sites) >= 2 and len(set(sites)) == len(sites), sites
    y, status = f(A, b)
    assert int(status[0]) == 0
    check_solve(A_np @ A_np, y, np.ones((N, 1)), np.float64)
