"""Multi-process mode against what containers, a small /dev/shm and crashes
do to it (issue 14), on CPU processes of this machine.

Each test runs its jobs through mp_worker.py's driver inside a mount
namespace of its own with a fresh tmpfs on /dev/shm, so that it can list
everything jaxmg leaves there without seeing other programs' files, and can
make /dev/shm as small as Docker's default. That needs root and unshare
(CI runs as root); elsewhere the tests are skipped, saying so.

 - kill -9 at each phase of a call (JAXMG_TEST_KILL_AT): the survivor fails
   at once, the segments of the dead process are gone when the survivor
   exits, and after the next job nothing at all is left;
 - a /dev/shm too small for a shard: an error on every process naming the
   bytes and the folder (it was a SIGBUS), and the job goes on;
 - each process in a PID namespace of its own (both are PID 1), sharing
   /dev/shm as the containers of one pod do: correct results (the leader
   used to take the other's pointers for its own and crash).
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import helpers
from mp_matrices import rng, spd
from test_multiprocess import check_ops, ok, replicas

WORKER = os.path.join(os.path.dirname(__file__), "mp_worker.py")


def _can_unshare() -> str | None:
    """None if private mount (and PID) namespaces work here, else why not."""
    if os.geteuid() != 0:
        return "needs root for a private tmpfs on /dev/shm (unshare -m)"
    if not shutil.which("unshare"):
        return "needs util-linux unshare"
    probe = "mount -t tmpfs -o size=1m tmpfs /dev/shm && unshare -p -f --mount-proc true"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", probe],
                       capture_output=True, text=True, timeout=30)
    return None if r.returncode == 0 else f"unshare does not work here: {r.stderr.strip()}"


WHY_NOT = _can_unshare()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def drive(tmp_path, jobs, shm_size="256m", limit_s=120):
    """Runs jobs in a fresh mount namespace with a tmpfs of shm_size on
    /dev/shm; returns (what /dev/shm held at the start, per job: its
    result dict with the processes' findings under "seen")."""
    spec = dict(out=str(tmp_path), jobs=jobs, limit_s=limit_s)
    script = (f"mount -t tmpfs -o size={shm_size},mode=1777 tmpfs /dev/shm && "
              f"ls /dev/shm > {shlex.quote(str(tmp_path / 'before.txt'))} && "
              f"exec {shlex.quote(sys.executable)} {shlex.quote(WORKER)} --driver "
              f"{shlex.quote(json.dumps(spec))}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=len(jobs) * limit_s + 60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    before = (tmp_path / "before.txt").read_text().split()
    results = json.loads((tmp_path / "driver.json").read_text())["results"]
    for res in results:
        res["seen"] = []
        for i in range(len(res["codes"])):
            path = tmp_path / res["name"] / f"{i}.pkl"
            res["seen"].append(pickle.loads(path.read_bytes()) if path.exists() else None)
    return before, results


def check_call(seen):
    n = 16
    A, b = spd("A", n), rng("b").standard_normal((n, 1))
    helpers.check_solve(A, replicas([p[0] for p in ok(seen, "call")]), b, np.float64)


# (rank killed, where): every step of a 2-process host potrs. Exchanges of
# the host engine: 0 parties, 1 workspace, 2 shards shared, 3 the leader's
# verdict, 4 results fetched. "shared": rank 1 made its shard's segment and
# dies before telling anyone (the 3 x 145 MB leak); "opened": the leader
# mapped the shards and dies before running.
PHASES = [(1, "join"), (1, "exchange0"), (1, "shared"), (1, "exchange2"), (1, "exchange3"),
          (1, "exchange4"), (0, "opened"), (0, "exchange3")]


def test_kill_at_each_phase_leaves_nothing(tmp_path):
    jobs = [dict(name=f"kill{r}_{at}", scenario="one_call", kill={str(r): at}, timeout_s=10.0)
            for r, at in PHASES]
    jobs.append(dict(name="next", scenario="one_call"))
    before, results = drive(tmp_path, jobs)
    assert before == []
    for (r, at), res in zip(PHASES, results):
        codes, seen, what = res["codes"], res["seen"], f"kill rank {r} at {at}"
        assert codes[r] == -9, f"{what}: exit {codes[r]}\n{res['logs'][r]}"
        other = 1 - r
        if codes[other] == 0:  # the survivor got jaxmg's error, fast
            status, msg, secs = seen[other]["call"]
            assert status == "error" and f"rank {r}" in msg and "died" in msg, (what, msg)
            assert secs < 10, (what, secs)
            # It swept what the dead one left; only life files of processes
            # that ended by os._exit (skipping atexit) may remain.
            left = [n for n in res["shm"] if not n.startswith("jaxmg-life.")]
            assert left == [], f"{what}: left {left}"
        else:  # the leader hosts jax.distributed's service: its death may end the other
            assert r == 0, f"{what}: survivor exit {codes[other]}\n{res['logs'][other]}"
    last = results[-1]
    assert last["codes"] == [0, 0], "\n".join(last["logs"])
    check_call(last["seen"])
    assert last["shm"] == [], f"the next job left or kept {last['shm']}"


def test_small_shm_is_an_error_on_every_process(tmp_path):
    """16 MiB of /dev/shm, a 16.8 MB shard: every process gets jaxmg's error
    naming the bytes and the folder; the next call of the job works."""
    before, results = drive(tmp_path, [dict(name="room", scenario="room", n=2048)],
                            shm_size="16m")
    res = results[0]
    assert res["codes"] == [0, 0], "\n".join(res["logs"])
    need = 1024 * 2048 * 8 + 2048 * 8  # rank 1's shard of A and its b
    for i, s in enumerate(res["seen"]):
        status, msg, secs = s["big"]
        assert status == "error", f"process {i}: the big call ran: {msg}"
        assert "not enough room in /dev/shm" in msg and str(need) in msg, msg
        assert secs < 10
    check_call(res["seen"])
    assert res["shm"] == []


@pytest.mark.parametrize("size_mb", [3, 6])
def test_rendezvous_segment_in_a_tiny_shm(tmp_path, size_mb):
    """The node's rendezvous segment (4.3 MB) does not fit 3 MiB: every
    process fails at once with the room error. 6 MiB hold it once, not the
    two copies that two processes set up at the same moment: the one that
    finds no room joins the other's."""
    before, results = drive(tmp_path, [dict(name="tiny", scenario="one_call")],
                            shm_size=f"{size_mb}m")
    res = results[0]
    assert res["codes"] == [0, 0], "\n".join(res["logs"])
    if size_mb == 6:
        check_call(res["seen"])
    else:
        for i, s in enumerate(res["seen"]):
            status, msg, secs = s["call"]
            assert status == "error" and "not enough room in /dev/shm" in msg, (i, msg)
            assert secs < 10, secs
    assert res["shm"] == []


def test_processes_in_separate_pid_namespaces(tmp_path):
    """Both workers are PID 1 of their own PID namespace and share /dev/shm:
    told apart by token, they solve correctly (they used to crash)."""
    before, results = drive(tmp_path, [dict(name="pidns", scenario="ops", pidns=True,
                                            timeout_s=30.0)])
    res = results[0]
    assert all(c == 0 for c in res["codes"]), "\n".join(res["logs"])
    assert [s["_pid"] for s in res["seen"]] == [1, 1]
    check_ops(res["seen"], 2)
    assert res["shm"] == []
