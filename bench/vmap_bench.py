"""Times a batch of problems through jax.vmap (issue 16 item 3): jaxmg's
one FFI call for the batch against the same ops as a loop of calls
(jax.lax.map, one FFI call and one rendezvous per element, what vmap did
before), and jnp's batched routines on one device, f64.

  python bench/vmap_bench.py --cases 64x256,16x1024,4x4096 --reps 5

Rows per case (B matrices of N x N): potrs (one right-hand side each) and
syevd; columns: seconds for the batch, and the ratios. Every result is
checked against the first element solved alone. Warm-up, then the median
of --reps runs.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)
import jaxmg  # noqa: E402


def median_time(fn, *args, reps):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch_spd(nb, n, sharding):
    """2I + Wigner matrices of entry variance 1/(6N), made on the devices."""
    def make(k):
        w = jax.random.normal(k, (nb, n, n))
        return 2 * jnp.eye(n) + (w + jnp.swapaxes(w, 1, 2)) / jnp.sqrt(12.0 * n)
    return jax.jit(make, out_shardings=sharding)(jax.random.key(n + nb))


def one_case(nb, n, reps, mesh, dispatch):
    brow = NamedSharding(mesh, P(None, "x", None))
    As = batch_spd(nb, n, brow)
    bs = jax.device_put(jax.random.normal(jax.random.key(2), (nb, n, 1)),
                        NamedSharding(mesh, P(None, None, None)))
    T = min(256, n // mesh.size)
    ops = {
        "potrs": (lambda A, b: jaxmg.potrs(A, b, T, mesh, (P("x", None), P(None, None)),
                                            dispatch=dispatch), (As, bs),
                  lambda A, b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), b)),
        "syevd": (lambda A: jaxmg.syevd(A, T, mesh, (P("x", None),), dispatch=dispatch,
                                        return_eigenvectors=False), (As,),
                  lambda A: jnp.linalg.eigvalsh(A)),
    }
    dev = jax.devices()[0]
    out = []
    for name, (f, args, ref) in ops.items():
        batched = jax.jit(jax.vmap(f))
        looped = jax.jit(lambda *a, f=f: jax.lax.map(lambda x: f(*x), a))
        jnp_one = jax.jit(jax.vmap(ref))
        local = [jax.device_put(np.asarray(a), dev) for a in args]
        got = np.asarray(batched(*args))
        alone = np.asarray(jax.jit(f)(*(a[0] for a in args)))
        err = float(np.abs(got[0] - alone).max() / np.abs(alone).max())
        tb = median_time(batched, *args, reps=reps)
        tl = median_time(looped, *args, reps=reps)
        try:
            tj = f"{median_time(jnp_one, *local, reps=reps):.4g}"
        except Exception as e:  # one device may not hold the batch
            tj = f"{type(e).__name__}: {str(e)[:200]}"
        out.append(f"| {name} | {nb} x {n} | {dispatch} | {tb:.4g} | {tl:.4g} | {tl / tb:.2f} | {tj} "
                   f"| {err:.1e} |")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="32x256,8x1024")
    p.add_argument("--dispatch", default="multi,single")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    mesh = jax.make_mesh((jax.device_count(),), ("x",))
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}")
    print("| op | B x N | dispatch | vmap, one call s | loop of calls s | loop / vmap | jnp 1 dev s "
          "| check |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases.split(","):
        nb, n = (int(v) for v in case.split("x"))
        for d in args.dispatch.split(","):
            for line in one_case(nb, n, args.reps, mesh, d):
                print(line, flush=True)


if __name__ == "__main__":
    main()
