"""MinSR parameter update with jaxmg (section 5 of the tutorial):

    delta_theta = tau * X^H (X X^H + lam I)^-1 E_loc

X (N_s samples x N_p parameters) is the centered Jacobian, E_loc the
centered local energies; N_s << N_p, so the linear system is only N_s x N_s.

Layout. X lives sharded by samples over a 2-D mesh ("S", "T") as
P(("S", "T"), None): "S" runs across hosts (processes), "T" over the devices
of one host. The Gram matrix T = X X^H is streamed: a scan over column chunks
of X in which every device all_gathers one chunk and adds its own rows'
products with it, so at most one gathered chunk (N_s x chunk) exists at a
time. T comes out row-sharded like X. It is then resharded to P("T", None)
(replicated over "S") for the solve, because cuSolverMg spans the GPUs of one
process only: every host solves the same small system on its own devices.
With S = 1 the two layouts coincide. Finally delta_theta = tau * X^H v is a
local product per shard, summed with psum over ("S", "T").

On one host (or on CPU) the local devices are split as (S, T) = (1, n) by
default; --mesh-s splits them otherwise, which exercises the cross-"S" path
without several processes. N_s must be a multiple of S*T.

    python examples/minsr.py                       # GPU defaults: 16384 x 10^6, float32
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/minsr.py --steps 3

The GPU defaults hold a 16384 x 10^6 float32 Jacobian: 65.5 GB in all,
spread over the devices of the mesh.
"""

from __future__ import annotations

import os

# NVLink multicast (NVLS) in NCCL's collectives is unreliable on some
# systems; keep it off unless the user chose otherwise.
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

import argparse  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import jaxmg  # noqa: E402

SAMPLE_AXES = ("S", "T")
X_SPEC = P(SAMPLE_AXES, None)
E_SPEC = P(SAMPLE_AXES)
# the solve runs within one host: over "T", replicated over "S"
SOLVE_SPEC = P("T", None)
# TF32 (the GPU default for float32 dots) would perturb T by about 1e-3 of
# its norm, far more than a typical lam: the products are kept exact.
HIGHEST = jax.lax.Precision.HIGHEST

DTYPES = {
    "float32": jnp.float32,
    "float64": jnp.float64,
    "complex64": jnp.complex64,
    "complex128": jnp.complex128,
}


# ---------------------------------------------------------------------------
# mesh


def make_mesh_2d(s: int | None = None) -> Mesh:
    """Mesh ("S", "T") whose rows never mix processes.

    Each process's devices (in id order) are split into s / process_count
    rows; s defaults to process_count (one row per host, the tutorial's
    get_device_grid layout)."""
    nproc = jax.process_count()
    s = nproc if s is None else int(s)
    if s < 1 or s % nproc:
        raise ValueError(f"--mesh-s={s} must be a positive multiple of the process count {nproc}")
    by_proc: dict[int, list] = {}
    for d in jax.devices():
        by_proc.setdefault(d.process_index, []).append(d)
    rows_per_proc = s // nproc
    rows = []
    for p in sorted(by_proc):
        devs = sorted(by_proc[p], key=lambda d: d.id)
        if len(devs) % rows_per_proc:
            raise ValueError(
                f"--mesh-s={s}: process {p} has {len(devs)} devices, not divisible into "
                f"{rows_per_proc} rows"
            )
        rows.extend(np.array(devs, dtype=object).reshape(rows_per_proc, -1))
    return Mesh(np.array(rows), SAMPLE_AXES)


def _place(x, mesh, spec):
    """x in sharding `spec`: Explicit mesh axes (jax.make_mesh's default)
    need jax.sharding.reshard, Auto ones (Mesh's default) a constraint."""
    sharding = NamedSharding(mesh, spec)
    if jax.sharding.AxisType.Explicit in tuple(mesh.axis_types):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def _check(X, E, mesh, chunk):
    if tuple(mesh.axis_names) != SAMPLE_AXES:
        raise ValueError(f"mesh axes must be {SAMPLE_AXES}, got {tuple(mesh.axis_names)}")
    if X.ndim != 2 or E.shape != (X.shape[0],):
        raise ValueError(f"X must be (N_s, N_p) and E (N_s,); got {X.shape} and {E.shape}")
    ndev = mesh.shape["S"] * mesh.shape["T"]
    if X.shape[0] % ndev:
        raise ValueError(f"N_s={X.shape[0]} must be a multiple of the {ndev} devices of the mesh")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if jnp.iscomplexobj(E) and not jnp.iscomplexobj(X):
        raise TypeError("complex E needs a complex Jacobian X")


# ---------------------------------------------------------------------------
# the three phases


def gram_matrix(X, *, mesh, chunk):
    """T = X X^H, row-sharded like X (P(("S", "T"), None)).

    The parameter axis is walked in chunks; a last, narrower chunk takes the
    remainder when chunk does not divide N_p, so X is never padded or copied
    whole."""
    n_s, n_p = X.shape
    chunk = min(chunk, n_p)
    n_full, rem = divmod(n_p, chunk)

    def local(x):
        def add(acc, start, width):
            mine = jax.lax.dynamic_slice_in_dim(x, start, width, axis=1)
            full = jax.lax.all_gather(mine, SAMPLE_AXES, axis=0, tiled=True)
            return acc + jnp.matmul(mine, full.conj().T, precision=HIGHEST)

        # the carry must be device-varying from the start, like what the
        # steps add to it
        acc = jax.lax.pcast(jnp.zeros((x.shape[0], n_s), x.dtype), SAMPLE_AXES, to="varying")
        acc, _ = jax.lax.scan(lambda a, i: (add(a, i * chunk, chunk), None), acc, jnp.arange(n_full))
        if rem:
            acc = add(acc, n_full * chunk, rem)
        return acc

    return jax.shard_map(local, mesh=mesh, in_specs=X_SPEC, out_specs=X_SPEC)(X)


def solve_gram(T_reg, E, *, mesh, T_A):
    """v = T_reg^-1 E with jaxmg.potrs, T_reg taken row-sharded over "T"."""
    T_reg = _place(T_reg, mesh, SOLVE_SPEC)
    E = _place(E, mesh, P(None))
    v = jaxmg.potrs(T_reg, E[:, None], T_A=T_A, mesh=mesh, in_specs=(SOLVE_SPEC, P(None, None)))
    return v[:, 0]


def apply_jacobian_h(X, v, *, mesh):
    """X^H v, replicated: per shard conj(v^H X_local), which avoids
    conjugating the large local Jacobian, then a psum over all devices."""

    def local(x, v):
        part = jnp.matmul(v.conj(), x, precision=HIGHEST)
        return jax.lax.psum(part, SAMPLE_AXES).conj()

    return jax.shard_map(local, mesh=mesh, in_specs=(X_SPEC, E_SPEC), out_specs=P(None))(X, v)


@functools.partial(jax.jit, static_argnames=("mesh", "T_A", "chunk", "return_gram"))
def minsr_update(X, E, *, mesh, lam, tau, T_A, chunk, return_gram=False):
    """delta_theta = tau X^H (X X^H + lam I)^-1 E, replicated, shape (N_p,).

    X: (N_s, N_p) centered Jacobian, best placed as P(("S", "T"), None) on
    `mesh` (axes ("S", "T"), Auto or Explicit); E: (N_s,) centered local
    energies. lam and tau may be traced. With return_gram, also returns
    T_reg = X X^H + lam I (sharded P("T", None)), e.g. to time the solve
    on its own. If T_reg is not positive definite, delta_theta is NaN."""
    _check(X, E, mesh, chunk)
    E = E.astype(X.dtype)
    T = gram_matrix(X, mesh=mesh, chunk=chunk)
    T_reg = T + lam * jnp.eye(X.shape[0], dtype=X.dtype)
    T_reg = _place(T_reg, mesh, SOLVE_SPEC)
    v = _place(solve_gram(T_reg, E, mesh=mesh, T_A=T_A), mesh, E_SPEC)
    dtheta = tau * apply_jacobian_h(X, v, mesh=mesh)
    return (dtheta, T_reg) if return_gram else dtheta


def reference_update(X, E, lam, tau):
    """The same update in numpy, in float64 / complex128."""
    X = np.asarray(X)
    E = np.asarray(E)
    wide = np.complex128 if np.iscomplexobj(X) or np.iscomplexobj(E) else np.float64
    X = X.astype(wide)
    E = E.astype(wide)
    T = X @ X.conj().T + lam * np.eye(X.shape[0])
    v = np.linalg.solve(T, E)
    return tau * (X.conj().T @ v)


# ---------------------------------------------------------------------------
# the driver


def make_sampler(n_s, n_p, dtype, mesh):
    """sampler(key) -> (X, E): a random centered Jacobian and local energies,
    drawn on the devices in their final sharding (threefry is partitionable:
    each device draws its own rows), scaled by 1/sqrt(N_s) as in MinSR."""
    x_sh, e_sh = NamedSharding(mesh, X_SPEC), NamedSharding(mesh, E_SPEC)

    @functools.partial(jax.jit, out_shardings=(x_sh, e_sh))
    def draw(key):
        kx, ke = jax.random.split(key)
        return jax.random.normal(kx, (n_s, n_p), dtype), jax.random.normal(ke, (n_s,), dtype)

    # centering is a second program that reuses O's buffer, so the Jacobian
    # is held once, not twice
    @functools.partial(jax.jit, out_shardings=(x_sh, e_sh), donate_argnums=(0, 1))
    def center(O, e):
        scale = 1 / math.sqrt(n_s)
        return (O - O.mean(axis=0)) * scale, (e - e.mean()) * scale

    return lambda key: center(*draw(key))


def _phases(mesh, lam, tau, T_A, chunk):
    """minsr_update in its three phases, each its own program, so that one
    timed step is the sum of the three and the solve's share of it is
    measured inside that step: Gram matrix, solve, X^H v."""

    @jax.jit
    def gram(X):
        T = gram_matrix(X, mesh=mesh, chunk=chunk)
        return _place(T + lam * jnp.eye(X.shape[0], dtype=X.dtype), mesh, SOLVE_SPEC)

    @jax.jit
    def solve(T_reg, E):
        return _place(solve_gram(T_reg, E.astype(T_reg.dtype), mesh=mesh, T_A=T_A), mesh, E_SPEC)

    @jax.jit
    def update(X, v):
        return tau * apply_jacobian_h(X, v, mesh=mesh)

    @jax.jit
    def residual(T_reg, v, E):
        return jnp.linalg.norm(T_reg @ v - E) / jnp.linalg.norm(E)

    return gram, solve, update, residual


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, help="N_s (GPU default 16384, CPU 256)")
    p.add_argument("--params", type=int, help="N_p (GPU default 10**6, CPU 4096)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--T_A", type=int, help="potrs tile width (GPU default 1024, CPU 32)")
    p.add_argument("--steps", type=int, default=5, help="timed steps, after one warm-up step")
    p.add_argument("--chunk", type=int, help="Gram streaming chunk (GPU default 8192, CPU 1000)")
    p.add_argument("--lam", type=float, default=1e-3, help="diagonal shift lambda")
    p.add_argument("--tau", type=float, default=1e-2, help="step size tau")
    p.add_argument("--mesh-s", type=int, help="size of the 'S' axis (default: process count)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    if args.dtype in ("float64", "complex128"):
        jax.config.update("jax_enable_x64", True)
    dtype = DTYPES[args.dtype]
    backend = jax.default_backend()
    gpu = backend == "gpu"
    n_s = args.samples or (16384 if gpu else 256)
    n_p = args.params or (10**6 if gpu else 4096)
    T_A = args.T_A or (1024 if gpu else 32)
    # the CPU default does not divide N_p, so the remainder chunk runs too
    chunk = args.chunk or (8192 if gpu else 1000)
    lead = jax.process_index() == 0
    say = print if lead else (lambda *a, **k: None)

    if backend == "cpu" and len(jax.devices()) < 2:
        say(
            "hint: one CPU device only; set XLA_FLAGS=--xla_force_host_platform_device_count=8 "
            "to spread the work over 8 host devices"
        )
    mesh = make_mesh_2d(args.mesh_s)
    S, Tn = mesh.shape["S"], mesh.shape["T"]
    say(
        f"minsr: N_s={n_s} N_p={n_p} {args.dtype} on {backend}, mesh (S, T) = ({S}, {Tn}), "
        f"chunk={chunk} T_A={T_A} lam={args.lam:g} tau={args.tau:g}"
    )

    gram, solve, update, residual = _phases(mesh, args.lam, args.tau, T_A, chunk)
    sampler = make_sampler(n_s, n_p, dtype, mesh)
    key = jax.random.PRNGKey(args.seed)

    def one_step(k):
        """One MinSR step, timed phase by phase: the step is their sum, so
        the solve's share is of the step it ran in (at most 100 %)."""
        X, E = sampler(jax.random.fold_in(key, k))
        jax.block_until_ready((X, E))
        t0 = time.perf_counter()
        T_reg = jax.block_until_ready(gram(X))
        t1 = time.perf_counter()
        v = jax.block_until_ready(solve(T_reg, E))
        t2 = time.perf_counter()
        dtheta = jax.block_until_ready(update(X, v))
        t3 = time.perf_counter()
        res = residual(T_reg, v, E.astype(T_reg.dtype))
        return t3 - t0, t2 - t1, float(jnp.linalg.norm(dtheta)), float(res)

    t0 = time.perf_counter()
    one_step(0)
    say(f"warm-up step (compilation): {time.perf_counter() - t0:.2f} s, excluded from the timings")

    steps, solves = [], []
    norm = res = float("nan")
    for k in range(1, args.steps + 1):
        t_step, t_solve, norm, res = one_step(k)
        steps.append(t_step)
        solves.append(t_solve)
        say(
            f"step {k}/{args.steps}: {t_step * 1e3:.2f} ms/step, solve {t_solve * 1e3:.2f} ms "
            f"({t_solve / t_step:.0%} of the step), |dtheta| = {norm:.6e}, "
            f"solve residual {res:.1e}"
        )
        if not math.isfinite(norm):
            say("  T + lam I is not positive definite at this precision: raise --lam")
    if steps:
        mean, share = float(np.mean(steps)), float(np.sum(solves) / np.sum(steps))
        say(
            f"summary: {len(steps)} steps, {mean * 1e3:.2f} ms/step mean "
            f"(min {min(steps) * 1e3:.2f}), solve {share:.0%} of a step, "
            f"last |dtheta| = {norm:.6e}, N_s={n_s} N_p={n_p} {args.dtype} mesh ({S}, {Tn})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
