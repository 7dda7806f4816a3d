"""How jaxmg names a call for the rendezvous (_shard.new_site): every
process must compute the same name for the same call, a retrace must not
change it, and two calls of one program must never share one."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmg

ROW, REP = P("x", None), P(None, None)


def sites(fn, n, mesh):
    A = jax.device_put(jnp.eye(n) * 2.0, NamedSharding(mesh, ROW))
    b = jax.device_put(jnp.ones((n, 1)), NamedSharding(mesh, REP))
    return re.findall(r'site = "([^"]+)"', jax.jit(fn).lower(A, b).as_text())


def test_site_names():
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))

    def two_on_one_line(a, b):
        return jaxmg.potrs(a, b, 2, mesh, (ROW, REP)), jaxmg.potrs(a, b, 2, mesh, (ROW, REP))

    def two_lines(a, b):
        x = jaxmg.potrs(a, b, 2, mesh, (ROW, REP))
        y = jaxmg.potrs(a, b, 2, mesh, (ROW, REP))
        return x, y

    def ctx_loop(a, b):
        body = lambda x, y: [jaxmg.potrs_shardmap_ctx(x, y, 2) for _ in range(2)]  # noqa: E731
        return jax.shard_map(body, mesh=mesh, in_specs=(ROW, REP),
                             out_specs=[(REP, P(None))] * 2, check_vma=False)(a, b)

    first = sites(two_on_one_line, 8, mesh)
    assert len(first) == 2 and len(set(first)) == 2, first
    # A retrace (other shapes) names the same calls alike: shapes stay out
    # of the name, the call's fingerprint compares them.
    assert sites(two_on_one_line, 16, mesh) == first
    other = sites(two_lines, 8, mesh)
    assert len(set(other)) == 2 and not set(other) & set(first), (other, first)
    loop = sites(ctx_loop, 8, mesh)
    assert len(set(loop)) == 2, loop
