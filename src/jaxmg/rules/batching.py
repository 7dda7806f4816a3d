"""vmap for jaxmg's cores: a batch of systems runs as a batch.

Every FFI call (pipeline/ffi.py) declares vmap_method="broadcast_all": under
jax.vmap it becomes one call whose buffers carry the batch as leading
dimensions, and the C core runs the engine on each element after one
rendezvous (csrc/ops/handle.c). These rules (jax.custom_batching.custom_vmap
over each core) choose how a batch reaches that call:

- potrs-like cores, core(A, b) -> (x, *scalars), batched over b only: the
  batch folds into b's columns, (B, N, K) -> (N, B*K), one solve, one
  factorization for the whole batch. The scalar outputs (status, logdet)
  belong to the one matrix and are not batched.
- batched A (with or without b; an unbatched b is broadcast), and every
  matrix core (potri, syevd, the general ops): jax.vmap of the core, so the
  batch is one shard_map, padded and sharded once, with one FFI call per
  device for the whole batch. Nothing is gathered and nothing loops in the
  program; the engine sees one element at a time, so the flops are those of
  B calls and the saving is B-1 rendezvous, launches and dispatches.
  (A multi-process GPU program loops instead: pipeline/ffi.py's _sequential.)

Nested vmaps work: each rule calls the batched core again, so an outer
vmap meets the same rule. At the FFI call (`folded`) the batch dimensions
of every level are folded into one before the call and unfolded after it,
so any depth of nesting reaches the C core as one batch dimension.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


def _fold_rhs(b):
    """(B, N, ...) -> (N, B*K) and a function undoing it on x."""
    nb, n = b.shape[0], b.shape[1]
    tail = b.shape[2:]
    cols = jnp.moveaxis(b, 0, 1).reshape(n, -1)

    def unfold(x):
        return jnp.moveaxis(x.reshape((n, nb) + tail), 1, 0)

    return cols, unfold


def potrs(core):
    """core(A, b) -> (x, *rest), batchable over A, b or both."""

    @custom_vmap
    def batched(A, b):
        return core(A, b)

    @batched.def_vmap
    def rule(axis_size, in_batched, A, b):
        a_bat, b_bat = in_batched
        if not a_bat:
            cols, unfold = _fold_rhs(b)
            x, *rest = batched(A, cols)
            return (unfold(x), *rest), (True,) + (False,) * len(rest)
        outs = jax.vmap(core, in_axes=(0, 0 if b_bat else None))(A, b)
        return outs, tuple(True for _ in outs)

    return batched


def matrix_op(core):
    """core(*matrices) -> outputs, batchable over any of the matrices (one
    not batched is broadcast by the FFI call)."""

    @custom_vmap
    def batched(*mats):
        return core(*mats)

    @batched.def_vmap
    def rule(axis_size, in_batched, *mats):
        outs = jax.vmap(core, in_axes=tuple(0 if b else None for b in in_batched))(*mats)
        return outs, jax.tree.map(lambda _: True, outs)

    return batched


def factored_solve(solve):
    """solve(F, fstatus, b) -> (x, status) with a kept Cholesky factor F
    (rules/hermitian.Factored): a batch over b alone folds into b's columns (one
    solve with the one factor, never copied per element); a batch of
    factors is jax.vmap of the solve (one batched FFI call)."""

    @custom_vmap
    def batched(F, fstatus, b):
        return solve(F, fstatus, b)

    @batched.def_vmap
    def rule(axis_size, in_batched, F, fstatus, b):
        f_bat, s_bat, _ = in_batched
        if not (f_bat or s_bat):
            cols, unfold = _fold_rhs(b)
            x, status = batched(F, fstatus, cols)
            return (unfold(x), status), (True, False)
        axes = tuple(0 if bat else None for bat in in_batched)
        return jax.vmap(solve, in_axes=axes)(F, fstatus, b), (True, True)

    return batched


def folded(call, ranks, sequential: bool):
    """call(*arrays) -> tuple, its arrays of ranks `ranks` plus at most one
    leading batch dimension, made to take any number of leading batch
    dimensions (jax.vmap at any depth): they are folded into one before
    the call and unfolded on its results. Each vmap level meets the rule,
    which broadcasts its unbatched arrays and calls the folded function
    again, so the call itself is never vmapped. sequential: one call per
    element (jax.lax.map) instead of one call for the batch."""

    @custom_vmap
    def batched(*arrays):
        lead = arrays[0].shape[: arrays[0].ndim - ranks[0]]
        if not lead:
            return call(*arrays)
        flat = [x.reshape((-1,) + x.shape[x.ndim - r:]) for x, r in zip(arrays, ranks)]
        outs = jax.lax.map(lambda xs: call(*xs), flat) if sequential else call(*flat)
        return tuple(o.reshape(lead + o.shape[1:]) for o in outs)

    @batched.def_vmap
    def rule(axis_size, in_batched, *arrays):
        arrays = [x if bat else jnp.broadcast_to(x, (axis_size,) + x.shape)
                  for x, bat in zip(arrays, in_batched)]
        outs = batched(*arrays)
        return outs, tuple(True for _ in outs)

    return batched
