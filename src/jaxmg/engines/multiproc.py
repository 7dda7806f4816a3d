"""Multi-process mode: one process per device (after jax.distributed.initialize).

The devices of one solve axis must then meet across processes. The C core
does that in a POSIX shared memory segment of their node (csrc/rendezvous/
meet_shm.c); this module tells it which one, and which solve groups leave
their node (shared memory cannot reach another host: _decide refuses them
but for the cuSOLVERMp engine).

What the processes agree on, once, through jax.distributed's key-value
store (every process takes part the first time it traces a jaxmg call,
which SPMD programs do together):
  - a nonce that process 0 draws: the segment is named after it, so two jobs
    on one host never share a segment, and a dead job's leftover cannot be
    mistaken for this job's;
  - the node of every process: JAXMG_NODE_ID if set, else the host name.
    Processes with equal ids share a node (and /dev/shm). Setting
    JAXMG_NODE_ID per process emulates several hosts on one machine (the
    tests do), or splits one host's processes where they cannot share
    memory (separate IPC namespaces).

Single-process programs never come here: with jax.process_count() == 1 no
attribute is added and the C core meets threads, as before.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import socket
import threading

import jax
import numpy as np

from . import library as _library

_lock = threading.Lock()
_job: tuple[str, tuple[str, ...]] | None = None  # (nonce, node of each process)


def active() -> bool:
    return jax.process_count() > 1


def node_id() -> str:
    return os.environ.get("JAXMG_NODE_ID") or socket.gethostname()


def _timeout_ms() -> int:
    return max(1, int(1000 * _library.timeout_s()))


def _agree() -> tuple[str, tuple[str, ...]]:
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError(
            "jaxmg: this program runs in several processes but not through "
            "jax.distributed.initialize(); jaxmg needs its key-value store to find the "
            "other processes of a node"
        )
    me, n = jax.process_index(), jax.process_count()
    client.key_value_set(f"jaxmg/node/{me}", node_id(), allow_overwrite=True)
    if me == 0:
        client.key_value_set("jaxmg/nonce", secrets.token_hex(8), allow_overwrite=True)
    ms = _timeout_ms()
    try:
        nonce = client.blocking_key_value_get("jaxmg/nonce", ms)
        nodes = tuple(client.blocking_key_value_get(f"jaxmg/node/{i}", ms) for i in range(n))
    except Exception as e:  # a process that never reaches its first jaxmg call
        raise RuntimeError(
            f"jaxmg: the processes did not all announce themselves within {ms / 1000:g} s "
            f"(JAXMG_TIMEOUT_S); every process must run the same jaxmg calls: {e}"
        ) from e
    return nonce, nodes


def job() -> tuple[str, tuple[str, ...]]:
    global _job
    if _job is None:
        with _lock:
            if _job is None:
                _job = _agree()
    return _job


def meet_attrs(platform: str) -> dict:
    """The FFI attributes that send the C core to this node's segment; none
    in a single-process program."""
    if not active():
        return {}
    nonce, nodes = job()
    mine = node_id()
    tag = hashlib.sha1(mine.encode()).hexdigest()[:12]
    return dict(
        meet=f"/jaxmg.{nonce}.{tag}.{platform}",
        meet_procs=np.int64(sum(n == mine for n in nodes)),
    )


def group_nodes(mesh, axes: tuple[str, ...]) -> tuple[str, ...]:
    """The nodes of the first solve group (one position along the other
    mesh axes) whose devices sit on more than one node, sorted; () where
    every group stays on one node (always, in a single-process program).
    mesh: anything with axis_names, shape and a devices array."""
    if not active():
        return ()
    _, nodes = job()
    names = list(mesh.axis_names)
    others = [ax for ax in names if ax not in axes]
    order = [names.index(ax) for ax in others] + [names.index(ax) for ax in axes]
    size = math.prod(mesh.shape[ax] for ax in axes)
    for group in np.transpose(np.asarray(mesh.devices), order).reshape(-1, size):
        where = sorted({nodes[d.process_index] for d in group})
        if len(where) > 1:
            return tuple(where)
    return ()


def traced_group_nodes(axes: tuple[str, ...]) -> tuple[str, ...]:
    """group_nodes inside the caller's shard_map, where only the abstract
    mesh is known: answered when a concrete mesh of the same shape is in
    context (jax.set_mesh), else () (a solve group across hosts then meets
    nobody from the other host and fails after JAXMG_TIMEOUT_S, saying so)."""
    if not active():
        return ()
    try:
        from jax._src.mesh import get_concrete_mesh

        concrete = get_concrete_mesh()
    except (ImportError, AttributeError):  # a JAX without it: C reports instead
        return ()
    abstract = jax.sharding.get_abstract_mesh()
    if concrete is None or concrete.empty:
        return ()
    if tuple(concrete.axis_names) == tuple(abstract.axis_names) and tuple(
        concrete.devices.shape
    ) == tuple(abstract.axis_sizes):
        return group_nodes(concrete, axes)
    return ()
