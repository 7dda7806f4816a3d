"""One sweep: jaxmg's dispatch="auto" against every engine that can run and
against jnp / jax.scipy on ONE device, per op, dtype, N, device count and
T_A, every result validated by its defining equation; on one GPU also
against JAXMg 1.4.1 itself.

    python bench/sweep.py [--ops potrs,...,eigh_generalized] [--dtypes f32,f64]
        [--sizes 256,512,1024,2048] [--ndev 1,2,4,8] [--tiles auto,96]
        [--reps 3] [--md OUT.md] [--json OUT.json] [--child-timeout S]
        [--engines single,mp,local] [--slow-s S] [--time-budget S]
        [--target 1.0] [--skip op:route,...] [--peer-site DIR --mp-site DIR --peer-budget S]

Each device count runs in its own subprocess (on CPU the host device count
is fixed when JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count;
on GPUs the child takes the first ndev GPUs). In a child, per N (smallest
first), op (in --ops order) and dtype: the matrix is built once on the mesh
(bench.py / bench_general.py's builders); jaxmg runs with dispatch="auto"
(and decide.for_mesh names the engine it chose) and with each engine of
--engines the decision accepts forced there (one that resolves to the auto
engine reuses auto's time); the same matrix, moved to device 0, goes
through jnp / jax.scipy (`one-dev`), once per T_A.
Timing: bench/timing.py's first_or_median (compiled ahead; a warm-up, then
the median of --reps; a first call of --slow-s or longer is the measurement
alone, marked * in the table). With --time-budget, a route whose time at a
smaller N, scaled by N^3, would run past the budget is skipped and says so.
Ratios: auto / one-dev (bold above --target) and auto / the best jaxmg
engine.
--peer-site (a pip --target folder holding JAXMg 1.4.1, which is also
named jaxmg): first, one child on one device imports that jaxmg instead
and times its ops on the same matrices (same builders and seeds, same
checks; its tile: PEER_TILE), as column `1.4.1`, with auto / 1.4.1 (bold
above PEER_TARGET). --mp-site: the folder of the cuSOLVERMp wheels it
loads. --peer-budget: that child's share of --time-budget.
A row whose result fails its check says so in `valid`, and the exit status
is 1. `load` is the 1-minute load average when the row finished.
"""

import os

# NVLink multicast off (bench.py says why); set before jax is imported.
os.environ["NCCL_NVLS_ENABLE"] = "0"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

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
DISPATCH_OF = {"host": "host", "single": "single", "mg": "multi", "mp": "mp", "local": "local",
               "composed": "composed"}
# JAXMg 1.4.1's ops (all on cuSOLVERMp; no potri, no generalized eigenproblem),
# its tile per op (JAXMg's own finding: 256 for the eigensolvers, whose gesvd
# runs one; 1024 for the factorisations), and the target auto / 1.4.1.
PEER_OPS = ("potrs", "lu_solve", "least_squares", "qr", "gesvd", "polar", "syevd")
PEER_TILE = {"syevd": 256, "gesvd": 256}
PEER_TILE_DEFAULT = 1024
PEER_TARGET = 0.95
SKIPPED = "skipped"


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
    p.add_argument("--engines", type=bench.names(DISPATCH_OF), default=list(DISPATCH_OF),
                   help="the engines to force besides auto's choice (default: every one)")
    p.add_argument("--slow-s", type=float, default=math.inf,
                   help="a first call this long is the measurement alone (bench/timing.py)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole sweep: routes that would overrun are skipped")
    p.add_argument("--target", type=float, default=1.05,
                   help="auto / one-dev above this is bold")
    p.add_argument("--skip", type=lambda t: {tuple(x.split(":", 1)) for x in t.split(",") if x},
                   default=set(), help="op:route pairs left out (route: an engine, one-dev or 1.4.1)")
    p.add_argument("--peer-site", default=None, help="a --target folder holding JAXMg 1.4.1")
    p.add_argument("--mp-site", default=None, help="a --target folder of the cuSOLVERMp wheels")
    p.add_argument("--peer-budget", type=float, default=None,
                   help="seconds of --time-budget for JAXMg 1.4.1's child (default: all)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--peer-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
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


def peer_fn(op, mesh, jit=True):
    """JAXMg 1.4.1's call (the jaxmg this child imports), status last; A
    not donated, as jaxmg's calls keep it. jit=False: the call itself
    (jitted inside 1.4.1), for where an enclosing jit fails."""
    import jaxmg

    f, tile = getattr(jaxmg, op), PEER_TILE.get(op, PEER_TILE_DEFAULT)
    kw = dict(return_status=True, donate=False)
    if op in ("potrs", "lu_solve", "least_squares"):
        fn = lambda A, b: f(A, b, tile, mesh, ROW, **kw)  # noqa: E731
    else:
        fn = lambda A: f(A, tile, mesh, ROW, **kw)  # noqa: E731
    return jax.jit(fn) if jit else fn


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


class Budget:
    """--time-budget in a child: a route whose time at a smaller N, scaled
    by N^3, would run past the deadline is skipped (a route never timed
    runs while any time is left)."""

    def __init__(self, args):
        self.deadline, self.reps, self.slow_s = args.deadline, args.reps, args.slow_s
        self.left_out = args.skip
        self.seen = {}

    def skip(self, key, n):
        """None, or the record of a skipped route."""
        if (key[0], key[2]) in self.left_out:
            return {"s": None, "valid": f"{SKIPPED}: --skip"}
        if self.deadline is None:
            return None
        left = self.deadline - time.time()
        n0, t0 = self.seen.get(key, (n, 0.0))
        est = t0 * (n / n0) ** 3
        need = est * (1 if est >= self.slow_s else 1 + self.reps)
        if left > 0 and need <= left:
            return None
        return {"s": None, "valid": f"{SKIPPED}: est. {need:.0f} s, {max(left, 0):.0f} s left"}

    def run(self, key, n, fn):
        """fn()'s record, or the skip's."""
        r = self.skip(key, n)
        if r is None:
            r = fn()
            if r["s"] is not None:
                self.seen[key] = (n, r["s"])
        return r


def _timed(fn, args, reps, slow_s):
    """(seconds, "first" or "median" (bench/timing.py), the last call's
    outputs as a tuple)."""
    t, timed, out = timing.first_or_median(fn, *args, reps=reps, slow_s=slow_s)
    return t, timed, (out if isinstance(out, tuple) else (out,))


def _result(op, mesh, ins, t, timed, outs, status, n, dtype, seed):
    ok, vals, bad = bench.verdict(check(op, mesh, ins, outs, seed), status, n, dtype)
    return {"s": t, "timed": timed, "valid": "ok" if ok else "FAIL " + ",".join(bad)}


def _err(e):
    return {"s": None, "valid": bench._short(e)}


def _engine(op, mesh, dispatch, n, dtype):
    """The engine decision for op (its default options) on an N x N A."""
    from jaxmg import ops
    from jaxmg.pipeline import request

    decl = ops.by_row(DECIDE_OP.get(op, op))
    return request.engine_for(decl, decl.options(), mesh, ("x",), dispatch, (n, n), dtype)


def engines_to_force(op, mesh, n, dtype, auto, allowed):
    """{engine: dispatch name} of the engines of `allowed` the decision
    accepts forced here, other than auto's own choice (its time stands for
    them)."""
    out = {}
    for engine, name in DISPATCH_OF.items():
        if engine not in allowed:
            continue
        try:
            got = _engine(op, mesh, name, n, dtype)
        except ValueError:
            continue  # cannot run here
        if got == engine and engine != auto and engine not in out:
            out[engine] = name
    return out


def _to_device0(xs):
    """xs on device 0 alone, through the host: an array typed on the
    explicit mesh keeps its sharding type on device_put, which jnp's
    linalg refuses."""
    dev0 = jax.devices()[0]
    return [jax.device_put(np.asarray(x), dev0) for x in xs]


def _one_device_result(op, local, t, timed, outs, status, n, dtype, args):
    """The record of one-device outputs of `local` inputs, checked on a
    one-device mesh with Auto axes (the checks' shard_maps take replicated
    arrays as any spec there)."""
    mesh1 = jax.make_mesh((1,), ("x",), devices=jax.devices()[:1],
                          axis_types=(jax.sharding.AxisType.Auto,))

    def put(xs):
        return [jax.device_put(x, NamedSharding(mesh1, P(*((None,) * x.ndim)))) for x in xs]

    return _result(op, mesh1, put(local), t, timed, put(outs), status, n, dtype, args.seed)


def one_device(op, ins, dtype, n, args):
    """jnp / jax.scipy on device 0, on the same matrix, validated."""
    local = _to_device0(ins)
    try:
        t, timed, outs = _timed(jax.jit(ONE_DEVICE[op]), local, args.reps, args.slow_s)
        return _one_device_result(op, local, t, timed, outs, 0, n, dtype, args)
    except Exception as e:  # noqa: BLE001 - out of memory or a solver error is a result
        return _err(e)


def peer(op, ins, mesh, dtype, n, args):
    """JAXMg 1.4.1 on the mesh's one device, on the same matrix, validated
    on a copy of its outputs (its status: word 0 of its per-rank vector)."""
    try:
        try:
            t, timed, outs = _timed(peer_fn(op, mesh), ins, args.reps, args.slow_s)
        except Exception as e:  # noqa: BLE001 - then as peer_jaxmg14.py calls it
            print(f"sweep: JAXMg 1.4.1 {op} under jax.jit: {bench._short(e)}; called directly",
                  file=sys.stderr, flush=True)
            t, timed, outs = _timed(peer_fn(op, mesh, jit=False), ins, args.reps, args.slow_s)
        status = int(np.asarray(outs[-1]).reshape(-1)[0])
        return _one_device_result(op, _to_device0(ins), t, timed, _to_device0(outs[:-1]),
                                  status, n, dtype, args)
    except Exception as e:  # noqa: BLE001
        return _err(e)


def jaxmg_route(op, ins, tile, mesh, dispatch, dtype, n, args):
    try:
        t, timed, outs = _timed(jaxmg_fn(op, tile, mesh, dispatch), ins, args.reps, args.slow_s)
        return _result(op, mesh, ins, t, timed, outs[:-1], int(outs[-1]), n, dtype, args.seed)
    except Exception as e:  # noqa: BLE001
        return _err(e)


def _cases(args, nd):
    """(n, [(op, dtype name), ...]) in the order they run: the smallest N
    first, so that --time-budget has each route's time there before the
    larger."""
    for n in sorted(args.sizes):
        yield n, [(op, dt) for op in args.ops if bg.rows_of(op, n) % nd == 0
                  for dt in args.dtypes]


class Child:
    """One device count's rows. Per N, two passes over the ops: auto and
    one-dev first, then the forced engines, so that a tight --time-budget
    spends itself on the comparison the sweep is for. A row is printed
    after each pass (the second replaces the first in the parent); the
    matrices are rebuilt for the second (same builders, same seeds)."""

    def __init__(self, args):
        self.args, self.nd = args, args.child
        self.mesh = bench.make_mesh(self.nd)
        dev = jax.devices()[0]
        self.device = f"{dev.device_kind} ({dev.platform})"
        self.budget = Budget(args)
        self.rows = {}

    def route(self, op, dt, n, ins, tile, engine, how):
        a = self.args
        return self.budget.run((op, dt, engine, tile), n, lambda: jaxmg_route(
            op, ins, tile, self.mesh, how, DTYPES[dt], n, a))

    def first_pass(self, op, dt, n, ins, auto):
        dtype, a = DTYPES[dt], self.args
        base = self.budget.run((op, dt, "one-dev"), n, lambda: one_device(op, ins, dtype, n, a))
        for tile in a.tiles:
            self.emit({"op": op, "dtype": dt, "n": n, "ndev": self.nd, "T_A": tile, "auto": auto,
                       "device": self.device, "one-dev": base,
                       "routes": {auto: self.route(op, dt, n, ins, tile, auto, "auto")}})

    def forced_pass(self, op, dt, n, ins, auto):
        engines = engines_to_force(op, self.mesh, n, DTYPES[dt], auto, self.args.engines)
        for tile in self.args.tiles:
            row = self.rows[(op, dt, n, tile)]
            for engine, name in engines.items():
                row["routes"][engine] = self.route(op, dt, n, ins, tile, engine, name)
            self.emit(row)

    def emit(self, row):
        row["load"] = os.getloadavg()[0]
        self.rows[(row["op"], row["dtype"], row["n"], row["T_A"])] = row
        print("ROW " + json.dumps(row), flush=True)

    def run(self):
        for n, cases in _cases(self.args, self.nd):
            for step in (self.first_pass, self.forced_pass):
                for op, dt in cases:
                    ins = jax.block_until_ready(inputs(op, self.mesh, n, DTYPES[dt], self.args))
                    auto = _engine(op, self.mesh, "auto", n, DTYPES[dt])
                    step(op, dt, n, ins, auto)
                    del ins


def child(args):
    if args.child > len(jax.devices()):
        print(f"sweep: {args.child} devices asked, {len(jax.devices())} present", file=sys.stderr)
        return
    Child(args).run()


def peer_child(args):
    """JAXMg 1.4.1's times on one device (the jaxmg on this child's path is
    1.4.1), one PEER line per (op, dtype, N). It runs as a one-process
    jax.distributed job, as JAXMg 1.4.1 is run everywhere else here."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=1, process_id=0,
                               local_device_ids=[0])
    import jaxmg

    print(f"sweep: JAXMg {getattr(jaxmg, '__version__', '?')} from {jaxmg.__file__}",
          file=sys.stderr, flush=True)
    mesh = bench.make_mesh(1)
    budget = Budget(args)
    for n, cases in _cases(args, 1):
        for op, dt in cases:
            if op not in PEER_OPS:
                continue
            dtype = DTYPES[dt]
            ins = jax.block_until_ready(inputs(op, mesh, n, dtype, args))
            r = budget.run((op, dt, "1.4.1"), n, lambda: peer(op, ins, mesh, dtype, n, args))
            print("PEER " + json.dumps({"op": op, "dtype": dt, "n": n, "peer": r}), flush=True)
            del ins


# ---------------------------------------------------------------------------
# the parent: one child per device count, then the table


def run_child(argv, nd, timeout, on_line, env=None):
    """The lines of one child (ndev = nd), each ROW / PEER line passed to
    on_line(kind, record) as it comes; the child is killed after `timeout`
    s. Its stderr is this one's."""
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={nd}").strip()
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", str(nd)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            kind, _, rest = line.partition(" ")
            if kind in ("ROW", "PEER"):
                on_line(kind, json.loads(rest))
    finally:
        timer.cancel()
        rc = proc.wait()
    if rc != 0:
        print(f"sweep: ndev={nd} child ended with status {rc}", file=sys.stderr)


def peer_env(args):
    """The environment of JAXMg 1.4.1's child: its folder first on the path
    (its jaxmg shadows this one), then the cuSOLVERMp wheels'."""
    env = dict(os.environ)
    first = [d for d in (args.peer_site, args.mp_site) if d]
    env["PYTHONPATH"] = os.pathsep.join(first + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def _skipped(r):
    return r is not None and r["valid"].startswith(SKIPPED)


def _s(r):
    return r["s"] if r and r["s"] is not None and r["valid"] == "ok" else None


def _fmt(r):
    if r is None:
        return "-"
    if _skipped(r):
        return "skip"
    if r["valid"] != "ok":
        return "fail" if r["s"] is None else "INVALID"
    return f"{r['s']:.4g}" + ("*" if r.get("timed") == "first" else "")


def _ratio(a, b, target=None):
    if a is None or not b:
        return "-"
    text = f"{a / b:.2f}"
    return f"**{text}**" if target is not None and a / b > target else text


def _notes(r):
    """The routes of a row whose result is not a valid time, and why."""
    named = [*r["routes"].items(), ("one-dev", r["one-dev"]), ("1.4.1", r.get("peer"))]
    return "; ".join(f"{k}: {v['valid']}" for k, v in named if v and v["valid"] != "ok") or "ok"


def markdown(rows, target):
    engines = [e for e in DISPATCH_OF if any(e in r["routes"] for r in rows)]
    peer = any(r.get("peer") for r in rows)
    head = ["op", "dtype", "N", "ndev", "T_A", "auto", *[f"{e} s" for e in engines], "one-dev s",
            *(["1.4.1 s"] if peer else []), "auto/one-dev", *(["auto/1.4.1"] if peer else []),
            "auto/best engine", "valid", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        auto = _s(r["routes"][r["auto"]])
        best = min((t for t in map(_s, r["routes"].values()) if t is not None), default=None)
        lines.append("| " + " | ".join([
            r["op"], r["dtype"], str(r["n"]), str(r["ndev"]), str(r["T_A"]), r["auto"],
            *[_fmt(r["routes"].get(e)) for e in engines], _fmt(r["one-dev"]),
            *([_fmt(r.get("peer"))] if peer else []), _ratio(auto, _s(r["one-dev"]), target),
            *([_ratio(auto, _s(r.get("peer")), PEER_TARGET)] if peer else []),
            _ratio(auto, best), _notes(r), f"{r['load']:.1f}"]) + " |")
    return "\n".join(lines)


def legend(args):
    slow = (f"A time marked * is one call after compiling (its first call took >= {args.slow_s} "
            "s); the others are" if math.isfinite(args.slow_s) else "Times are")
    return (f"Seconds; auto/one-dev in bold above {args.target}, auto/1.4.1 above {PEER_TARGET}. "
            f"{slow} the median of {args.reps} calls after a warm-up. skip: left out by the time "
            "budget (`valid` gives its estimate).")


def _key(r):
    return (OPS.index(r["op"]), r["dtype"], r["n"], r["ndev"], str(r["T_A"]))


def merged(paths):
    rows = {}
    for path in paths:
        with open(path) as f:
            rows.update((_key(r), r) for r in json.load(f))
    return list(rows.values())


def _valid_or_skipped(v):
    return v is None or v["valid"] == "ok" or _skipped(v)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if any(d in ("f64", "c128") for d in args.dtypes):
        jax.config.update("jax_enable_x64", True)
    if args.child is not None:
        (peer_child if args.peer_child else child)(args)
        return 0
    rows = merged(args.merge.split(",")) if args.merge else []
    peers = {}
    start = time.time()

    def write():
        md = legend(args) + "\n\n" + markdown(sorted(rows, key=_key), args.target)
        if args.md:
            with open(args.md, "w") as f:
                f.write(md + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return md

    def on_line(kind, rec):  # kept as it comes: a sweep cut short keeps its rows
        if kind == "PEER":
            peers[(rec["op"], rec["dtype"], rec["n"])] = rec["peer"]
            print(f"sweep: JAXMg 1.4.1 {rec['op']} {rec['dtype']} N={rec['n']}: "
                  f"{rec['peer']['valid']}", file=sys.stderr, flush=True)
            return
        if rec["ndev"] == 1 and (rec["op"], rec["dtype"], rec["n"]) in peers:
            rec["peer"] = peers[(rec["op"], rec["dtype"], rec["n"])]
        rows[:] = [r for r in rows if _key(r) != _key(rec)] + [rec]
        print(f"sweep: {rec['op']} {rec['dtype']} N={rec['n']} ndev={rec['ndev']} "
              f"T_A={rec['T_A']}: auto={rec['auto']} load {rec['load']:.1f}", file=sys.stderr,
              flush=True)
        write()

    def deadline(budget):
        return [] if budget is None else ["--deadline", repr(start + budget)]

    ndevs = [] if args.merge else args.ndev
    if args.peer_site and 1 in ndevs:
        print("sweep: JAXMg 1.4.1 on one device", file=sys.stderr, flush=True)
        share = args.peer_budget if args.peer_budget is not None else args.time_budget
        run_child([*argv, "--peer-child", *deadline(share)], 1, args.child_timeout, on_line,
                  peer_env(args))
    for nd in ndevs:
        print(f"sweep: ndev={nd}, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        run_child([*argv, *deadline(args.time_budget)], nd, args.child_timeout, on_line)
    print(write())
    fine = all(_valid_or_skipped(v) for r in rows
               for v in [*r["routes"].values(), r["one-dev"], r.get("peer")])
    return 0 if rows and fine else 1


if __name__ == "__main__":
    sys.exit(main())
