"""Times the cuSOLVERMp engine (issue 17) on the GPUs of this machine.

    python bench/mp_engine_bench.py [--n 8192 16384] [--ops potrs syevd]
        [--grids 1x4 4x1 2x2] [--dtypes float64] [--tile 1024] [--procs per-gpu|one]

Each (grid, N) is one job of tests/gpu/mp_engine_worker.py in its "time"
scenario (one process per GPU, or one process for all GPUs with --procs one):
every op runs once to set up (communicators, grid, workspace, compile) and
once timed. The comparison rows (cuSolverMg, one GPU) come from bench/bench.py
on the same machine; JAXMg 1.4.1 (PyPI "jaxmg", the same import name) has to
be timed from its own virtual environment (see the GPU-run issue).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "gpu"))
from test_mp_engine import free_port, gpu_count  # noqa: E402

WORKER = HERE.parent / "tests" / "gpu" / "mp_engine_worker.py"


def run(grid, n, ops, dtypes, tile, one_process):
    p, q = grid
    nprocs = 1 if one_process else p * q
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, NCCL_NVLS_ENABLE="0")
        env.pop("XLA_FLAGS", None)
        procs = [
            subprocess.Popen([sys.executable, str(WORKER), json.dumps(dict(
                port=port, nprocs=nprocs, pid=i, grid=[p, q], ops=ops, dtypes=dtypes, n=n,
                tile=tile, scenario="time", out=out, gpus_per_host=gpu_count(), tall=1))],
                env=env)
            for i in range(nprocs)
        ]
        for pr in procs:
            pr.wait()
        rec = json.loads((pathlib.Path(out) / "0.json").read_text())
    return rec["cases"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[8192])
    ap.add_argument("--ops", nargs="+", default=["potrs", "syevd"])
    ap.add_argument("--grids", nargs="+", default=["1x4", "4x1", "2x2"])
    ap.add_argument("--dtypes", nargs="+", default=["float64"])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--procs", choices=["per-gpu", "one"], default="per-gpu")
    args = ap.parse_args()
    print("grid  N      case                       seconds  status")
    for g in args.grids:
        grid = tuple(int(x) for x in g.split("x"))
        if grid[0] * grid[1] > gpu_count():
            print(f"{g}: needs {grid[0] * grid[1]} GPUs, skipped")
            continue
        for n in args.n:
            for name, case in run(grid, n, args.ops, args.dtypes, args.tile,
                                  args.procs == "one").items():
                t = case.get("time_s")
                print(f"{g:5} {n:<6} {name:26} {t if t is None else f'{t:8.3f}'}  "
                      f"{case.get('status', case.get('error', '')[:60])}")


if __name__ == "__main__":
    main()
