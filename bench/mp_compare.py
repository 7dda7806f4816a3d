"""Time jaxmg with one process per GPU against one process driving all GPUs.

    python bench/mp_compare.py [--ops potrs,potri,syevd] [--dtypes f64] [--sizes 16384,32768]
        [--tile 1024] [--reps 3] [--nprocs P] [--md OUT.md] [--keep DIR] [--timeout S] [--cpu]

Both modes run the same code, the "time" scenario of
tests/gpu/mp_gpu_worker.py, which is bench.py's jaxmg_case with dispatch
"multi": the matrix built on the devices, one call to compile and warm up,
the median of REPS calls each timed to block_until_ready, then sharded
validation. Job 1 is one process with all P GPUs; job 2 is P processes after
jax.distributed.initialize, one GPU each, of which process 0's times count.
The jobs run one after the other in fresh processes, so neither holds GPU
memory the other needs, and this process never starts a GPU backend.

P is the number of GPUs JAX sees (--nprocs to use fewer). --cpu runs both
jobs on CPU processes (P CPU devices in one process against P processes of
one device each): a smoke test of this script, not a benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "gpu"))
import mp_gpu_worker as worker  # noqa: E402

OPS = ("potrs", "potri", "syevd")
COLUMNS = ["op", "dtype", "N", "P", "T_A", "one process s", "process per GPU s", "ratio"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def names(allowed):
        def f(s):
            out = [x for x in s.split(",") if x]
            if not out or any(x not in allowed for x in out):
                raise argparse.ArgumentTypeError(f"choose from {list(allowed)}")
            return out

        return f

    p.add_argument("--ops", type=names(OPS), default=list(OPS))
    p.add_argument("--dtypes", type=names(worker.DTYPES), default=["f64"])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=[16384, 32768])
    p.add_argument("--tile", type=int, default=1024, help="T_A (syevd's is capped at 1024)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--nprocs", type=int, default=None, help="P (default: every GPU; --cpu: 4)")
    p.add_argument("--md", default=None, help="also write the table to this file")
    p.add_argument("--keep", default=None, help="folder for the workers' logs and findings")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    p.add_argument("--cpu", action="store_true", help="CPU processes (smoke test)")
    a = p.parse_args(argv)
    if a.reps < 1:
        p.error("--reps must be >= 1")
    return a


def run(args, P, nprocs, out):
    """One job; returns process 0's cases, or None if it recorded nothing."""
    mode = "one process" if nprocs == 1 else f"{nprocs} processes"
    print(f"{mode}, {P} devices ...", file=sys.stderr, flush=True)
    cfg = dict(scenario="time", platform="cpu" if args.cpu else "gpu", local=P, ops=args.ops,
               dtypes=args.dtypes, sizes=args.sizes, reps=args.reps, tile=args.tile)
    # jaxmg's waits span a whole call of a peer (a 32768 syevd: ~20 s on 4 H200)
    codes, found, logs, hung = worker.run_job(cfg, nprocs, out, args.timeout, 600)
    if hung:
        print(f"  killed after {args.timeout:g} s; logs in {out}", file=sys.stderr)
    lead = found[0]
    if lead is None or lead.get("fatal"):
        print(f"  process 0 failed (exit {codes[0]}); log {out}/0.log:\n"
              f"{(lead or {}).get('fatal') or logs[0][-2000:]}", file=sys.stderr)
    for name, rec in (lead or {}).get("cases", {}).items():
        what = f"{rec['time_s']:.4g} s" if rec["ok"] else rec["error"][:300]
        bad = "" if not rec["ok"] or rec["valid"] else f" INVALID {rec['bad']}"
        print(f"  {name}: {what}{bad}", file=sys.stderr, flush=True)
    return lead


def cell(rec):
    if rec is None:
        return "-", None
    if not rec["ok"]:
        return "fail", None
    if not rec["valid"]:
        return "invalid", None
    return f"{rec['time_s']:.4g}", rec["time_s"]


def markdown(rows):
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(COLUMNS), "| " + " | ".join("-" * w for w in widths) + " |"]
                     + [line(r) for r in rows])


def main(argv=None):
    args = parse_args(argv)
    P = args.nprocs or (4 if args.cpu else worker.gpu_count())
    if P < 2:
        print(f"needs at least 2 devices (found {P})", file=sys.stderr)
        return 2
    out = args.keep or tempfile.mkdtemp(prefix="jaxmg_mp_compare_")
    one = run(args, P, 1, os.path.join(out, "one_process"))
    per = run(args, P, P, os.path.join(out, "per_gpu"))
    rows, all_ok = [], True
    for op in args.ops:
        for dt in args.dtypes:
            for n in args.sizes:
                key = f"{op}/{dt}/{n}"
                a = (one or {}).get("cases", {}).get(key)
                b = (per or {}).get("cases", {}).get(key)
                (ta, va), (tb, vb) = cell(a), cell(b)
                tile = next((r["tile"] for r in (a, b) if r and r["ok"]), "-")
                ratio = f"{vb / va:.3f}" if va and vb else "-"
                all_ok &= va is not None and vb is not None
                rows.append([op, dt, str(n), str(P), str(tile), ta, tb, ratio])
    desc = (one or per or {}).get("devices", "?")
    head = (f"Devices: {desc}; jax {(one or per or {}).get('jax', '?')}; dispatch multi; "
            f"reps {args.reps} (median); ratio = process per GPU / one process")
    md = markdown(rows)
    print(f"\n{head}\n\n{md}")
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"{head}\n\n{md}\n")
    if not all_ok:
        print(f"\nsome cases failed; the workers' logs and findings are in {out}", file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
