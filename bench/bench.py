"""Benchmark jaxmg against the raw cuSolverMg engine and one GPU.

    python bench/bench.py [--ops potrs,potri,syevd,lu_solve,least_squares,qr,gesvd,polar]
        [--dtypes f64,f32]
        [--sizes 4096,16384,32768] [--tiles 1024|auto,...] [--ndev 4,2,1]
        [--dispatch auto,multi,single] [--reps 3] [--nrhs 1]
        [--raw PATH_TO_raw_mg] [--single] [--csv OUT.csv] [--md OUT.md]

Each case builds its matrix on the devices (never on the host), runs the
jitted jaxmg call once to compile and warm up, then times REPS calls with
block_until_ready and reports the median. Every jaxmg result is validated
with cheap sharded residuals. bench/README.md has the details. The general
ops (bench_general.py) are timed against jnp.linalg / jax.scipy on one GPU
(--single); least squares at size N is 2N x N; lu_solve also against raw
cuSolverMg getrf/getrs (--raw).
"""

import os

# NVLink multicast (NVLS) must stay off: on a shared multi-GPU host it can
# take the GPUs out of service. NCCL reads this when JAX's backend starts,
# so it is set before jax is imported (raw_mg inherits it too).
os.environ["NCCL_NVLS_ENABLE"] = "0"

import argparse  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

ROW = P("x", None)
REP = P(None, None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_general  # noqa: E402

OPS = ("potrs", "potri", "syevd") + bench_general.OPS
RAW_OPS = ("potrs", "potri", "syevd") + bench_general.RAW_OPS
DTYPES = {"f32": np.float32, "f64": np.float64, "c64": np.complex64, "c128": np.complex128}
# cuSolverMg's syevd takes tiles of at most 1024 columns (jaxmg caps it too).
SYEVD_MAX_TILE = 1024
LU_MAX_TILE = 512  # cuSolverMg's getrf/getrs (jaxmg caps lu_solve's tile too)
HIGHEST = jax.lax.Precision.HIGHEST


# Comma-list argument types, shared with memory.py.
def ints(s):
    return [int(x) for x in s.split(",") if x]


def tiles(s):
    return [None if x == "auto" else int(x) for x in s.split(",") if x]


def names(allowed):
    def f(s):
        out = [x for x in s.split(",") if x]
        bad = [x for x in out if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(allowed)}")
        return out

    return f


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    p.add_argument("--ops", type=names(OPS), default=["potrs", "potri", "syevd"])
    p.add_argument("--dtypes", type=names(DTYPES), default=["f64", "f32"])
    p.add_argument("--sizes", type=ints, default=[4096, 16384, 32768])
    p.add_argument("--tiles", type=tiles, default=[1024], help="T_A values; 'auto' for T_A=None")
    p.add_argument("--dispatch", type=names(("auto", "multi", "single", "mp", "local")), default=["auto"],
                   help="jaxmg solver choices to time (comma list)")
    p.add_argument("--ndev", type=ints, default=[4], help="device counts (comma list)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--nrhs", type=int, default=1, help="right-hand sides for potrs")
    p.add_argument("--raw", default=None, help="path to the raw_mg binary (bench/build_raw.sh)")
    p.add_argument("--raw-timeout", type=float, default=1800.0)
    p.add_argument("--single", action="store_true", help="also time the 1-device JAX path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None)
    p.add_argument("--md", default=None)
    a = p.parse_args(argv)
    if a.reps < 1 or a.nrhs < 1:
        p.error("--reps and --nrhs must be >= 1")
    return a


def effective_tile(op, tile, n=None, nd=None):
    """The tile jaxmg uses (T_A=None: the automatic one for N / ndev)."""
    cap = {"syevd": SYEVD_MAX_TILE, "lu_solve": LU_MAX_TILE}.get(op)
    if tile is None:
        from jaxmg.pipeline import tiles as _tiles

        return _tiles.auto_tile(n // nd, cap)
    return min(tile, cap) if cap else tile


def eps(dtype):
    return float(np.finfo(np.dtype(dtype)).eps)


def is_complex(dtype):
    return np.issubdtype(np.dtype(dtype), np.complexfloating)


def real_dtype(dtype):
    return np.finfo(np.dtype(dtype)).dtype


def cases(args):
    for op in args.ops:
        for dt in args.dtypes:
            for n in args.sizes:
                for tile in args.tiles:
                    for nd in args.ndev:
                        for how in args.dispatch:
                            yield op, dt, n, tile, nd, how


# ---------------------------------------------------------------------------
# raw engine (a subprocess)


def _wheel_lib_dirs():
    """The CUDA wheels JAX installs (nvidia/*/lib): raw_mg finds
    libcusolverMg and its dependencies there on machines without a toolkit."""
    dirs = []
    try:
        import nvidia  # a namespace package, present with jax[cuda*]

        for root in getattr(nvidia, "__path__", []):
            for sub in sorted(os.listdir(root)):
                d = os.path.join(root, sub, "lib")
                if os.path.isdir(d):
                    dirs.append(d)
    except ImportError:
        pass
    return dirs


_RAW_LINE = re.compile(r"^RAW .*median_s=(?P<med>\S+) min_s=(?P<min>\S+) info=(?P<info>-?\d+)", re.M)


def run_raw(args, op, dt, n, tile, nd):
    cmd = [args.raw, op, dt, str(n), str(effective_tile(op, tile, n, nd)), str(nd), str(args.nrhs),
           str(args.reps)]
    env = dict(os.environ)
    extra = _wheel_lib_dirs()
    if extra:
        env["LD_LIBRARY_PATH"] = ":".join(extra + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.raw_timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  raw: {' '.join(cmd)}: {e}", file=sys.stderr)
        return None
    m = _RAW_LINE.search(res.stdout)
    if res.returncode != 0 or not m:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        print(f"  raw: {' '.join(cmd)} -> rc {res.returncode}: {' | '.join(tail)}", file=sys.stderr)
        return None
    if int(m["info"]) != 0:
        print(f"  raw: {op} {dt} n={n}: info={m['info']}", file=sys.stderr)
        return None
    return float(m["med"])


# ---------------------------------------------------------------------------
# matrices, built on the devices


def make_mesh(nd):
    return jax.make_mesh((nd,), ("x",), devices=jax.devices()[:nd])


def _mix32(x):
    """A 32-bit integer finalizer (murmur3's): a cheap, well-spread hash."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def build_spd(mesh, n, dtype, seed):
    """A = 2 I + W with W a Wigner matrix: entries uniform with variance
    1/(6N) per real component (as bench/raw_mg_fill.cu builds for the raw
    driver), so the spectrum is a semicircle on about [1.2, 2.8] (complex:
    [0.85, 3.15]): SPD/HPD, well conditioned, no structure to exploit.

    Entry (i, j) is a hash of (min(i, j), max(i, j)), so each device makes
    its own rows in one elementwise pass: nothing is communicated, nothing
    but the output is allocated (the largest benchmark matrices fill most
    of the GPUs' memory), and A is the same for any device count."""
    nd = mesh.shape["x"]
    nloc = n // nd
    rdt = real_dtype(dtype)
    cplx = is_complex(dtype)
    scale = 1.0 / math.sqrt(2.0 * n)

    def unit(h):  # uniform in [-1, 1) from the top 24 bits
        return (h >> 8).astype(rdt) * (2.0 / 2**24) - 1.0

    def body():
        i = (jax.lax.axis_index("x") * nloc + jnp.arange(nloc, dtype=jnp.int32)).astype(jnp.uint32)[:, None]
        j = jnp.arange(n, dtype=jnp.uint32)[None, :]
        lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
        h = _mix32(lo * jnp.uint32(0x9E3779B1) ^ _mix32(hi ^ jnp.uint32(seed * 0x27D4EB2F + 1)))
        diag = i == j
        re_ = unit(h) * scale + jnp.where(diag, 2.0, 0.0).astype(rdt)
        if not cplx:
            return re_.astype(dtype)
        sign = jnp.where(i < j, -1.0, 1.0).astype(rdt)  # A[j][i] = conj(A[i][j])
        im_ = jnp.where(diag, 0.0, unit(_mix32(h ^ jnp.uint32(0x5BD1E995))) * scale * sign).astype(rdt)
        return jax.lax.complex(re_, im_).astype(dtype)

    f = jax.shard_map(body, mesh=mesh, in_specs=(), out_specs=ROW, check_vma=False)
    return jax.jit(f, out_shardings=NamedSharding(mesh, ROW))()


def build_replicated(mesh, shape, dtype, seed):
    f = lambda: jax.random.normal(jax.random.key(seed), shape, dtype)  # noqa: E731
    return jax.jit(f, out_shardings=NamedSharding(mesh, P(*([None] * len(shape)))))()


# ---------------------------------------------------------------------------
# validation: sharded, a few matrix-vector products at most


def _sq(x, axis=None):
    return jnp.sum(jnp.real(x * jnp.conj(x)), axis=axis)


def check_potrs(mesh, A, x, b):
    """||A x - b||_F / (||A||_F ||x||_F)."""

    def body(a, x, b):
        nloc = a.shape[0]
        bl = jax.lax.dynamic_slice_in_dim(b, jax.lax.axis_index("x") * nloc, nloc, 0)
        r = jnp.matmul(a, x, precision=HIGHEST) - bl
        num = jax.lax.psum(_sq(r), "x")
        an = jax.lax.psum(_sq(a), "x")
        return {"resid": jnp.sqrt(num) / (jnp.sqrt(an) * jnp.sqrt(_sq(x)))}

    f = jax.shard_map(body, mesh=mesh, in_specs=(ROW, REP, REP), out_specs=P(), check_vma=False)
    return jax.jit(f)(A, x, b)


def check_potri(mesh, A, X, e):
    """||A (X e) - e|| / ||e|| for a random vector e."""

    def body(a, xinv, e):
        nloc = a.shape[0]
        y = jax.lax.all_gather(jnp.matmul(xinv, e, precision=HIGHEST), "x", tiled=True)
        el = jax.lax.dynamic_slice_in_dim(e, jax.lax.axis_index("x") * nloc, nloc, 0)
        r = jnp.matmul(a, y, precision=HIGHEST) - el
        return {"resid": jnp.sqrt(jax.lax.psum(_sq(r), "x") / _sq(e))}

    f = jax.shard_map(body, mesh=mesh, in_specs=(ROW, ROW, P(None)), out_specs=P(), check_vma=False)
    return jax.jit(f)(A, X, e)


def check_syevd(mesh, A, V, w):
    """A few eigenpairs by ||A v - w v|| / (max|w| ||v||), their norms, and
    all eigenvalues at once through two invariants: sum w = trace A and
    sum w^2 = ||A||_F^2. Plus: w ascending."""
    n = A.shape[0]
    idx = np.unique(np.array([0, 1, n // 3, n // 2, (2 * n) // 3, n - 1]))

    def body(a, v, w):
        nloc = a.shape[0]
        i0 = jax.lax.axis_index("x") * nloc
        vk_loc = v[:, idx]
        vk = jax.lax.all_gather(vk_loc, "x", axis=0, tiled=True)
        r = jnp.matmul(a, vk, precision=HIGHEST) - vk_loc * w[idx].astype(a.dtype)
        res = jnp.sqrt(jax.lax.psum(_sq(r, 0), "x"))
        vn = jnp.sqrt(_sq(vk, 0))
        wmax = jnp.max(jnp.abs(w))
        tr = jax.lax.psum(jnp.sum(jnp.real(jnp.diagonal(jax.lax.dynamic_slice_in_dim(a, i0, nloc, 1)))), "x")
        fro2 = jax.lax.psum(_sq(a), "x")
        return {
            "resid": jnp.max(res / (wmax * vn)),
            "norm": jnp.max(jnp.abs(vn - 1)),
            "trace": jnp.abs(jnp.sum(w) - tr) / (n * wmax),
            "fro": jnp.abs(jnp.sum(w * w) - fro2) / fro2,
            "unsorted": jnp.sum(jnp.diff(w) < 0).astype(w.dtype),
        }

    f = jax.shard_map(body, mesh=mesh, in_specs=(ROW, ROW, P(None)), out_specs=P(), check_vma=False)
    return jax.jit(f)(A, V, w)


def verdict(metrics, status, n, dtype):
    """Pass when the solver reported success and every metric is finite and
    below 50 sqrt(N) eps: backward-stable results land orders of magnitude
    below it, a layout or conjugation error lands near 1."""
    tol = 50.0 * math.sqrt(n) * eps(real_dtype(dtype))
    vals = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in vals.items() if not (math.isfinite(v) and v <= (0 if k == "unsorted" else tol))]
    if status != 0:
        bad.insert(0, f"status={status}")
    return not bad, vals, bad


# ---------------------------------------------------------------------------
# timing


def timed(fn, args, reps):
    """Median and min over reps calls after one warm-up (which compiles)."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


def jaxmg_case(args, op, dt, n, tile, nd, how):
    import jaxmg

    dtype = DTYPES[dt]
    mesh = make_mesh(nd)
    if op in bench_general.OPS:
        med, tmin, metrics, status = bench_general.jaxmg_case(args, op, dtype, n, tile, mesh, how, timed)
        return med, tmin, verdict(metrics, int(status), n, dtype)
    A = jax.block_until_ready(build_spd(mesh, n, dtype, args.seed))
    if op == "potrs":
        b = build_replicated(mesh, (n, args.nrhs), dtype, args.seed + 1)
        fn = jax.jit(lambda A, b: jaxmg.potrs(A, b, tile, mesh, (ROW, REP), return_status=True, dispatch=how))
        med, tmin, (x, status) = timed(fn, (A, b), args.reps)
        metrics = check_potrs(mesh, A, x, b)
    elif op == "potri":
        fn = jax.jit(lambda A: jaxmg.potri(A, tile, mesh, (ROW,), return_status=True, dispatch=how))
        med, tmin, (X, status) = timed(fn, (A,), args.reps)
        e = build_replicated(mesh, (n,), dtype, args.seed + 2)
        metrics = check_potri(mesh, A, X, e)
    else:
        fn = jax.jit(lambda A: jaxmg.syevd(A, tile, mesh, (ROW,), return_status=True, dispatch=how))
        med, tmin, (w, V, status) = timed(fn, (A,), args.reps)
        metrics = check_syevd(mesh, A, V, w)
    return med, tmin, verdict(metrics, int(status), n, dtype)


def single_case(args, op, dt, n):
    """The plain JAX path on device 0, same matrix."""
    dtype = DTYPES[dt]
    mesh = make_mesh(1)
    # Typed as unsharded: on an explicit mesh the linalg ops refuse an input
    # typed P("x", None) even with one device; there this moves no data.
    whole = NamedSharding(mesh, REP)
    if op in bench_general.OPS:
        fn, shapes = bench_general.single_fn(op, args, dtype, n)
        # Plain single-device arrays: jax.scipy.linalg.polar's QDWH refuses
        # inputs typed on an explicit mesh.
        dev0 = jax.devices()[0]
        ins = [jax.device_put(jax.random.normal(jax.random.key(args.seed + i), sh, dtype), dev0)
               for i, sh in enumerate(shapes)]
        med, _, out = timed(jax.jit(fn), tuple(ins), args.reps)
        if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out)):
            raise FloatingPointError("non-finite result")
        return med
    A = jax.block_until_ready(jax.device_put(build_spd(mesh, n, dtype, args.seed), whole))
    if op == "potrs":
        b = build_replicated(mesh, (n, args.nrhs), dtype, args.seed + 1)
        fn = jax.jit(lambda A, b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A, lower=True), b))
        med, _, out = timed(fn, (A, b), args.reps)
    elif op == "potri":
        fn = jax.jit(jnp.linalg.inv)
        med, _, out = timed(fn, (A,), args.reps)
    else:
        fn = jax.jit(jnp.linalg.eigh)
        med, _, out = timed(fn, (A,), args.reps)
    # A NaN answer (e.g. a solver that gave up) is no timing to compare.
    leaves = jax.tree.leaves(out)
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in leaves):
        raise FloatingPointError("non-finite result")
    return med


def _short(e):
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0][:200] if s else ''}"


# ---------------------------------------------------------------------------
# report


COLUMNS = ["op", "dtype", "N", "T_A", "ndev", "dispatch", "jaxmg s", "raw s", "jaxmg/raw", "1-GPU s",
           "valid"]


def fmt_time(t):
    if t is None:
        return "-"
    if isinstance(t, str):
        return t
    return f"{t:.4g}"


def table_rows(rows):
    out = []
    for r in rows:
        ratio = "-"
        if isinstance(r["jaxmg_s"], float) and isinstance(r["raw_s"], float):
            ratio = f"{r['jaxmg_s'] / r['raw_s']:.3f}"
        out.append([
            r["op"], r["dtype"], str(r["n"]), str(r["tile"]), str(r["ndev"]), r["dispatch"],
            fmt_time(r["jaxmg_s"]), fmt_time(r["raw_s"]), ratio, fmt_time(r["single_s"]), r["valid"],
        ])
    return out


def markdown(rows):
    body = table_rows(rows)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(COLUMNS), sep] + [line(b) for b in body])


def write_csv(path, rows):
    keys = ["op", "dtype", "n", "tile", "ndev", "dispatch", "nrhs", "jaxmg_s", "jaxmg_min_s", "raw_s", "single_s",
            "valid", "metrics", "device"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys})


def main(argv=None):
    args = parse_args(argv)
    if any(d in ("f64", "c128") for d in args.dtypes):
        jax.config.update("jax_enable_x64", True)
    todo = list(cases(args))

    # The raw engine runs first, before JAX starts its backend: JAX would
    # otherwise hold most of every GPU's memory (preallocation) and the
    # baseline would run out of memory or compete for it.
    raw = {}
    if args.raw:
        for op, dt, n, tile, nd, _ in todo:
            if (op, dt, n, tile, nd) in raw or op not in RAW_OPS:
                continue
            print(f"raw   {op} {dt} N={n} T_A={effective_tile(op, tile, n, nd)} ndev={nd}", file=sys.stderr,
                  flush=True)
            raw[(op, dt, n, tile, nd)] = run_raw(args, op, dt, n, tile, nd)

    devices = jax.devices()
    device_desc = f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
    print(f"devices: {device_desc}; jax {jax.__version__}", file=sys.stderr)

    rows, single = [], {}
    from jaxmg import ops
    from jaxmg.pipeline import request

    def decided(op, nd, how, n, dt):  # the decision for op's default options, N x N
        decl = ops.by_row(op)
        return request.engine_for(decl, decl.options(), make_mesh(nd), ("x",), how, (n, n),
                                  DTYPES[dt])

    for op, dt, n, tile, nd, how in todo:
        engine = decided(op, nd, how, n, dt) if nd <= len(devices) else how
        chosen = {"mg": "multi"}.get(engine, engine)
        row = {"op": op, "dtype": dt, "n": n, "tile": effective_tile(op, tile, n, nd), "ndev": nd,
               "dispatch": chosen if how == chosen else f"{how}:{chosen}", "nrhs": args.nrhs,
               "jaxmg_s": None, "jaxmg_min_s": None, "raw_s": raw.get((op, dt, n, tile, nd)),
               "single_s": None, "valid": "-", "metrics": "", "device": device_desc}
        if args.raw and row["raw_s"] is None:
            row["raw_s"] = "fail" if op in RAW_OPS else "-"
        print(f"jaxmg {op} {dt} N={n} T_A={row['tile']} ndev={nd} {row['dispatch']}", file=sys.stderr,
              flush=True)
        if nd > len(devices) or bench_general.rows_of(op, n) % nd:
            why = "too few devices" if nd > len(devices) else "N not divisible by ndev"
            print(f"  skipped: {why}", file=sys.stderr)
            row["jaxmg_s"], row["valid"] = "skip", "skip"
        else:
            try:
                med, tmin, (ok, vals, bad) = jaxmg_case(args, op, dt, n, tile, nd, how)
                row.update(jaxmg_s=med, jaxmg_min_s=tmin, valid="ok" if ok else "FAIL " + ",".join(bad),
                           metrics=";".join(f"{k}={v:.3g}" for k, v in vals.items()))
                print(f"  {med:.4g} s, {row['valid']} ({row['metrics']})", file=sys.stderr, flush=True)
            except Exception as e:  # noqa: BLE001 - an OOM or a solver error is a result here
                print(f"  jaxmg failed: {_short(e)}", file=sys.stderr, flush=True)
                row["jaxmg_s"], row["valid"] = "fail", "error"
        gc.collect()
        if args.single:
            key = (op, dt, n)
            if key not in single:
                print(f"1-GPU {op} {dt} N={n}", file=sys.stderr, flush=True)
                try:
                    single[key] = single_case(args, op, dt, n)
                except Exception as e:  # noqa: BLE001 - out of memory is the expected failure
                    print(f"  1-GPU failed: {_short(e)}", file=sys.stderr, flush=True)
                    single[key] = "fail"
                gc.collect()
            row["single_s"] = single[key]
        rows.append(row)

    md = markdown(rows)
    print()
    print(md)
    if args.csv:
        write_csv(args.csv, rows)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"Device: {device_desc}; jax {jax.__version__}; reps {args.reps}; nrhs {args.nrhs}\n\n")
            f.write(md + "\n")
    return 0 if all(r["valid"] in ("ok", "skip") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
