"""Memory per device and time of jaxmg.composed's routes (no gather of A:
qr, polar, svd and lstsq)
against jaxmg's gathering engine and jnp on one device, on CPU devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python bench/memory_cpu.py memory --n 512 1024 2048 --ratio 2
    ... python bench/memory_cpu.py time --n 512 1024 --ratio 2 --devices 8

memory: XLA's compiled.memory_analysis() of the jitted program (per
device: arguments + outputs + temporaries; buffers an FFI engine
allocates itself, such as the host engine's gathered matrix, are not
seen). time: the best of --reps runs after one warm-up, seconds.
Prints one Markdown table row per case.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)

import jaxmg  # noqa: E402
from jaxmg.composed import lstsq_cholesky, polar_qdwh, qr_cholesky, svd_polar  # noqa: E402

ROW = P("x", None)


def _ones(a):
    """lstsq's b: one right-hand side of A's rows."""
    return jnp.ones((a.shape[0], 1), a.dtype)


def composed(op, mesh):
    if op == "lstsq":
        return lambda a: lstsq_cholesky(a, _ones(a), mesh, "x")
    fn = {"qr": qr_cholesky, "polar": polar_qdwh, "svd": svd_polar}[op]
    return lambda a: fn(a, mesh, "x")


def gathering(op, mesh):
    if op == "lstsq":
        return lambda a: jaxmg.least_squares(a, _ones(a), None, mesh=mesh, in_specs=(ROW, P()),
                                             return_status=True)
    fn = {"qr": jaxmg.qr, "polar": jaxmg.polar, "svd": jaxmg.gesvd}[op]
    return lambda a: fn(a, None, mesh=mesh, in_specs=ROW, return_status=True)


def one_device(op, _mesh):
    fn = {"qr": lambda a: jnp.linalg.qr(a),
          "polar": lambda a: jax.scipy.linalg.polar(a, method="svd"),
          "svd": lambda a: jnp.linalg.svd(a, full_matrices=False),
          "lstsq": lambda a: jnp.linalg.lstsq(a, _ones(a))[0]}[op]
    return fn


ROUTES = {"composed": composed, "gather": gathering, "jnp": one_device}


def mesh_of(k):
    return Mesh(np.array(jax.devices()[:k]), ("x",))


def memory(args):
    print("| op | route | M | N | P | arguments | outputs | temporaries | total | total / (M N s / P) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for op in args.ops:
        for n in args.n:
            m = args.ratio * n
            for route in args.routes:
                for k in (args.devices_list if route != "jnp" else [1]):
                    mesh = mesh_of(k)
                    spec = NamedSharding(mesh, ROW if route != "jnp" else P())
                    a = jax.ShapeDtypeStruct((m, n), np.float64, sharding=spec)
                    ma = jax.jit(ROUTES[route](op, mesh)).lower(a).compile().memory_analysis()
                    tot = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
                    unit = m * n * 8 / k
                    print(f"| {op} | {route} | {m} | {n} | {k} | {ma.argument_size_in_bytes / 2**20:.2f} "
                          f"| {ma.output_size_in_bytes / 2**20:.2f} | {ma.temp_size_in_bytes / 2**20:.2f} "
                          f"| {tot / 2**20:.2f} | {tot / unit:.1f} |", flush=True)


def timing(args):
    print("| op | route | M | N | P | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for op in args.ops:
        for n in args.n:
            m = args.ratio * n
            host = rng.standard_normal((m, n))
            for route in args.routes:
                k = 1 if route == "jnp" else args.devices
                mesh = mesh_of(k)
                a = jax.device_put(host, NamedSharding(mesh, ROW if route != "jnp" else P()))
                fn = jax.jit(ROUTES[route](op, mesh))
                jax.block_until_ready(fn(a))
                best = float("inf")
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(a))
                    best = min(best, time.perf_counter() - t0)
                print(f"| {op} | {route} | {m} | {n} | {k} | {best:.3f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("memory", "time"))
    ap.add_argument("--ops", nargs="+", default=["qr", "polar", "svd", "lstsq"])
    ap.add_argument("--routes", nargs="+", default=list(ROUTES))
    ap.add_argument("--n", nargs="+", type=int, default=[512, 1024, 2048])
    ap.add_argument("--ratio", type=int, default=2, help="M = ratio * N")
    ap.add_argument("--devices", type=int, default=8, help="devices for `time`")
    ap.add_argument("--devices-list", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    (memory if args.what == "memory" else timing)(args)


if __name__ == "__main__":
    main()
