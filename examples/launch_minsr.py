"""The MinSR demo (examples/minsr.py) on a multi-process launch, its 2-D
mesh ("S", "T") across (emulated) nodes: "S" runs over the nodes, "T" over
the devices of one node.

This script starts --procs processes on this machine, each calling
jax.distributed.initialize against a coordinator on localhost, and gives
process i the node id node<i // (procs / nodes)> (JAXMG_NODE_ID), so one
machine stands in for --nodes hosts. On a real cluster, start minsr.py's
processes with srun/mpirun instead (docs/multinode.md); this script only
replaces the launcher.

Where the solve runs (--solve):
  node    T_reg sharded P("T", None): every node solves its own copy over
          its devices (the host engine on CPU, cuSolverMg or one GPU on GPUs).
  across  T_reg sharded P("S", "T"): one solve on an S x T process grid
          spanning the nodes, on the cuSOLVERMp engine (GPUs only; CPU
          engines solve within a node and refuse it).
Default: node on CPU, across on GPUs.

    # CPU, 4 processes on 2 emulated nodes, one CPU device each
    python examples/launch_minsr.py --procs 4 --nodes 2 -- --samples 256 --steps 3
    # GPUs, one process per GPU (4 GPUs as 2 nodes of 2)
    python examples/launch_minsr.py --platform gpu --procs 4 --nodes 2

Arguments after "--" go to minsr.py (see python examples/minsr.py -h).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = "JAXMG_LAUNCH_MINSR_CHILD"


def _gpu_count() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=4, help="processes (GPUs: one per GPU)")
    p.add_argument("--nodes", type=int, default=2, help="emulated nodes (must divide --procs)")
    p.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto",
                   help="auto: gpu where nvidia-smi lists GPUs, else cpu")
    p.add_argument("--local", type=int, default=1, help="CPU devices per process (CPU only)")
    p.add_argument("--solve", choices=("auto", "node", "across"), default="auto")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole job")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.procs < 1 or args.nodes < 1 or args.procs % args.nodes:
        p.error(f"--nodes={args.nodes} must divide --procs={args.procs}")
    return args, rest


# ---------------------------------------------------------------------------
# parent


def launch(argv=None) -> int:
    args, rest = _parse(argv)
    platform = args.platform
    gpus = _gpu_count() if platform != "cpu" else 0
    if platform == "auto":
        platform = "gpu" if gpus else "cpu"
    if platform == "gpu" and gpus < args.procs:
        print(f"launch_minsr: {args.procs} processes need {args.procs} GPUs, found {gpus}",
              file=sys.stderr)
        return 2
    solve = args.solve if args.solve != "auto" else ("across" if platform == "gpu" else "node")
    port, per_node = _free_port(), args.procs // args.nodes
    procs = []
    for i in range(args.procs):
        cfg = dict(port=port, nprocs=args.procs, nodes=args.nodes, pid=i, local=args.local,
                   platform=platform,
                   solve=solve, gpus=gpus, argv=rest)
        env = dict(os.environ, JAXMG_NODE_ID=f"node{i // per_node}", **{CHILD: json.dumps(cfg)})
        if platform == "cpu":
            env.update(JAX_PLATFORMS="cpu",
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={args.local}")
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + args.timeout
    outs, codes = [], []
    for i, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:  # only the processes this launch started
                if q.poll() is None:
                    q.kill()
            out, _ = p.communicate()
            out += f"\n[launch_minsr: process {i} killed after {args.timeout:g} s]"
        outs.append(out)
        codes.append(p.returncode)
    for i, (out, code) in enumerate(zip(outs, codes)):
        if i == 0 or code != 0:
            for line in out.splitlines():
                print(f"[{i}] {line}")
    failed = [i for i, c in enumerate(codes) if c != 0]
    if failed:
        print(f"launch_minsr: processes {failed} failed (exit codes "
              f"{[codes[i] for i in failed]})", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# child


def node_mesh(nodes: int):
    """Mesh ("S", "T"): row k holds the devices of emulated node k (the
    processes of equal JAXMG_NODE_ID, in process order)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    devs = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devs, dtype=object).reshape(nodes, -1), ("S", "T"))


def child(cfg) -> int:
    import jax

    kw = {}
    if cfg["platform"] == "gpu":  # one process per GPU
        kw["local_device_ids"] = [cfg["pid"] % max(1, cfg["gpus"])]
    jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", num_processes=cfg["nprocs"],
                               process_id=cfg["pid"], initialization_timeout=120, **kw)
    from jax.sharding import PartitionSpec as P

    sys.path.insert(0, HERE)
    import minsr

    mesh = node_mesh(cfg["nodes"])
    if cfg["solve"] == "across":
        minsr.SOLVE_SPEC = P("S", "T")  # read by minsr at trace time: one S x T solve
    if jax.process_index() == 0:
        print(f"launch_minsr: {cfg['nprocs']} processes on {mesh.shape['S']} emulated nodes, "
              f"{cfg['platform']}, solve {cfg['solve']} "
              f"(T_reg {minsr.SOLVE_SPEC})", flush=True)
    return minsr.main(cfg["argv"], mesh=mesh)


if __name__ == "__main__":
    if CHILD in os.environ:
        sys.exit(child(json.loads(os.environ[CHILD])))
    sys.exit(launch())
