"""examples/launch_minsr.py: the MinSR demo on 4 CPU processes standing in
for 2 nodes (JAXMG_NODE_ID), mesh ("S", "T") = (2, 2) with "T" inside a
node: every node solves its own copy over "T" on the host engine, across its
two processes. Checks the exit codes, the mesh, and that every step's solve
residual is at float64 round-off and its update finite."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "examples", "launch_minsr.py")


def test_four_processes_on_two_emulated_nodes():
    cmd = [sys.executable, LAUNCH, "--procs", "4", "--nodes", "2", "--platform", "cpu",
           "--timeout", "100", "--", "--samples", "32", "--params", "256", "--steps", "2",
           "--T_A", "4", "--chunk", "100", "--dtype", "float64"]
    env = dict(os.environ, JAXMG_TIMEOUT_S="60", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "mesh (S, T) = (2, 2)" in out and "solve node (T_reg P('T', None))" in out, out[-4000:]
    steps = re.findall(r"\|dtheta\| = (\S+), solve residual (\S+)", out)
    assert len(steps) == 2, out[-4000:]
    for norm, res in steps:
        assert 0 < float(norm) < float("inf") and float(res) < 1e-12, out[-4000:]
    assert "summary: 2 steps" in out
