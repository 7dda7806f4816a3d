"""Time against N per op, from bench.py CSV files: jaxmg on all GPUs
(multi), jaxmg on one GPU (single), the raw cuSolverMg driver and jnp on
one GPU.

    python bench/plot.py OUT.png results/*.csv
"""

import csv
import sys
from collections import defaultdict


def load(paths):
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            rows += [r for r in csv.DictReader(f) if r["valid"] == "ok" and r["dtype"] == "f64"]
    return rows


def series(rows, op):
    """{label: {N: seconds}} for one op (4-GPU rows at T_A 1024, potrs with
    one right-hand side)."""
    out = defaultdict(dict)
    for r in rows:
        if r["op"] != op or r["tile"] != "1024" or r["ndev"] != "4" or r.get("nrhs", "1") != "1":
            continue
        n = int(r["n"])
        out[f"jaxmg {r['dispatch']}"][n] = float(r["jaxmg_s"])
        for key, label in (("raw_s", "raw cuSolverMg"), ("single_s", "jnp, 1 GPU")):
            try:
                out[label][n] = float(r[key])
            except (TypeError, ValueError):
                pass
    return out


def main(argv):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png, paths = argv[0], argv[1:]
    rows = load(paths)
    ops = [op for op in ("potrs", "potri", "syevd") if any(r["op"] == op for r in rows)]
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for label, pts in sorted(series(rows, op).items()):
            ns = sorted(pts)
            ax.loglog(ns, [pts[n] for n in ns], "o-", label=label, base=2)
        ax.set_title(f"{op}, float64, 4 x H200")
        ax.set_xlabel("N")
        ax.set_ylabel("seconds (median of 3)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(png)


if __name__ == "__main__":
    main(sys.argv[1:])
