"""Per-shard helpers used inside shard_map: who am I on the solve axis, and
padding a row shard to whole tiles.

Padding is local. Each shard of nloc rows grows to nloc_p rows (a multiple
of the tile) and each column block likewise, so the padded matrix is a
symmetric permutation of blockdiag(A, c I): no data crosses devices, the
solution, inverse and eigenpairs of A sit at the unpadded positions, and the
pad rows and columns are simply cut away afterwards.
"""

from __future__ import annotations

import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from . import _dispatch, _multiproc

_sites = itertools.count()


def new_site(op: str) -> str:
    """A string unique to one traced call site: the C rendezvous keys on it,
    so two jaxmg calls of one program never meet each other. Across
    processes every process must name a site alike, so the pid stays out:
    they agree by tracing the same jaxmg calls in the same order."""
    owner = "mp" if _multiproc.active() else os.getpid()
    return f"jaxmg.{op}.{owner}.{next(_sites)}"


def manual_axes() -> tuple[str, ...]:
    """The mesh axes that are manual here (we are inside shard_map)."""
    mesh = jax.sharding.get_abstract_mesh()
    axes = tuple(getattr(mesh, "manual_axes", ()) or ())
    return axes


def axis_sizes() -> dict[str, int]:
    mesh = jax.sharding.get_abstract_mesh()
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def where_am_i(solve_axes: tuple[str, ...]) -> jax.Array:
    """(rank along the solve axes, group over the other manual axes), int32.

    Devices that share a group solve one problem together; different groups
    (the other axes of a 2-D mesh) solve their own copies side by side."""
    sizes = axis_sizes()
    rank = jax.lax.axis_index(solve_axes) if solve_axes else 0
    group = jnp.int32(0)
    for ax in manual_axes():
        if ax not in solve_axes:
            group = group * sizes[ax] + jax.lax.axis_index(ax)
    return jnp.stack([jnp.asarray(rank, jnp.int32), jnp.asarray(group, jnp.int32)])


def tile_plan(nloc: int, T_A: int | None, pad: bool, max_tile: int | None = None) -> tuple[int, int]:
    """The tile actually used and the padded shard height.

    T_A=None picks the tile from the shard height (_dispatch.auto_tile). A
    tile taller than the shard is cut to the shard: the block-cyclic layout
    is then the contiguous one, with no padding at all. Engines with a tile
    limit (cuSolverMg's syevd: 1024) get it here, so every platform solves
    the same padded problem."""
    tile = min(T_A, nloc) if T_A is not None else _dispatch.auto_tile(nloc, max_tile)
    if max_tile is not None:
        tile = min(tile, max_tile)
    nloc_p = math.ceil(nloc / tile) * tile
    if nloc_p != nloc and not pad:
        raise ValueError(
            f"jaxmg: the shard height {nloc} (N / devices) is not a multiple of T_A={tile}; "
            "pass pad=True or choose T_A dividing it"
        )
    return tile, nloc_p


def pad_shard(a: jax.Array, nparties: int, rank, nloc_p: int, diag) -> jax.Array:
    """Pads a row shard (nloc, nparties*nloc) to (nloc_p, nparties*nloc_p):
    zeros, and `diag` on the pad rows' own diagonal entries."""
    nloc = a.shape[0]
    if nloc_p == nloc:
        return a
    p = nloc_p - nloc
    blocks = a.reshape(nloc, nparties, nloc)
    blocks = jnp.pad(blocks, ((0, p), (0, 0), (0, p)))
    out = blocks.reshape(nloc_p, nparties * nloc_p)
    rows = jnp.arange(nloc, nloc_p)
    cols = rank * nloc_p + rows
    return out.at[rows, cols].set(jnp.asarray(diag, a.dtype))


def pad_rows(b: jax.Array, nparties: int, nloc: int, nloc_p: int) -> jax.Array:
    """Pads the rows of a replicated (nparties*nloc, k) array shard by shard."""
    if nloc_p == nloc:
        return b
    k = b.shape[1]
    blocks = b.reshape(nparties, nloc, k)
    return jnp.pad(blocks, ((0, 0), (0, nloc_p - nloc), (0, 0))).reshape(nparties * nloc_p, k)


def unpad_rows(x: jax.Array, nparties: int, nloc: int, nloc_p: int) -> jax.Array:
    if nloc_p == nloc:
        return x
    k = x.shape[1]
    return x.reshape(nparties, nloc_p, k)[:, :nloc, :].reshape(nparties * nloc, k)


def unpad_shard(a: jax.Array, nparties: int, nloc: int, nloc_p: int) -> jax.Array:
    """Inverse of pad_shard: (nloc_p, nparties*nloc_p) -> (nloc, nparties*nloc)."""
    if nloc_p == nloc:
        return a
    blocks = a.reshape(nloc_p, nparties, nloc_p)[:nloc, :, :nloc]
    return blocks.reshape(nloc, nparties * nloc)


def unpad_status(status: jax.Array, nloc: int, nloc_p: int) -> jax.Array:
    """Maps a failing-minor index (1-based, padded order) to A's own order.

    Pad entries form an identity block that never fails, so a failing minor
    always sits at an unpadded position."""
    if nloc_p == nloc:
        return status
    k = status - 1
    mapped = (k // nloc_p) * nloc + jnp.minimum(k % nloc_p, nloc - 1) + 1
    return jnp.where(status > 0, mapped, status).astype(jnp.int32)


def constrain(x: jax.Array, mesh, spec) -> jax.Array:
    """Puts x in the sharding `spec` on `mesh`, as shard_map requires of its
    inputs: jax.reshard for explicit mesh axes, a sharding constraint for
    automatic ones."""
    sharding = jax.sharding.NamedSharding(mesh, spec)
    explicit = jax.sharding.AxisType.Explicit if hasattr(jax.sharding, "AxisType") else None
    types = dict(zip(mesh.axis_names, getattr(mesh, "axis_types", ()) or ()))
    named = [ax for part in spec if part is not None for ax in (part if isinstance(part, tuple) else (part,))]
    # The axes the spec names decide; a fully replicated spec follows the mesh.
    if explicit is not None and any(types.get(ax) == explicit for ax in (named or types)):
        return jax.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def is_complex(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.complexfloating)


def real_dtype(dtype):
    return np.finfo(dtype).dtype
