"""Sharded products on matrices in rows over the solve axes: the pieces
every derivative rule (and the algorithms composed from jaxmg's ops) is
written with, at mesh level (global arrays with sharding constraints,
which XLA's partitioner keeps on the row shards) and per shard (this
device's row block inside a shard_map, with explicit collectives).
`Layout` says which of the two and over which axes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ..pipeline import shard as _shard


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where A lives.

    axes: the mesh axes A's rows are split over (the solve axes, in rank
    order). mesh: the mesh of a mesh-level call (A global, N x N), or None
    inside the caller's shard_map (A is this device's (N/P, N) row block).
    spec: A's own layout at mesh level, which tangents and cotangents of A
    are kept in (default: rows over `axes`)."""

    axes: tuple[str, ...]
    mesh: object = None
    spec: P | None = None

    @property
    def per_shard(self) -> bool:
        return self.mesh is None

    @property
    def row_spec(self) -> P:
        return P(self.axes if len(self.axes) > 1 else self.axes[0], None)

    @property
    def a_spec(self) -> P:
        return self.spec if self.spec is not None else self.row_spec

    @property
    def nparties(self) -> int:
        if self.per_shard:
            sizes = _shard.axis_sizes()
        else:
            sizes = dict(zip(self.mesh.axis_names, self.mesh.axis_sizes))
        return int(np.prod([sizes[ax] for ax in self.axes]))


# ---------------------------------------------------------------------------
# sharded products. Mesh level: A global with a sharding constraint (XLA's
# partitioner keeps matrix-vector products on the row shards); per shard:
# explicit collectives over the solve axes.


def is_complex(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.complexfloating)


def conj(x):
    return jnp.conj(x) if is_complex(x) else x


def _fits(shape, lay: Layout, spec: P) -> bool:
    """Whether JAX can hold an array of `shape` in `spec` (every sharded
    dimension divisible by its axes' size)."""
    sizes = dict(zip(lay.mesh.axis_names, lay.mesh.axis_sizes))
    for dim, part in zip(shape, spec):
        names = () if part is None else (part if isinstance(part, tuple) else (part,))
        if dim % int(np.prod([sizes[a] for a in names] or [1])):
            return False
    return True


def keep(M, lay: Layout, spec: P | None = None):
    """M (a matrix, mesh level) constrained to `spec` (default A's layout),
    where JAX can hold it so; per shard, M unchanged. Under differentiation
    the constraint transposes to itself, so cotangents keep the layout."""
    if lay.per_shard:
        return M
    spec = lay.a_spec if spec is None else spec
    return _shard.constrain(M, lay.mesh, spec) if _fits(M.shape, lay, spec) else M


def explicit(lay: Layout) -> bool:
    types = getattr(lay.mesh, "axis_types", ()) or ()
    explicit = getattr(jax.sharding.AxisType, "Explicit", None)
    return explicit is not None and any(t == explicit for t in types)


def like(out, v, lay: Layout):
    """out in v's sharding at mesh level on Explicit axes, where types
    carry shardings and a solve's tangent must have its right-hand side's
    (a no-op on Auto axes, where XLA propagates)."""
    if lay.per_shard or not explicit(lay):
        return out
    return _shard.constrain(out, lay.mesh, jax.typeof(v).sharding.spec)


def _replicated(v, lay: Layout):
    """v replicated, on Explicit axes (Auto: left to XLA)."""
    if lay.per_shard or not explicit(lay):
        return v
    return _shard.replicated(v, lay.mesh)


def my_rows(v, lay: Layout):
    """Per shard: this device's rows of a replicated (N, ...) array."""
    nloc = v.shape[0] // lay.nparties
    start = jax.lax.axis_index(lay.axes) * nloc
    return jax.lax.dynamic_slice_in_dim(v, start, nloc, axis=0)


def matvec(M, v, lay: Layout):
    """M v for M (N x N, or a row block per shard) and v (N,) or (N, K)
    replicated; the result replicated."""
    if not lay.per_shard:
        return like(keep(M, lay, lay.row_spec) @ _replicated(v, lay), v, lay)
    return jax.lax.all_gather(M @ v, lay.axes, axis=0, tiled=True)


def rmatvec(M, v, lay: Layout):
    """M^H v, a contraction over the sharded rows: per-device partial sums
    and one all-reduce of the (N, K) result; M is never transposed."""
    if not lay.per_shard:
        out = jnp.einsum("ij,i...->j...", conj(keep(M, lay, lay.row_spec)), _replicated(v, lay))
        return like(out, v, lay)
    return jax.lax.psum(jnp.einsum("ij,i...->j...", conj(M), my_rows(v, lay)), lay.axes)


def symmul(M, v, lay: Layout):
    """sym(M) v = (M v + M^H v) / 2: the operator the engines invert. M
    is first kept in A's layout, so that its cotangent comes back there."""
    M = keep(M, lay)
    return (matvec(M, v, lay) + rmatvec(M, v, lay)) / 2


def mean_over_parties(r, lay: Layout):
    """Per shard, the mean of a replicated value over the solve axes. With
    shard_map(check_vma=False) each device's copy of a replicated cotangent
    is its own term of a sum; averaging them before one collective solve
    keeps the transposed solve linear per device (no-op at mesh level)."""
    return jax.lax.pmean(r, lay.axes) if lay.per_shard else r


def _ring_matmul_shard(x, y, axes, nparties):
    """Per shard: rows of X @ Y from row blocks x (M/P, K) and y (K/P, N).
    The row blocks of Y travel round the ring (ppermute), so each device
    holds at most two blocks at any time and never Y whole."""
    nloc = y.shape[0]  # rows of Y per device = the width of X's column blocks
    me = jax.lax.axis_index(axes)
    perm = [(j, (j - 1) % nparties) for j in range(nparties)]
    blk, acc = y, None
    for s in range(nparties):
        k = (me + s) % nparties  # blk holds Y's rows of device k
        part = jax.lax.dynamic_slice_in_dim(x, k * nloc, nloc, axis=1) @ blk
        acc = part if acc is None else acc + part
        if s + 1 < nparties:
            blk = jax.lax.ppermute(blk, axes, perm)
    return acc


def matmul(X, Y, lay: Layout):
    """X @ Y for X (M, K) and Y (K, N) in rows over the solve axes, the
    result in rows too. Mesh level through a shard_map of the ring product;
    where the device count does not divide M and K (jaxmg's results are
    then replicated anyway) a plain product."""
    if lay.per_shard:
        return _ring_matmul_shard(X, Y, lay.axes, lay.nparties)
    if X.shape[0] % lay.nparties or Y.shape[0] % lay.nparties:
        return X @ Y
    rows = lay.row_spec
    body = functools.partial(_ring_matmul_shard, axes=lay.axes, nparties=lay.nparties)
    return jax.shard_map(body, mesh=lay.mesh, in_specs=(rows, rows), out_specs=rows,
                         check_vma=False)(keep(X, lay, rows), keep(Y, lay, rows))


def ctranspose(M, lay: Layout):
    """M^H, in rows as M: per shard an all_to_all of (nloc x nloc) blocks."""
    if not lay.per_shard:
        return keep(conj(M).T, lay, lay.row_spec)
    cols = jax.lax.all_to_all(M, lay.axes, split_axis=1, concat_axis=0, tiled=True)
    return conj(cols.T)


def hermitian_part(M, lay: Layout):
    return (M + ctranspose(M, lay)) / 2


def float0_zeros(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


def rule(primal, tangents):
    """primal(*args) -> (outputs..., status), differentiable, with
    tangents(*args, *arg_tangents) -> (outputs, the tangents of all but the
    status) as its JVP: the one custom_jvp that every derivative rule is
    written with (the status, an int32, has a float0 tangent). tangents may
    call the returned function itself, so that higher orders go through
    the rule again."""
    f = jax.custom_jvp(primal)

    def jvp(primals, arg_tangents):
        outs, touts = tangents(*primals, *arg_tangents)
        return outs, (*touts, float0_zeros(outs[-1]))

    f.defjvp(jvp)
    return f
