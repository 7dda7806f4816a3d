"""The NCCL unique id of a jaxmg communicator, moved between processes.

jaxmg makes its own NCCL communicators for the cuSOLVERMp engine (never
XLA's). One communicator spans one device set (the devices of a solve, in
NCCL rank order); its 128-byte ncclUniqueId is drawn by the process of rank
0 and must reach every process that holds a rank. It travels through
jax.distributed's key-value store, the coordination service JAX itself uses
to share compiled executables, so nothing runs on a device and no XLA
collective is compiled:

  1. the leader (process of rank 0) publishes the id under
     jaxmg/nccl/<set tag>/<generation>/id;
  2. every member process reads it (blocking, with the timeout) and then
     announces itself under .../arrived/<process>;
  3. every member waits until all members have announced themselves, so no
     process enters ncclCommInitRank, which blocks without a timeout, before
     all of them are known to be alive and holding the id. The leader then
     deletes the previous generation's keys: every member has left that
     exchange once all have arrived at this one (deleting this one's keys now
     could hide the arrivals from a member still polling).

A timeout names who is missing: the leader in step 2, the absent processes
(and the NCCL ranks they hold) in step 3. The set tag hashes the ordered
device ids and the grid; the generation counts this process's exchanges
for that tag, which is the same on every process because SPMD programs make
the same calls in the same order. So two communicators, or two rebuilds of
one, never share a key.

A single-process program needs no exchange: the id is drawn and used in the
same process.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Callable, Sequence

import jax

from . import library as _library

ID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES

_lock = threading.Lock()
_generations: collections.Counter = collections.Counter()


class BootstrapError(RuntimeError):
    """A member of a jaxmg communicator did not take part in time."""


def timeout_s() -> float:
    """JAXMG_TIMEOUT_S, read where the C core reads it (_library.timeout_s)."""
    return _library.timeout_s()


def set_tag(device_ids: Sequence[int], grid: tuple[int, int], what: str = "mp") -> str:
    """A short name for a device set in rank order and its P x Q grid."""
    text = f"{what}|{','.join(map(str, device_ids))}|{grid[0]}x{grid[1]}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def _next_generation(tag: str) -> int:
    with _lock:
        _generations[tag] += 1
        return _generations[tag]


def _check_id(uid: bytes) -> bytes:
    if not isinstance(uid, (bytes, bytearray)) or len(uid) != ID_BYTES:
        raise BootstrapError(
            f"jaxmg: an NCCL unique id has {ID_BYTES} bytes, got "
            f"{len(uid) if isinstance(uid, (bytes, bytearray)) else type(uid).__name__}"
        )
    return bytes(uid)


def exchange_unique_id(
    rank_processes: Sequence[int],
    tag: str,
    make_id: Callable[[], bytes],
    *,
    me: int | None = None,
    client=None,
    timeout: float | None = None,
) -> bytes:
    """Returns the unique id of the communicator over `rank_processes`
    (rank_processes[r] is the process index holding NCCL rank r).

    Every process of the list must call this, with the same arguments; the
    process of rank 0 draws the id with make_id(). Raises BootstrapError
    naming the missing process and ranks after `timeout` seconds
    (JAXMG_TIMEOUT_S by default)."""
    if me is None:
        me = jax.process_index()
    members = list(dict.fromkeys(int(p) for p in rank_processes))
    if me not in members:
        raise ValueError(f"jaxmg: process {me} holds no rank of this device set")
    leader = members[0]
    if len(members) == 1:  # one process holds every rank: nothing to move
        return _check_id(make_id())
    client = client if client is not None else _client()
    if client is None:
        raise BootstrapError(
            "jaxmg: this device set spans several processes, but jax.distributed."
            "initialize() was not called; jaxmg needs its key-value store to share "
            "the NCCL communicator's id"
        )
    limit = timeout if timeout is not None else timeout_s()
    deadline = time.monotonic() + limit
    generation = _next_generation(tag)
    prefix = f"jaxmg/nccl/{tag}/{generation}"
    if me == leader:
        client.key_value_set_bytes(f"{prefix}/id", _check_id(make_id()), allow_overwrite=True)
    try:
        uid = client.blocking_key_value_get_bytes(f"{prefix}/id", _ms_left(deadline))
    except Exception as e:
        raise BootstrapError(
            f"jaxmg: process {leader} (NCCL rank 0 of this device set) did not publish "
            f"the communicator id within {limit:g} s (JAXMG_TIMEOUT_S); did it die, or "
            f"not make the same jaxmg call? ({type(e).__name__})"
        ) from e
    client.key_value_set(f"{prefix}/arrived/{me}", "1", allow_overwrite=True)
    _wait_arrivals(client, prefix, members, rank_processes, deadline, limit)
    if me == leader and generation > 1:
        try:
            client.key_value_delete(f"jaxmg/nccl/{tag}/{generation - 1}")
        except Exception:  # keys left behind cost a few bytes in the coordinator
            pass
    return _check_id(uid)


def _ms_left(deadline: float) -> int:
    return max(1, int(1000 * (deadline - time.monotonic())))


def _arrived(client, prefix: str) -> set[int]:
    got = set()
    for key, _ in client.key_value_dir_get(f"{prefix}/arrived/"):
        tail = key.rsplit("/", 1)[-1]
        if tail.isdigit():
            got.add(int(tail))
    return got


def _wait_arrivals(client, prefix, members, rank_processes, deadline, limit) -> None:
    pause = 0.002
    while True:
        missing = [p for p in members if p not in _arrived(client, prefix)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            ranks = {p: [r for r, q in enumerate(rank_processes) if q == p] for p in missing}
            who = "; ".join(f"process {p} (NCCL ranks {ranks[p]})" for p in missing)
            raise BootstrapError(
                f"jaxmg: {who} did not join the communicator within {limit:g} s "
                "(JAXMG_TIMEOUT_S); every process of a device set must make the same "
                "jaxmg calls"
            )
        time.sleep(pause)
        pause = min(0.05, pause * 2)
