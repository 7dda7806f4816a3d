"""One sweep: jaxmg's dispatch="auto" against every engine that can run and
against jnp / jax.scipy on ONE device, per op, dtype, N, device count and
T_A, every result validated by its defining equation.

    python bench/sweep.py [--ops potrs,...,eigh_generalized] [--dtypes f32,f64]
        [--sizes 256,512,1024,2048] [--ndev 1,2,4,8] [--tiles auto,96]
        [--reps 3] [--md OUT.md] [--json OUT.json] [--child-timeout S]

Each device count runs in its own subprocess (on CPU the host device count
is fixed when JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count;
on GPUs the child takes the first ndev GPUs). In a child, per (op, dtype, N):
the matrix is built once on the mesh (bench.py / bench_general.py's
builders); jaxmg runs with dispatch="auto" (and _decide.for_mesh names the
engine it chose) and with each engine the decision accepts forced there
(one that resolves to the auto engine reuses auto's time); the same matrix,
moved to device 0, goes through jnp / jax.scipy (`one-dev`), once per T_A.
Timing: bench/timing.py (a warm-up, then the median of --reps). Ratios:
auto / one-dev (the target: <= 1.05) and auto / the best jaxmg engine.
A row whose result fails its check says so in `valid`, and the exit status
is 1. `load` is the 1-minute load average when the row finished.
"""

import os

# NVLink multicast off (bench.py says why); set before jax is imported.
os.environ["NCCL_NVLS_ENABLE"] = "0"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import bench  # noqa: E402
import bench_general as bg  # noqa: E402
import timing  # noqa: E402

ROW, REP, HIGHEST = bench.ROW, bench.REP, bench.HIGHEST
OPS = ("potrs", "potri", "syevd") + bg.OPS + ("eigh_generalized",)
DTYPES = {k: bench.DTYPES[k] for k in ("f32", "f64", "c64", "c128")}
# dispatch= names of the engines _decide knows (its "mg" is the public "multi").
# _decide's name of an op where the public one differs.
DECIDE_OP = {"eigh_generalized": "sygvd"}
DISPATCH_OF = {"host": "host", "single": "single", "mg": "multi", "mp": "mp", "local": "local"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=bench.names(OPS), default=list(OPS))
    p.add_argument("--dtypes", type=bench.names(DTYPES), default=["f32", "f64"])
    p.add_argument("--sizes", type=bench.ints, default=[256, 512, 1024, 2048])
    p.add_argument("--ndev", type=bench.ints, default=[1, 2, 4, 8])
    p.add_argument("--tiles", type=bench.tiles, default=[None, 96],
                   help="T_A values, 'auto' for T_A=None (96 divides no power-of-two shard)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--nrhs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--md", default=None, help="write the markdown table here")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--child-timeout", type=float, default=7200.0)
    p.add_argument("--merge", default=None,
                   help="no run: the table of these --json files (comma list; a later file's "
                        "row replaces an earlier one's with the same op, dtype, N, ndev, T_A)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.reps < 1 or a.nrhs < 1:
        p.error("--reps and --nrhs must be >= 1")
    return a


# ---------------------------------------------------------------------------
# per op: inputs on the mesh, the jaxmg call, the one-device call, the check


def _sygvd_inputs(mesh, n, dtype, seed):
    """A Hermitian (bench's shifted Wigner matrix minus 2 I: indefinite),
    B SPD/HPD (the next seed: build_spd hashes seeds up to 6 only)."""
    eye = jax.jit(lambda: 2 * jnp.eye(n, dtype=dtype), out_shardings=NamedSharding(mesh, ROW))()
    return bench.build_spd(mesh, n, dtype, seed) - eye, bench.build_spd(mesh, n, dtype, seed + 1)


def inputs(op, mesh, n, dtype, args):
    """The op's arguments, built on the mesh: A in rows, b replicated."""
    def rhs(rows):
        return bench.build_replicated(mesh, (rows, args.nrhs), dtype, args.seed + 1)

    if op in ("potrs", "potri", "syevd"):
        A = bench.build_spd(mesh, n, dtype, args.seed)
        return (A, rhs(n)) if op == "potrs" else (A,)
    if op == "eigh_generalized":
        return _sygvd_inputs(mesh, n, dtype, args.seed)
    A = bg.build_general(mesh, bg.rows_of(op, n), n, dtype, args.seed)
    return (A, rhs(bg.rows_of(op, n))) if op in ("lu_solve", "least_squares") else (A,)


def jaxmg_fn(op, tile, mesh, dispatch):
    """The public call, jitted, status last."""
    import jaxmg

    kw = dict(return_status=True, dispatch=dispatch)
    if op in ("potrs", "lu_solve", "least_squares", "eigh_generalized"):
        specs = (ROW,) if op == "eigh_generalized" else (ROW, REP)  # B takes A's layout
        return jax.jit(lambda A, b: getattr(jaxmg, op)(A, b, tile, mesh, specs, **kw))
    return jax.jit(lambda A: getattr(jaxmg, op)(A, tile, mesh, (ROW,), **kw))


def _eigh_pencil(a, b):
    """scipy.linalg.eigh(a, b)'s reduction in jnp (jax.scipy has no b):
    B = L L^H, eigh(L^-1 A L^-H) = (w, W), V = L^-H W."""
    tri = jax.scipy.linalg.solve_triangular
    L = jnp.linalg.cholesky(b)
    c = tri(L, jnp.conj(tri(L, a, lower=True)).T, lower=True)
    w, W = jnp.linalg.eigh((c + jnp.conj(c).T) / 2)
    return w, tri(jnp.conj(L).T, W, lower=False)


def _cho_solve(a, b):
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), b)


# The one-device call of each op, outputs in jaxmg's order (status dropped).
ONE_DEVICE = {
    "potrs": _cho_solve,
    "potri": jnp.linalg.inv,
    "syevd": jnp.linalg.eigh,            # (w, V), jaxmg's order
    "lu_solve": jnp.linalg.solve,
    "least_squares": lambda a, b: jnp.linalg.lstsq(a, b)[0],
    "qr": jnp.linalg.qr,
    "gesvd": lambda a: jnp.linalg.svd(a, full_matrices=False),
    "polar": jax.scipy.linalg.polar,
    "eigh_generalized": _eigh_pencil,
}


def check_sygvd(mesh, A, B, V, w):
    """Sampled eigenpairs: ||A v - w B v|| / (max|w| ||B v||) and
    ||V^H B v - e|| (B-orthonormality), plus w ascending."""
    idx = bg._idx(A.shape[0])

    def body(a, b, v, w):
        vk_loc = v[:, idx]
        vk = jax.lax.all_gather(vk_loc, "x", axis=0, tiled=True)
        av, bv = (jnp.matmul(m, vk, precision=HIGHEST) for m in (a, b))
        r = av - bv * w[idx].astype(a.dtype)
        bvn = jnp.sqrt(jax.lax.psum(bench._sq(bv, 0), "x"))
        g = jax.lax.psum(jnp.matmul(jnp.conj(v).T, bv, precision=HIGHEST), "x")
        eye = (jnp.arange(v.shape[1])[:, None] == jnp.asarray(idx)[None, :]).astype(g.dtype)
        return {"resid": jnp.max(jnp.sqrt(jax.lax.psum(bench._sq(r, 0), "x")) /
                                 (jnp.max(jnp.abs(w)) * bvn)),
                "borth": jnp.sqrt(bench._sq(g - eye)),
                "unsorted": jnp.sum(jnp.diff(w) < 0).astype(w.dtype)}

    f = jax.shard_map(body, mesh=mesh, in_specs=(ROW, ROW, ROW, P(None)), out_specs=P(),
                      check_vma=False)
    return jax.jit(f)(A, B, V, w)


def check(op, mesh, ins, outs, seed):
    """The defining equation's metrics of outs (jaxmg's order, no status)."""
    if op == "potrs":
        return bench.check_potrs(mesh, ins[0], outs[0], ins[1])
    if op == "potri":
        e = bench.build_replicated(mesh, (ins[0].shape[0],), ins[0].dtype, seed + 2)
        return bench.check_potri(mesh, ins[0], outs[0], e)
    if op == "syevd":
        return bench.check_syevd(mesh, ins[0], outs[1], outs[0])
    if op == "lu_solve":
        return bg.check_solve(mesh, ins[0], outs[0], ins[1])
    if op == "least_squares":
        return bg.check_lstsq(mesh, ins[0], outs[0], ins[1])
    if op == "qr":
        return bg.check_qr(mesh, ins[0], *outs)
    if op == "gesvd":
        return bg.check_svd(mesh, ins[0], *outs)
    if op == "polar":
        return bg.check_polar(mesh, ins[0], *outs)
    return check_sygvd(mesh, *ins, outs[1], outs[0])


# ---------------------------------------------------------------------------
# one device count (a child process)


def _timed(fn, args, reps):
    """(median s, the last call's outputs as a tuple)."""
    last = []

    def keep(*a):
        last[:] = [fn(*a)]
        return last[0]

    t = timing.median_time(keep, *args, reps=reps)
    out = last[0]
    return t, (out if isinstance(out, tuple) else (out,))


def _result(op, mesh, ins, t, outs, status, n, dtype, seed):
    ok, vals, bad = bench.verdict(check(op, mesh, ins, outs, seed), status, n, dtype)
    return {"s": t, "valid": "ok" if ok else "FAIL " + ",".join(bad)}


def _err(e):
    return {"s": None, "valid": bench._short(e)}


def engines_to_force(op, mesh, n, dtype, auto):
    """{engine: dispatch name} of the engines the decision accepts forced
    here, other than auto's own choice (its time stands for them)."""
    from jaxmg.pipeline import decide as _decide

    out = {}
    for engine, name in DISPATCH_OF.items():
        try:
            got = _decide.for_mesh(DECIDE_OP.get(op, op), mesh, ("x",), name, n, dtype)
        except ValueError:
            continue  # cannot run here
        if got == engine and engine != auto and engine not in out:
            out[engine] = name
    return out


def one_device(op, ins, dtype, n, args):
    """jnp / jax.scipy on device 0, on the same matrix, validated."""
    dev0 = jax.devices()[0]
    # Auto axes: the checks' shard_maps take replicated arrays as any spec.
    mesh1 = jax.make_mesh((1,), ("x",), devices=[dev0], axis_types=(jax.sharding.AxisType.Auto,))
    # Through the host: an array typed on the explicit mesh keeps its
    # sharding type on device_put, which jnp's linalg refuses.
    local = [jax.device_put(np.asarray(x), dev0) for x in ins]
    try:
        t, outs = _timed(jax.jit(ONE_DEVICE[op]), local, args.reps)
        ins1 = [jax.device_put(x, NamedSharding(mesh1, P(*((None,) * x.ndim)))) for x in local]
        outs1 = [jax.device_put(x, NamedSharding(mesh1, P(*((None,) * x.ndim)))) for x in outs]
        return _result(op, mesh1, ins1, t, outs1, 0, n, dtype, args.seed)
    except Exception as e:  # noqa: BLE001 - out of memory or a solver error is a result
        return _err(e)


def jaxmg_route(op, ins, tile, mesh, dispatch, dtype, n, args):
    try:
        t, outs = _timed(jaxmg_fn(op, tile, mesh, dispatch), ins, args.reps)
        return _result(op, mesh, ins, t, outs[:-1], int(outs[-1]), n, dtype, args.seed)
    except Exception as e:  # noqa: BLE001
        return _err(e)


def child(args):
    from jaxmg.pipeline import decide as _decide

    nd = args.child
    if nd > len(jax.devices()):
        print(f"sweep: {nd} devices asked, {len(jax.devices())} present", file=sys.stderr)
        return []
    mesh = bench.make_mesh(nd)
    dev = jax.devices()[0]
    rows = []
    for op in args.ops:
        for dt in args.dtypes:
            dtype = DTYPES[dt]
            for n in args.sizes:
                if bg.rows_of(op, n) % nd:
                    continue
                ins = jax.block_until_ready(inputs(op, mesh, n, dtype, args))
                auto = _decide.for_mesh(DECIDE_OP.get(op, op), mesh, ("x",), "auto", n, dtype)
                base = one_device(op, ins, dtype, n, args)
                for tile in args.tiles:
                    def run(how):
                        return jaxmg_route(op, ins, tile, mesh, how, dtype, n, args)

                    row = {"op": op, "dtype": dt, "n": n, "ndev": nd, "T_A": tile, "auto": auto,
                           "device": f"{dev.device_kind} ({dev.platform})", "one-dev": base,
                           "routes": {auto: run("auto")}}
                    for engine, name in engines_to_force(op, mesh, n, dtype, auto).items():
                        row["routes"][engine] = run(name)
                    row["load"] = os.getloadavg()[0]
                    print("ROW " + json.dumps(row), flush=True)
                    rows.append(row)
                del ins
    return rows


# ---------------------------------------------------------------------------
# the parent: one child per device count, then the table


def run_child(argv, nd, timeout, on_row):
    """The rows of one child (ndev = nd), each passed to on_row as it comes;
    the child is killed after `timeout` s. Its stderr is this one's."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={nd}").strip()
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", str(nd)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("ROW "):
                on_row(json.loads(line[4:]))
    finally:
        timer.cancel()
        rc = proc.wait()
    if rc != 0:
        print(f"sweep: ndev={nd} child ended with status {rc}", file=sys.stderr)


def _s(r):
    return r["s"] if r and r["s"] is not None and r["valid"] == "ok" else None


def _fmt(r):
    if r is None:
        return "-"
    return f"{r['s']:.4g}" if r["valid"] == "ok" else ("fail" if r["s"] is None else "INVALID")


def _ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def markdown(rows):
    engines = [e for e in DISPATCH_OF if any(e in r["routes"] for r in rows)]
    head = ["op", "dtype", "N", "ndev", "T_A", "auto", *[f"{e} s" for e in engines], "one-dev s",
            "auto/one-dev", "auto/best engine", "valid", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        auto = _s(r["routes"][r["auto"]])
        best = min((t for t in map(_s, r["routes"].values()) if t is not None), default=None)
        bad = [f"{k}: {v['valid']}" for k, v in [*r["routes"].items(), ("one-dev", r["one-dev"])]
               if v["valid"] != "ok"]
        ratio = _ratio(auto, _s(r["one-dev"]))
        if ratio != "-" and float(ratio) > 1.05:
            ratio = f"**{ratio}**"
        lines.append("| " + " | ".join([
            r["op"], r["dtype"], str(r["n"]), str(r["ndev"]), str(r["T_A"]), r["auto"],
            *[_fmt(r["routes"].get(e)) for e in engines], _fmt(r["one-dev"]), ratio,
            _ratio(auto, best), "; ".join(bad) or "ok", f"{r['load']:.1f}"]) + " |")
    return "\n".join(lines)


def _key(r):
    return (OPS.index(r["op"]), r["dtype"], r["n"], r["ndev"], str(r["T_A"]))


def merged(paths):
    rows = {}
    for path in paths:
        with open(path) as f:
            rows.update((_key(r), r) for r in json.load(f))
    return list(rows.values())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if any(d in ("f64", "c128") for d in args.dtypes):
        jax.config.update("jax_enable_x64", True)
    if args.child is not None:
        child(args)
        return 0
    rows = merged(args.merge.split(",")) if args.merge else []

    def on_row(row):  # kept as it comes: a sweep cut short keeps its rows
        rows.append(row)
        print(f"sweep: {row['op']} {row['dtype']} N={row['n']} ndev={row['ndev']} "
              f"T_A={row['T_A']}: auto={row['auto']} load {row['load']:.1f}", file=sys.stderr,
              flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)

    for nd in ([] if args.merge else args.ndev):
        print(f"sweep: ndev={nd}, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        run_child(argv, nd, args.child_timeout, on_row)
    rows.sort(key=_key)
    md = markdown(rows)
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md + "\n")
    fine = all(v["valid"] == "ok" for r in rows for v in [*r["routes"].values(), r["one-dev"]])
    return 0 if rows and fine else 1


if __name__ == "__main__":
    sys.exit(main())
