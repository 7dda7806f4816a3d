"""Measure the device memory of one jaxmg call and compare it with docs/memory.md.

    python bench/memory.py [--ops potrs,potri,syevd] [--dtypes f64,f32]
        [--sizes 16384,32768] [--tiles 1024|auto,...] [--ndev 4]
        [--dispatch multi,single,auto] [--nrhs 1] [--timeout 600]
        [--md OUT.md] [--csv OUT.csv]

Each case runs in a fresh child process (`--one JSON`), because a device's
peak_bytes_in_use cannot be reset. The child builds A (and b) on the
devices with bench.py's helpers, compiles the jitted call, then reads every
device's bytes_in_use and peak_bytes_in_use, runs the call once and reads
the peak again: measured extra = peak after - in use before, per device.
A value marked "<=" means the call did not raise the peak seen before it
(building the inputs or compiling peaked higher), so it is an upper bound.

The child runs with JAXMG_VERBOSE=1, so the C core prints the workspace W
each device asks XLA for; the parent reads it from the child's stderr and
fills W into docs/memory.md's formula (W holds cuSolverMg's own lwork, which
is no formula). Two predictions are printed:

  pred      docs/memory.md: XLA's copy of A + W + new outputs, the peak
            being the maximum over the phases of the call (predict_doc).
  XLA+W     XLA's own plan of the compiled program (memory_analysis: temp
            + outputs, which XLA allocates for the whole execution) plus W.

On CPU host devices memory_stats() is None: measured columns read n/a, but
every case still runs end to end (smoke test):

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_ENABLE_X64=1 \\
        python bench/memory.py --sizes 512 --tiles 128 --dtypes f64 --dispatch multi
"""

import os

# NVLink multicast (NVLS) must stay off on the shared multi-GPU hosts (see
# bench.py); NCCL reads it when JAX's backend starts, in the children.
os.environ["NCCL_NVLS_ENABLE"] = "0"

import argparse  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (imports jax, but starts no backend: the parent never touches a device)

GIB = 2**30
# cuSolverMg solves in panels of at most this many columns (mg_solve.c MG_MAX_RHS).
MG_MAX_RHS = 2048
# Engine codes as the C core prints them (jaxmg.pipeline.decide.c_code; 0, the host engine, never on GPUs).
DISPATCH_NAMES = {0: "auto", 1: "multi", 2: "single"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints, tiles, names = bench.ints, bench.tiles, bench.names

    p.add_argument("--ops", type=names(bench.OPS), default=list(bench.OPS))
    p.add_argument("--dtypes", type=names(bench.DTYPES), default=["f64"])
    p.add_argument("--sizes", type=ints, default=[16384])
    p.add_argument("--tiles", type=tiles, default=[1024], help="T_A values; 'auto' for T_A=None")
    p.add_argument("--ndev", type=ints, default=[4])
    p.add_argument("--dispatch", type=names(("auto", "multi", "single")), default=["multi"])
    p.add_argument("--nrhs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per case (child process)")
    p.add_argument("--md", default=None)
    p.add_argument("--csv", default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one case
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# the child: one case, one call


def _stats(devices):
    """(bytes_in_use, peak_bytes_in_use) per device, or None where the
    backend keeps no statistics (CPU)."""
    out = []
    for d in devices:
        try:
            ms = d.memory_stats()
        except Exception:  # noqa: BLE001 - a backend without statistics
            ms = None
        out.append([ms["bytes_in_use"], ms["peak_bytes_in_use"]] if ms and "peak_bytes_in_use" in ms else None)
    return out


def _memory_analysis(compiled):
    """XLA's per-device plan for the compiled program (one SPMD module):
    temp bytes (allocated once for the whole execution) and output bytes."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if isinstance(ma, (list, tuple)):
        ma = ma[0] if ma else None
    if ma is None:
        return None
    return {"temp": ma.temp_size_in_bytes, "output": ma.output_size_in_bytes, "alias": ma.alias_size_in_bytes}


def run_one(spec):
    import jax

    import jaxmg

    op, dt, n, nd, how = spec["op"], spec["dtype"], spec["n"], spec["ndev"], spec["dispatch"]
    if dt in ("f64", "c128"):
        jax.config.update("jax_enable_x64", True)
    devices = jax.devices()
    if nd > len(devices):
        raise SystemExit(f"{nd} devices asked for, {len(devices)} present")
    dtype = bench.DTYPES[dt]
    mesh = bench.make_mesh(nd)
    T_A = spec["tile"]
    A = jax.block_until_ready(bench.build_spd(mesh, n, dtype, spec["seed"]))
    if op == "potrs":
        b = jax.block_until_ready(bench.build_replicated(mesh, (n, spec["nrhs"]), dtype, spec["seed"] + 1))
        args = (A, b)
        fn = lambda A, b: jaxmg.potrs(A, b, T_A, mesh, (bench.ROW, bench.REP), return_status=True,  # noqa: E731
                                      dispatch=how)
    elif op == "potri":
        args = (A,)
        fn = lambda A: jaxmg.potri(A, T_A, mesh, (bench.ROW,), return_status=True, dispatch=how)  # noqa: E731
    else:
        args = (A,)
        fn = lambda A: jaxmg.syevd(A, T_A, mesh, (bench.ROW,), return_status=True, dispatch=how)  # noqa: E731

    # Compiled ahead, so that whatever compiling allocates on the devices
    # (autotuning) is over before the "before" reading.
    compiled = jax.jit(fn).lower(*args).compile()
    gc.collect()
    devs = list(mesh.devices.flat)  # the solve axis' first device is devs[0]
    before = _stats(devs)
    out = jax.block_until_ready(compiled(*args))
    after = _stats(devs)
    res = {
        "platform": devs[0].platform,
        "device": f"{len(devices)} x {devs[0].device_kind} ({devs[0].platform})",
        "jax": jax.__version__,
        "status": int(out[-1]),
        "before": before,  # [in_use, peak] per device
        "peak_after": [a[1] if a else None for a in after],
        "xla": _memory_analysis(compiled),
    }
    print("MEMORY " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------
# prediction (docs/memory.md)


def round_up(x):
    """The C core's 256-byte rounding of workspace pieces (gpu_round_up)."""
    return -(-x // 256) * 256


def geometry(op, n, nd, T_A):
    """jaxmg's own tile choice and padding: (T, n, n_p, N_p) as docs/tiles.md names them."""
    from jaxmg.pipeline import shard as _shard

    plan = _shard.pad_plan(op, n, nd, T_A, True, "mg",
                           bench.SYEVD_MAX_TILE if op == "syevd" else None)
    # the order the solver sees: syevd's pad rows stay outside A (docs/tiles.md)
    order = nd * plan.rows if plan.inside else n
    return plan.tile, plan.lrows, plan.rows, order


def predict_doc(op, dt, n, nd, T_A, nrhs, work):
    """Extra bytes per device for one call (over the caller's A and b,
    already in use), from docs/memory.md's two tables; work is W per device
    as the engine asked for it. The peak is the larger of the phases: during
    the engine call (W held) and after it (W returned to the pool)."""
    dtype = bench.DTYPES[dt]
    s = np.dtype(dtype).itemsize
    s_r = np.dtype(bench.real_dtype(dtype)).itemsize
    tile, nloc, nloc_p, n_p_all = geometry(op, n, nd, T_A)
    padded = nloc_p != nloc
    # XLA's copy of A that the engine works in (A is not donated); when
    # jaxmg pads the shard, the padded array plays this role instead.
    shard_p = nloc_p * n_p_all * s
    out = []
    for w in work:
        if op == "potrs":
            # b, copied by XLA (aliased, column-major, padded to N_p rows),
            # is overwritten by x; x cut back to N rows is a new buffer
            # only when padded. Both are O(N K s).
            rhs = n_p_all * nrhs * s + (n * nrhs * s if padded else 0)
            out.append(shard_p + w + rhs)
        elif op == "potri":
            # The result is the engine's buffer (aliased to the copy); W
            # holds the inverse X (a shard) and, on rank 0, the identity
            # panel. Cut to n x N when padded: that slice is a new buffer,
            # made after W is released.
            after = shard_p + (nloc * n * s if padded else 0)
            out.append(max(shard_p + w, after))
        else:
            # Eigenvalues: a new (N_p,) output on every device (cut to N:
            # another one when padded).
            evals = n_p_all * s_r + (n * s_r if padded else 0)
            during = shard_p + evals + w
            # Eigenvectors, after W is released: the engine's rows (the copy)
            # go through one all_to_all into a new shard, then a local
            # transpose into V; docs/memory.md says "one or two more shards"
            # on top of A and the copy; this takes one (the copy dies once
            # the all_to_all has read it, and V can take its place). Cut to
            # n x N when padded: another (smaller) buffer.
            after = 2 * shard_p + evals + (nloc * n * s if padded else 0)
            out.append(max(during, after))
    return out


def solver_part(op, dt, n, nd, T_A, dispatch, w0):
    """What W on the first device holds beyond the formula's closed-form
    terms, in bytes: cuSolverMg's L s (multi; None when the staging tile is
    the larger use) or cuSOLVER's D (single). For docs/memory.md's L and D."""
    if not w0:
        return None
    dtype = bench.DTYPES[dt]
    s = np.dtype(dtype).itemsize
    s_r = np.dtype(bench.real_dtype(dtype)).itemsize
    tile, _, nloc_p, n_p_all = geometry(op, n, nd, T_A)
    if dispatch == "single":
        # dn_solve.c's plan: G, potri's X, syevd's eigenvalues, 256 for info, then D.
        mats = (2 if op == "potri" else 1) * round_up(n_p_all * n_p_all * s)
        evals = round_up(n_p_all * s_r) if op == "syevd" else 0
        return w0 - mats - evals - 256
    # mg_solve_workspace: max(staging unit, X + Q + L s) + 256; the staging
    # unit is gcd(T, n_p) columns (= T, since n_p is a multiple of T).
    stage = math.gcd(tile, nloc_p) * n_p_all * s
    x = round_up(n_p_all * nloc_p * s) if op == "potri" else 0
    q = round_up(n_p_all * min(n_p_all, MG_MAX_RHS) * s) if op == "potri" else 0
    solver = w0 - 256
    return None if solver == stage else solver - x - q


# ---------------------------------------------------------------------------
# the parent: one child per case, then the table


_VERBOSE = re.compile(
    r"^jaxmg\[\d+\] [\d.]+ (?P<op>\w+): n=(?P<n>\d+) nloc=(?P<nloc>\d+) tile=(?P<tile>\d+) nrhs=\d+ parties=(?P<np>\d+) "
    r"dispatch=(?P<disp>\d+) workspace(?P<bytes>(?: \d+)*)\s*$", re.M)


def run_case(args, op, dt, n, tile, nd, how):
    spec = {"op": op, "dtype": dt, "n": n, "tile": tile, "ndev": nd, "dispatch": how, "nrhs": args.nrhs,
            "seed": args.seed}
    env = dict(os.environ, JAXMG_VERBOSE="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, None, f"timed out after {args.timeout:.0f} s"
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("MEMORY "):
            res = json.loads(line[len("MEMORY "):])
    # The leader prints one line per call: the last one of this op is ours.
    calls = [m for m in _VERBOSE.finditer(p.stderr) if m["op"] == op]
    if p.returncode != 0 or res is None:
        tail = [x for x in (p.stderr or p.stdout).strip().splitlines() if x][-3:]
        return None, None, f"rc {p.returncode}: " + " | ".join(tail)
    return res, (calls[-1] if calls else None), None


def build_row(args, op, dt, n, tile, nd, how):
    t_used, nloc, nloc_p, n_p_all = geometry(op, n, nd, tile)
    row = {"op": op, "dtype": dt, "n": n, "ndev": nd, "tile": t_used, "dispatch": how, "nrhs": args.nrhs,
           "padded": nloc_p != nloc, "work": None, "pred": None, "xla": None, "pred_xla": None, "meas": None,
           "upper": None, "solver_part": None, "status": None, "device": "", "error": ""}
    res, verbose, err = run_case(args, op, dt, n, tile, nd, how)
    if err:
        row["error"] = err
        return row
    row.update(status=res["status"], device=f"{res['device']}; jax {res['jax']}", xla=res["xla"])
    if verbose is None:
        row["error"] = "no JAXMG_VERBOSE line (jaxmg built without it?)"
    else:
        row["work"] = [int(x) for x in verbose["bytes"].split()]
        row["dispatch"] = DISPATCH_NAMES.get(int(verbose["disp"]), verbose["disp"])
        if how != row["dispatch"]:
            row["dispatch"] = f"{how}:{row['dispatch']}"
        # The engine's own view of the geometry must be the one predicted.
        seen = (int(verbose["n"]), int(verbose["nloc"]), int(verbose["tile"]))
        if seen != (n_p_all, nloc_p, t_used):
            print(f"  note: engine saw n={seen[0]} nloc={seen[1]} tile={seen[2]}, predicted "
                  f"{n_p_all} {nloc_p} {t_used}", file=sys.stderr)
        if res["platform"] == "cpu":
            row["dispatch"] += " (host)"  # the host engine has one path; W = 0
        row["pred"] = predict_doc(op, dt, n, nd, tile, args.nrhs, row["work"])
        kind = "single" if row["dispatch"].split(":")[-1].startswith("single") else "multi"
        row["solver_part"] = solver_part(op, dt, n, nd, tile, kind, row["work"][0])
        if row["xla"]:
            base = row["xla"]["temp"] + row["xla"]["output"] - row["xla"]["alias"]
            row["pred_xla"] = [base + w for w in row["work"]]
    if all(b is not None for b in res["before"]):
        row["meas"] = [pa - b[0] for b, pa in zip(res["before"], res["peak_after"])]
        # The call never went above the peak reached before it: its own peak
        # is hidden, the value is only an upper bound.
        row["upper"] = [pa <= b[1] for b, pa in zip(res["before"], res["peak_after"])]
    return row


def gib(x, upper=False):
    if x is None:
        return "n/a"
    return ("<=" if upper else "") + f"{x / GIB:.4g}"


def ratio(a, b):
    return f"{a / b:.3f}" if a is not None and b else "n/a"


COLUMNS = ["op", "dtype", "N", "P", "T_A", "dispatch", "W dev0", "W max", "L·s or D", "pred dev0", "pred max",
           "XLA+W max", "meas dev0", "meas max", "meas/pred", "meas/(XLA+W)"]


def table_cells(r):
    head = [r["op"], r["dtype"], str(r["n"]), str(r["ndev"]), str(r["tile"]) + ("*" if r["padded"] else ""),
            r["dispatch"]]
    if r["status"] is None:  # the child failed: no numbers at all
        return head + ["fail"] + ["-"] * (len(COLUMNS) - len(head) - 1)
    work, pred, px, meas, up = r["work"], r["pred"], r["pred_xla"], r["meas"], r["upper"]
    part = gib(r["solver_part"])
    if r["solver_part"] is None and work and work[0]:
        part = "staging"  # multi: the staging tile is the larger use of W
    elif not work or not work[0]:
        part = "-"
    imax = max(range(len(meas)), key=meas.__getitem__) if meas else None
    meas_max = meas[imax] if meas else None
    pred_max = max(pred) if pred else None
    px_max = max(px) if px else None
    return head + [
        gib(work[0] if work else None), gib(max(work) if work else None), part,
        gib(pred[0] if pred else None), gib(pred_max), gib(px_max),
        gib(meas[0] if meas else None, up and up[0]), gib(meas_max, up and up[imax]),
        ratio(meas_max, pred_max), ratio(meas_max, px_max),
    ]


def markdown(rows):
    body = [table_cells(r) for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(COLUMNS), "| " + " | ".join("-" * w for w in widths) + " |"] + [line(b) for b in body])


def write_csv(path, rows):
    """Bytes, per device as ';'-separated lists (device 0 first)."""
    keys = ["op", "dtype", "n", "ndev", "tile", "padded", "dispatch", "nrhs", "work", "solver_part", "pred",
            "pred_xla", "meas", "upper", "xla_temp", "xla_output", "status", "device", "error"]

    def cell(v):
        return ";".join(str(int(x)) for x in v) if isinstance(v, list) else v

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            xla = r["xla"] or {}
            w.writerow({**{k: cell(r.get(k)) for k in keys if k in r},
                        "xla_temp": xla.get("temp"), "xla_output": xla.get("output")})


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        run_one(json.loads(args.one))
        return 0
    rows = []
    for op, dt, n, tile, nd, how in bench.cases(args):
        if n % nd:
            print(f"{op} {dt} N={n} ndev={nd}: skipped (N not divisible by ndev)", file=sys.stderr)
            continue
        print(f"{op} {dt} N={n} T_A={tile} ndev={nd} {how}", file=sys.stderr, flush=True)
        row = build_row(args, op, dt, n, tile, nd, how)
        if row["error"]:
            print(f"  {row['error']}", file=sys.stderr, flush=True)
        if row["status"]:
            print(f"  solver status {row['status']}", file=sys.stderr, flush=True)
        rows.append(row)

    device = next((r["device"] for r in rows if r["device"]), "?")
    notes = ("GiB per device, extra over what was in use before the call (A, b). W: the workspace the "
             "engine asked for (JAXMG_VERBOSE). pred: docs/memory.md with that W. XLA+W: XLA's temp + "
             "output bytes (memory_analysis) + W. meas: peak after - in use before; '<=': the call did "
             "not raise the earlier peak. T_A*: shards padded to whole tiles.")
    md = markdown(rows)
    print()
    print(f"Device: {device}; nrhs {args.nrhs}")
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"Device: {device}; nrhs {args.nrhs}\n\n{notes}\n\n{md}\n")
    if args.csv:
        write_csv(args.csv, rows)
    return 0 if all(not r["error"] and not r["status"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
