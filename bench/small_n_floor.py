"""The fixed cost of a small call on several CPU devices, against JAX's own:
potrs at N (default 256) through jaxmg on all host devices, jax.scipy's
cho_solve on device 0, and two trivial sharded computations (what any
computation over the devices costs to launch). Median / min of 200 calls.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/small_n_floor.py
"""
import os, time, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jaxmg
from jax.sharding import NamedSharding, PartitionSpec as P
n=int(os.environ.get("N","256")); nd=jax.device_count()
mesh=jax.make_mesh((nd,),("x",))
a=np.random.rand(n,n); a=a@a.T+n*np.eye(n)
A=jax.device_put(a,NamedSharding(mesh,P("x",None)))
b=jnp.ones((n,1))
f=jax.jit(lambda A: jaxmg.potrs(A, b, None, mesh, (P("x",None),P(None,None))))
A0=jax.device_put(a,jax.devices()[0])
g=jax.jit(lambda A: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), b))
def t(fn,x,reps=200):
    jax.block_until_ready(fn(x)); ts=[]
    for _ in range(reps):
        t0=time.perf_counter(); jax.block_until_ready(fn(x)); ts.append(time.perf_counter()-t0)
    return np.median(ts)*1e3, np.min(ts)*1e3
print(nd, "devices: jaxmg %.3f/%.3f ms"%t(f,A), "jnp %.3f/%.3f ms"%t(g,A0))
h=jax.jit(lambda A: (A*2).sum(axis=0))
k=jax.jit(jax.shard_map(lambda a: jax.lax.psum(a.sum(axis=0),"x"), mesh=mesh, in_specs=P("x",None), out_specs=P(None)))
print(nd, "trivial sharded %.3f/%.3f ms"%t(h,A), "shard_map+psum %.3f/%.3f ms"%t(k,A))
