"""Where a one-device call's time goes, next to jnp's: potrs and lu_solve
on device 0 (a one-device mesh), timed by timing.median_time (--reps):

  jnp          jax.scipy's cho_solve(cho_factor) / lu_solve(lu_factor)
  jaxmg        jaxmg.potrs / jaxmg.lu_solve, dispatch="auto"
  isfinite     jnp.all(jnp.isfinite(A)) alone (the call's non-finite check)
  pass         A + 1 alone (one read and one write of A: the copy XLA makes
               of A for a result aliased to it, when A is not donated)

With JAXMG_VERBOSE=2 the C core also prints each call's engine time
("run ... ms") on stderr.

    python bench/one_device_split.py --sizes 8192,16384 --dtypes f64
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

jax.config.update("jax_enable_x64", True)

import jaxmg  # noqa: E402
from timing import median_time  # noqa: E402

DTYPES = {"f32": np.float32, "f64": np.float64}


def _routes(mesh):
    spec = (P("x", None), P(None, None))
    cho = lambda a, b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), b)
    lu = lambda a, b: jax.scipy.linalg.lu_solve(jax.scipy.linalg.lu_factor(a), b)
    return {
        "potrs": (cho, lambda a, b: jaxmg.potrs(a, b, None, mesh, spec)),
        "lu_solve": (lu, lambda a, b: jaxmg.lu_solve(a, b, None, mesh, spec)),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="8192,16384")
    p.add_argument("--dtypes", default="f64")
    p.add_argument("--ops", default="potrs,lu_solve")
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    dev = jax.devices()[0]
    mesh = Mesh(np.array([dev]), ("x",))
    routes = _routes(mesh)
    check = jax.jit(lambda a: jnp.all(jnp.isfinite(a)))
    one_pass = jax.jit(lambda a: a + 1)
    print(f"{dev.device_kind}; seconds, median of {args.reps}")
    print("| op | dtype | N | jnp | jaxmg | jaxmg - jnp | isfinite | pass | jaxmg / jnp |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dt in args.dtypes.split(","):
        for n in map(int, args.sizes.split(",")):
            rng = np.random.default_rng(n)
            x = rng.standard_normal((n, n)).astype(DTYPES[dt])
            a = jax.device_put(x @ x.T / n + np.eye(n, dtype=x.dtype), dev)
            b = jax.device_put(rng.standard_normal((n, 1)).astype(DTYPES[dt]), dev)
            t_chk = median_time(check, a, reps=args.reps)
            t_pass = median_time(one_pass, a, reps=args.reps)
            for op in args.ops.split(","):
                ref, ours = (jax.jit(f) for f in routes[op])
                t_ref = median_time(ref, a, b, reps=args.reps)
                t_ours = median_time(ours, a, b, reps=args.reps)
                print(f"| {op} | {dt} | {n} | {t_ref:.5f} | {t_ours:.5f} | {t_ours - t_ref:+.5f} | "
                      f"{t_chk:.5f} | {t_pass:.5f} | {t_ours / t_ref:.3f} |", flush=True)


if __name__ == "__main__":
    main()
