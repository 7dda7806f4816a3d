"""Multi-process mode: one process per device after jax.distributed.initialize,
as in the tutorial's multi-node section, on CPU processes of this machine.

Each test launches a job of 2 or 4 processes (mp_worker.py, each with its
own CPU devices) on a free localhost port and checks what they saw against
numpy: A x = b, A A^-1 = I, A V = V diag(w). Hosts are emulated with
JAXMG_NODE_ID: processes with the same id form one node and meet in shared
memory; a solve axis across ids must be refused before anything runs. Every
process runs under a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest

import helpers
from mp_matrices import rng, spd, sym

WORKER = os.path.join(os.path.dirname(__file__), "mp_worker.py")
LIMIT_S = 120

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def launch(tmp_path, scenario, nprocs, local=1, per_node=None, timeout_s=20.0):
    """Runs a job; returns (exit codes, per process: what it recorded)."""
    port = free_port()
    env = dict(os.environ, JAXMG_TIMEOUT_S=str(timeout_s))
    env.pop("XLA_FLAGS", None)
    procs = []
    for i in range(nprocs):
        cfg = dict(port=port, nprocs=nprocs, pid=i, local=local, scenario=scenario,
                   out=str(tmp_path))
        node = f"node{i // per_node}" if per_node else "node0"
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, json.dumps(cfg)], env=dict(env, JAXMG_NODE_ID=node),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    codes, logs = [], []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            pytest.fail(f"{scenario}: a process hung past {LIMIT_S} s:\n{out[-3000:]}")
        codes.append(p.returncode)
        logs.append(out)
    seen = []
    for i in range(nprocs):
        path = tmp_path / f"{i}.pkl"
        seen.append(pickle.loads(path.read_bytes()) if path.exists() else None)
    return codes, seen, logs

def ok(seen, name):
    """The results of `name` in every process: per result, its pieces."""
    for i, s in enumerate(seen):
        assert s is not None, f"process {i} recorded nothing"
        status, val, _ = s[name]
        assert status == "ok", f"process {i}, {name}: {val}"
    return [s[name][1] for s in seen]

def assemble(pieces, n):
    """A row-sharded result from every process's pieces (rows checked to
    agree where processes hold copies)."""
    full = None
    for proc in pieces:
        for start, stop, data in proc:
            if full is None:
                full = np.full((n,) + data.shape[1:], np.nan, data.dtype)
            stop = n if stop is None else stop
            prev = full[start:stop]
            assert np.all(np.isnan(prev)) or np.array_equal(prev, data)
            full[start:stop] = data
    assert not np.any(np.isnan(full)), "rows missing"
    return full

def replicas(pieces):
    """Every process's copies of a replicated result; they must agree."""
    copies = [data for proc in pieces for _, _, data in proc]
    for c in copies[1:]:
        np.testing.assert_array_equal(c, copies[0])
    return copies[0]

def check_ops(seen, k):
    n = 5 * k
    A, b = spd("A", n), rng("b").standard_normal((n, 2))
    helpers.check_solve(A, replicas([p[0] for p in ok(seen, "potrs")]), b, np.float64)
    helpers.check_inverse(A, assemble([p[0] for p in ok(seen, "potri")], n), np.float64)
    res = ok(seen, "syevd")
    w = replicas([p[0] for p in res])
    V = assemble([p[1] for p in res], n)
    helpers.check_eigh(sym("H", n), w, V, np.float64)
    Ac = spd("Ac", 4 * k, np.complex128)
    bc = (rng("bc").standard_normal((4 * k, 1)) + 1j).astype(np.complex128)
    helpers.check_solve(Ac, replicas([p[0] for p in ok(seen, "potrs_c128")]), bc, np.complex128)
    res = ok(seen, "not_pd")
    assert replicas([p[1] for p in res]) == 6  # the leading minor of order 6 fails
    assert np.all(np.isnan(replicas([p[0] for p in res])))
    res = ok(seen, "ctx")
    m = 4 * k
    helpers.check_solve(A[:m, :m], replicas([p[0] for p in res]), b[:m], np.float64)
    assert replicas([p[1] for p in res]).tolist() == [0]

@pytest.mark.parametrize("nprocs", [2, 4])
def test_ops_one_device_per_process(tmp_path, nprocs):
    codes, seen, logs = launch(tmp_path, "ops", nprocs)
    assert codes == [0] * nprocs, "\n".join(logs)
    check_ops(seen, nprocs)

def check_st(seen, t):
    n = 4 * t
    A, b = spd("A", n), rng("b").standard_normal((n, 1))
    helpers.check_solve(A, replicas([p[0] for p in ok(seen, "st_potrs")]), b, np.float64)
    res = ok(seen, "st_syevd")
    helpers.check_eigh(sym("H", n), replicas([p[0] for p in res]),
                       assemble([p[1] for p in res], n), np.float64)
    for name, axis in (("cross_S", "'S'"), ("cross_ST", "('S', 'T')"), ("cross_ctx", "'S'")):
        for s in seen:
            status, msg, secs = s[name]
            assert status == "error", f"{name} ran across hosts: {msg}"
            assert msg.startswith("ValueError") and f"solve axis {axis}" in msg, msg
            assert "2 hosts" in msg and secs < 5, (msg, secs)

def test_two_hosts_two_processes_each(tmp_path):
    """4 processes, 2 per emulated host: "T" crosses processes within a host
    (shared memory), "S" crosses hosts (refused as a solve axis)."""
    codes, seen, logs = launch(tmp_path, "st", 4, per_node=2)
    assert codes == [0] * 4, "\n".join(logs)
    check_st(seen, 2)

def test_two_hosts_two_devices_each(tmp_path):
    """2 processes of 2 devices, one per emulated host: "T" stays inside a
    process (its threads meet in the node's segment)."""
    codes, seen, logs = launch(tmp_path, "st", 2, local=2, per_node=1)
    assert codes == [0] * 2, "\n".join(logs)
    check_st(seen, 2)

def test_killed_rank_fails_the_others_fast(tmp_path):
    """Rank 1's process is SIGKILLed inside the call (after joining); rank 0,
    arriving later, fails at once naming it, long before its 20 s timeout."""
    codes, seen, logs = launch(tmp_path, "killed", 2, timeout_s=20.0)
    assert codes[1] == -9, logs[1]
    assert codes[0] == 0, logs[0]
    assert seen[0]["warmup"][0] == "ok"
    status, msg, secs = seen[0]["call"]
    assert status == "error" and "rank 1" in msg and "died" in msg, msg
    assert secs < 5, secs

def test_vanished_rank_times_out(tmp_path):
    """Rank 1's process dies before it reaches jaxmg's meeting: rank 0 gets
    the timeout error after JAXMG_TIMEOUT_S, naming the missing rank."""
    codes, seen, logs = launch(tmp_path, "vanished", 2, timeout_s=2.0)
    assert codes == [0, -9], "\n".join(logs)
    status, msg, secs = seen[0]["call"]
    assert status == "error" and "timed out" in msg and "missing rank 1" in msg, msg
    assert 1.5 < secs < 15, secs

def test_retrace_in_one_process_does_not_shift_pairings(tmp_path):
    """Process 1 traces an extra jaxmg program that process 0 never sees;
    the calls both make still pair by call site and give the right answers
    (a per-process count of traces shifted every later pairing: a timeout,
    or two different calls of equal shape paired silently)."""
    codes, seen, logs = launch(tmp_path, "retrace", 2, timeout_s=10.0)
    assert codes == [0, 0], "\n".join(logs)
    n = 10
    A, b = spd("A", n), rng("b").standard_normal((n, 2))
    helpers.check_solve(A, replicas([p[0] for p in ok(seen, "potrs")]), b, np.float64)
    helpers.check_inverse(A, assemble([p[0] for p in ok(seen, "potri")], n), np.float64)
