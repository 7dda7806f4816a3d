"""Time every public op on CPU host devices, eagerly (the Python layer's
dispatch plus the cached jit) and inside one jit, at small N where the
Python layer's share is largest: for comparing two builds of jaxmg on one
machine in one run (bench/README.md, "Before and after").

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)

import jaxmg  # noqa: E402


def _inputs(rng, n):
    x = rng.standard_normal((n, n))
    spd = x @ x.T + n * np.eye(n)
    tall = rng.standard_normal((2 * n, n))
    return {
        "potrs": (spd, rng.standard_normal((n, 1))), "potri": (spd,), "syevd": (spd,),
        "lu_solve": (x + n * np.eye(n), rng.standard_normal((n, 1))),
        "least_squares": (tall, rng.standard_normal((2 * n, 1))), "qr": (tall,),
        "gesvd": (tall,), "polar": (tall,), "eigh_generalized": (spd, spd + np.eye(n)),
    }


def _time(fn, reps):
    jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    mesh = jax.make_mesh((len(jax.devices()),), ("x",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(0)
    out = []
    for n in map(int, args.sizes.split(",")):
        for op, ins in _inputs(rng, n).items():
            fn = getattr(jaxmg, op)
            A = jax.device_put(ins[0], NamedSharding(mesh, P("x", None)))
            rest = [jax.device_put(x, NamedSharding(mesh, P("x", None) if op == "eigh_generalized"
                                                     else P())) for x in ins[1:]]
            call = lambda A, *rest: fn(A, *rest, None, mesh=mesh, in_specs=P("x", None))  # noqa: E731
            jitted = jax.jit(call)
            row = dict(op=op, n=n, eager=_time(lambda: call(A, *rest), args.reps),
                       jit=_time(lambda: jitted(A, *rest), args.reps))
            out.append(row)
            print(f"{op:17s} {n:5d} eager {row['eager'] * 1e3:9.3f} ms  jit {row['jit'] * 1e3:9.3f} ms",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(version=jaxmg.__version__, devices=len(jax.devices()), rows=out), f)


if __name__ == "__main__":
    main()
