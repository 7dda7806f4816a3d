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

from jaxmg import _nccl_bootstrap as nb

NPROCS = 3
SHORT_S = 1.0  # the timeout of the scenarios where someone is missing

WORKER = r"""
import json, os, sys
import jax
cfg = json.loads(sys.argv[1])
jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", cfg['n'], cfg['me'],
                           initialization_timeout=60)
from jaxmg import _nccl_bootstrap as nb
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
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
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
