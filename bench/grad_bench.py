"""Times derivatives against their primal (issue 16's target: a gradient
costs at most 2.2 x its primal): potrs's solution and its logdet, f64, on
every device of the machine, with jnp on one device beside them.

  python bench/grad_bench.py --sizes 16384,32768 --reps 3

Rows: jaxmg primal, jaxmg grad (w.r.t. A and b), their ratio, and the same
for jax.scipy's cho_factor/cho_solve on device 0. jaxmg's gradients reuse
the primal's factorization (one chol_factor, then chol_solve / chol_inverse
with that factor; the "calls" column counts the FFI calls of the compiled
gradient); the "refactoring" rows time the rules without the factor ops
(every solve a potrs, logdet's gradient a potri), as before the reuse.
Every gradient is checked: for loss = |x|^2 with A x = b, A (d loss / d b)
= 2 x; for logdet, A G[:, :8] = I[:, :8]. Warm-up, then the median of
--reps runs.
"""

import argparse
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)
import jaxmg  # noqa: E402
from jaxmg.ops.potri import POTRI
from jaxmg.ops.potrs import POTRS, Options
from jaxmg.pipeline.mesh import MeshCores
from jaxmg.rules import hermitian as _autodiff
from jaxmg.pipeline import request as _request
from timing import median_time  # noqa: E402


def spd(n, key, sharding):
    """2I + a Wigner matrix of entry variance 1/(6N), made on the devices."""
    make = jax.jit(lambda k: (lambda w: 2 * jnp.eye(n) + (w + w.T) / jnp.sqrt(12.0 * n))(
        jax.random.normal(k, (n, n))), out_shardings=sharding)
    return make(key)


def row(name, primal, grad, err, calls=""):
    return f"| {name} | {primal:.4g} | {grad:.4g} | {grad / primal:.2f} | {err:.1e} | {calls} |"


def ffi_calls(fn, *args):
    """The jaxmg FFI calls of fn's compiled program, as "op xN, ..."."""
    text = fn.lower(*args).compile().as_text()
    names = re.findall(r'custom_call_target="jaxmg_([a-z_]+)"', text)
    return ", ".join(f"{k} x{names.count(k)}" for k in sorted(set(names)))


def refactoring(mesh, A, b, logdet):
    """potrs through the derivative rules without the factor ops."""
    req = _request.normalise(POTRS, Options(logdet), A, b, T_A=None, mesh=mesh,
                             specs=P("x", None))
    cores = MeshCores(req)
    if logdet:
        return _autodiff.potrs_logdet(cores(POTRS, req.opts), cores(POTRI, POTRI.options()),
                                      cores.lay, None)
    return _autodiff.potrs(cores(POTRS, req.opts), cores.lay, None)


def bench(n, reps, mesh):
    rows = NamedSharding(mesh, P("x", None))
    rep = NamedSharding(mesh, P(None, None))
    A = spd(n, jax.random.key(n), rows)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (n, 1)), rep)
    solve = lambda A, b: jaxmg.potrs(A, b, None, mesh, in_specs=P("x", None))
    logdet = lambda A, b: jaxmg.potrs(A, b, None, mesh, in_specs=P("x", None), return_logdet=True)[1]
    loss = lambda A, b: jnp.sum(solve(A, b) ** 2)
    out = []
    f, g = jax.jit(solve), jax.jit(jax.grad(loss, argnums=(0, 1)))
    _, gb = g(A, b)
    x = f(A, b)
    err = float(jnp.linalg.norm(A @ gb - 2 * x) / jnp.linalg.norm(2 * x))
    t_primal = median_time(f, A, b, reps=reps)
    out.append(row(f"potrs x, jaxmg, {mesh.size} dev", t_primal,
                   median_time(g, A, b, reps=reps), err, ffi_calls(g, A, b)))
    old = refactoring(mesh, A, b, False)
    g = jax.jit(jax.grad(lambda A, b: jnp.sum(old(A, b)[0] ** 2), argnums=(0, 1)))
    _, gb = g(A, b)
    err = float(jnp.linalg.norm(A @ gb - 2 * x) / jnp.linalg.norm(2 * x))
    out.append(row("potrs x, jaxmg, refactoring", t_primal, median_time(g, A, b, reps=reps), err,
                   ffi_calls(g, A, b)))
    f, g = jax.jit(logdet), jax.jit(jax.grad(logdet))
    G = g(A, b)
    err = float(jnp.linalg.norm(A @ G[:, :8] - jnp.eye(n)[:, :8]))
    t_primal = median_time(f, A, b, reps=reps)
    out.append(row(f"potrs logdet, jaxmg, {mesh.size} dev", t_primal,
                   median_time(g, A, b, reps=reps), err, ffi_calls(g, A, b)))
    old = refactoring(mesh, A, b, True)
    g = jax.jit(jax.grad(lambda A, b: old(A, b)[1]))
    G = g(A, b)
    err = float(jnp.linalg.norm(A @ G[:, :8] - jnp.eye(n)[:, :8]))
    out.append(row("potrs logdet, jaxmg, refactoring", t_primal, median_time(g, A, b, reps=reps),
                   err, ffi_calls(g, A, b)))
    dev = jax.devices()[0]
    one = jax.sharding.SingleDeviceSharding(dev)
    A1, b1 = spd(n, jax.random.key(n), one), jax.device_put(np.asarray(b), dev)
    cs = lambda A, b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), b)
    f, g = jax.jit(cs), jax.jit(jax.grad(lambda A, b: jnp.sum(cs(A, b) ** 2), argnums=(0, 1)))
    try:
        _, gb = g(A1, b1)
        err = float(jnp.linalg.norm(A1 @ gb - 2 * f(A1, b1)) / jnp.linalg.norm(2 * f(A1, b1)))
        out.append(row("cho_solve x, jnp, 1 dev", median_time(f, A1, b1, reps=reps),
                       median_time(g, A1, b1, reps=reps), err))
    except Exception as e:  # one device may not hold A and its cotangent
        out.append(f"| cho_solve x, jnp, 1 dev | {type(e).__name__} | | | | |")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4096")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    mesh = jax.make_mesh((jax.device_count(),), ("x",))
    print("| case | primal s | grad s | grad / primal | check | calls in grad |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"| N = {n} | | | | | |")
        for line in bench(n, args.reps, mesh):
            print(line, flush=True)


if __name__ == "__main__":
    main()
