"""vmap for jaxmg's cores: a batch of systems runs as a batch.

The FFI calls (in _calls.py) declare vmap_method="sequential"; these rules
(jax.custom_batching.custom_vmap over each core) take over before JAX gets
there:

- potrs-like cores, core(A, b) -> (x, *scalars), batched over b only: the
  batch folds into b's columns, (B, N, K) -> (N, B*K), one solve, one
  factorization for the whole batch. The scalar outputs (status, logdet)
  belong to the one matrix and are not batched.
- batched A (with or without b), and every matrix core (potri, syevd):
  one traced core inside lax.map, so the batch is one shard_map, padded
  and sharded once, whose per-device body runs the engine B times in
  sequence on the devices that hold A's rows. Nothing is gathered; there is
  no per-element retracing. What is left for a batched engine: one FFI call
  taking (B, N/P, N) and looping (or batched kernels) inside C, which would
  save B-1 rendezvous and launch round trips, not flops.

Nested vmaps work: each rule calls the batched core again, so an outer
vmap meets the same rule.
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
        if not b_bat:
            b = jnp.broadcast_to(b, (axis_size,) + b.shape)
        outs = jax.lax.map(lambda ab: batched(*ab), (A, b))
        return outs, tuple(True for _ in outs)

    return batched


def matrix_op(core):
    """core(A) -> outputs, batchable over A."""

    @custom_vmap
    def batched(A):
        return core(A)

    @batched.def_vmap
    def rule(axis_size, in_batched, A):
        outs = jax.lax.map(batched, A)
        return outs, jax.tree.map(lambda _: True, outs)

    return batched
