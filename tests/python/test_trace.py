"""JAXMG_VERBOSE: the C core's trace on stderr (docs/status.md), read from
a fresh process because the level is read once per process."""

import os
import re
import textwrap

from helpers import run_fresh

HERE = os.path.dirname(os.path.abspath(__file__))

CODE = textwrap.dedent(
    """
    import numpy as np, jax
    from jax.sharding import Mesh, PartitionSpec as P
    import jaxmg
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    a = np.eye(64) * 4 + 1.0
    x = jaxmg.potrs(a, np.ones((64, 1)), 8, mesh, (P("x", None), P(None, None)))
    jax.block_until_ready(x)
    bad = a.copy(); bad[5, 5] = -100.0
    _, st = jaxmg.potrs(bad, np.ones((64, 1)), 8, mesh, (P("x", None), P(None, None)),
                        return_status=True)
    print("status", int(st))
    """
)


def run(level):
    r = run_fresh(["-c", CODE], env={"JAXMG_VERBOSE": level}, cwd=HERE)
    assert "status 6" in r.stdout, r.stdout
    return [line for line in r.stderr.splitlines() if line.startswith("jaxmg[")]


def test_level_2_traces_every_step_of_every_rank():
    lines = run("2")
    pid = os.getpid()
    steps = ("entered (inputs ready)", "joined the meeting", "all parties known", "done")
    for rank in range(4):
        for step in steps:
            hits = [s for s in lines if s.endswith(f"potrs rank {rank} of 4: {step}")]
            assert len(hits) == 2, (rank, step, lines)  # one per call
    # every line: "jaxmg[<pid>] <clock> <text>", the pid that of the child
    pids = {int(m.group(1)) for m in (re.match(r"jaxmg\[(\d+)\] \d+\.\d{3} ", s) for s in lines) if m}
    assert len(pids) == 1 and pid not in pids, lines
    assert sum("potrs: called, waits for its inputs" in s for s in lines) == 8
    # the leader's timings, and the failing call's status
    timing = [s for s in lines if "open " in s and " run " in s]
    assert len(timing) == 2 and "info 0," in timing[0] and "info 6," in timing[1], timing


def test_level_1_prints_the_workspace_line_only():
    lines = run("1")
    assert len(lines) == 2, lines
    # tile=16: the host engine takes each shard whole (it gathers; T_A=8 pads nothing there)
    assert all(re.search(r"potrs: (m=64 )?n=64 nloc=16 tile=16 nrhs=1 parties=4 dispatch=\d workspace( \d+){4}$", s)
               for s in lines), lines


def test_off_by_default():
    assert run("0") == []
