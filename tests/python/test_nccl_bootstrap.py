"""The NCCL unique-id exchange of jaxmg's own communicators
(src/jaxmg/_nccl_bootstrap.py), between real processes.

One job of 3 CPU processes on a free localhost port, each with
jax.distributed.initialize, runs every scenario in turn; where no NCCL
exists the id is 128 random bytes, which is all the exchange moves. Each
process records what it got; the test checks that all members got the
leader's bytes, that every exchange got fresh bytes, and that a missing
leader or member is named in an error within the timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxmg.engines import nccl_bootstrap as nb

NPROCS = 3
SHORT_S = 1.0  # the timeout of the scenarios where someone is missing

WORKER = r"""
import json, os, sys
import jax
cfg = json.loads(sys.argv[1])
jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", cfg['n'], cfg['me'],
                           initialization_timeout=60)
from jaxmg.engines import nccl_bootstrap as nb
me, short = cfg['me'], cfg['short']
rec = {}

def run(name, ranks, tag, timeout=None, skip=()):
    if me in skip or me not in ranks:
        return
    try:
        uid = nb.exchange_unique_id(ranks, tag, lambda: os.urandom(128), timeout=timeout)
        rec[name] = uid.hex()
    except nb.BootstrapError as e:
        rec[name] = "error: " + str(e)

run("first", [0, 1, 2], "A")
run("again", [0, 1, 2], "A")
run("subset", [1, 2, 2, 1], "B")           # process 0 holds no rank
run("no_leader", [0, 1, 2], "C", short, skip=(0,))
run("no_member", [0, 1, 2], "D", short, skip=(2,))
run("after", [2, 0, 1], "A")              # a different leader, same tag

# _mp.open_sets over a fake engine library: 2 groups of 3 devices, each
# group spanning 2 processes (2 CPU devices per process).
import numpy as np
from jax.sharding import Mesh
from jaxmg.engines import grid as _grid
from jaxmg.engines import mp as _mp
opened = []

class FakeLib:
    def jmg_mp_open(self, tag, uid, nranks, rank, ordinal, p, q, timeout, err):
        opened.append([tag.decode(), bytes(uid).hex(), nranks, rank, ordinal, p, q])
        return 0
    def jmg_mp_lost(self, tag, ordinal):
        return 0

_mp.library = lambda: FakeLib()
_mp._unique_id = lambda: os.urandom(128)
mesh = Mesh(np.array(jax.devices()).reshape(2, 3), ("g", "x"))
grid = _grid.grid_from_mesh(mesh, "x", grid=(1, 3))
tag = _mp.open_sets(grid)
rec["same_tag_again"] = _mp.open_sets(grid) == tag
grouped = []
FakeLib.jmg_mp_open_local = lambda self, tag, uid, nranks, count, ranks, ords, p, q, t, err: (
    grouped.append([tag.decode(), bytes(uid).hex(), nranks, list(ranks[:count]),
                    list(ords[:count]), p, q]) or 0)
os.environ["JAXMG_MP_INIT"] = "group"
mesh1 = Mesh(np.array(jax.devices()).reshape(3, 2), ("g", "x"))  # each group in one process
tag1 = _mp.open_sets(_grid.grid_from_mesh(mesh1, "x", grid=(1, 2)))
rec["grouped"] = grouped
rec["opened"] = opened
rec["groups"] = [list(g) for g in grid.groups]
rec["devices"] = {d.id: [d.process_index, d.local_hardware_id] for d in jax.devices()}
from jax._src import distributed
distributed.global_state.client.wait_at_barrier("test_end", 60000)
with open(cfg['out'], "w") as f:
    json.dump(rec, f)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bootstrap")
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = []
    t0 = time.monotonic()
    for i in range(NPROCS):
        cfg = dict(port=port, n=NPROCS, me=i, short=SHORT_S, out=str(tmp / f"{i}.json"))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)],
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a bootstrap process hung")
        logs.append(out)
        assert p.returncode == 0, out[-3000:]
    wall = time.monotonic() - t0
    return [json.loads((tmp / f"{i}.json").read_text()) for i in range(NPROCS)], wall


def test_members_get_the_leaders_id(job):
    rec, _ = job
    for name, members in (("first", (0, 1, 2)), ("again", (0, 1, 2)),
                          ("subset", (1, 2)), ("after", (0, 1, 2))):
        got = {rec[p][name] for p in members}
        assert len(got) == 1, (name, got)
        (uid,) = got
        assert len(bytes.fromhex(uid)) == nb.ID_BYTES
    assert "subset" not in rec[0]
    ids = {rec[0]["first"], rec[0]["again"], rec[1]["subset"], rec[0]["after"]}
    assert len(ids) == 4  # every exchange has its own key and fresh bytes


def test_missing_leader_is_named(job):
    rec, wall = job
    for p in (1, 2):
        msg = rec[p]["no_leader"]
        assert msg.startswith("error: ") and "process 0 (NCCL rank 0" in msg, msg
    assert "no_leader" not in rec[0]


def test_missing_member_is_named(job):
    rec, wall = job
    for p in (0, 1):
        msg = rec[p]["no_member"]
        assert msg.startswith("error: ") and "process 2 (NCCL ranks [2])" in msg, msg
    # Two short timeouts and the start-up; no waiting for JAXMG_TIMEOUT_S.
    assert wall < 60


def test_open_sets_joins_every_rank_once(job):
    """Every rank of every group is opened exactly once, by the process that
    holds its device, with that device's ordinal and its group's id."""
    rec, _ = job
    groups = rec[0]["groups"]
    owner = {int(d): v[0] for d, v in rec[0]["devices"].items()}
    assert sum(len(r["opened"]) for r in rec) == sum(len(g) for g in groups)
    assert all(r["same_tag_again"] for r in rec)  # cached: no second join
    assert len({o[0] for r in rec for o in r["opened"]}) == 1  # one tag for the FFI calls
    group_ids = []
    for group in groups:
        assert len({owner[d] for d in group}) > 1  # the case spans processes
        uids = set()
        for rank, d in enumerate(group):
            ordinal = rec[owner[d]]["devices"][str(d)][1]  # as its own process sees it
            mine = [o for o in rec[owner[d]]["opened"] if o[3] == rank and o[4] == ordinal]
            assert len(mine) == 1, (rank, d, rec[owner[d]]["opened"])
            assert mine[0][2] == len(group) and (mine[0][5], mine[0][6]) == (1, 3)
            uids.add(mine[0][1])
        assert len(uids) == 1  # one id per group, on all its ranks
        group_ids.append(uids.pop())
    assert len(set(group_ids)) == len(groups)


def test_open_sets_grouped(job):
    """JAXMG_MP_INIT=group: a process opens its ranks of a group in one call
    (one NCCL group), no exchange needed when it holds them all."""
    rec, _ = job
    for p, r in enumerate(rec):
        (g,) = r["grouped"]  # one group per process: its own two devices
        assert g[2] == 2 and g[3] == [0, 1] and g[4] == [0, 1] and (g[5], g[6]) == (1, 2)


def test_single_process_and_bad_input():
    uid = nb.exchange_unique_id([0, 0], "solo", lambda: b"\x01" * 128, me=0)
    assert uid == b"\x01" * 128
    with pytest.raises(nb.BootstrapError, match="128 bytes"):
        nb.exchange_unique_id([0], "solo", lambda: b"\x01" * 127, me=0)
    with pytest.raises(ValueError, match="holds no rank"):
        nb.exchange_unique_id([1, 2], "solo", lambda: b"", me=0)
    with pytest.raises(nb.BootstrapError, match="jax.distributed"):
        nb.exchange_unique_id([0, 1], "solo", lambda: b"", me=0, client=None)


def test_set_tag_tells_sets_apart():
    a = nb.set_tag([0, 1, 2, 3], (2, 2))
    assert a == nb.set_tag([0, 1, 2, 3], (2, 2))
    assert len({a, nb.set_tag([1, 0, 2, 3], (2, 2)), nb.set_tag([0, 1, 2, 3], (1, 4))}) == 3
