"""The cuSOLVERMp process grid from a JAX mesh.

A solve runs on the devices of one or two mesh axes (the "solve axes"); the
other mesh axes index independent solve groups, each with its own
communicator. Two axes (r, c) are the P x Q grid itself: the device at mesh
coordinate (i, j) of the group is process (i, j) and NCCL rank i*Q + j
(cuSOLVERMp's ROW_MAJOR grid mapping). One axis of n devices is an n x 1 or
a 1 x n grid; GRID_ONE_AXIS says which per op, and grid= overrides it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..pipeline.decide import OPS

ROW_MAJOR = 1  # cusolverMpGridMapping_t: rank = r * Q + c

# One solve axis: "row" puts its n devices in an n x 1 grid, "col" in 1 x n.
# 1 x n keeps a row-sharded A's shard shape (M = A^T is split in columns,
# and so is the 1 x n layout: most tiles stay on their device) and is the
# shape cuSOLVERMp's one-dimensional SYTRD path accepts. Not yet measured
# on GPUs against n x 1 (the GPU run's bench step times both; replace these
# entries with what it finds).
GRID_ONE_AXIS = {op: "col" for op in OPS}


@dataclasses.dataclass(frozen=True)
class Grid:
    p: int
    q: int
    axes: tuple[str, ...]  # solve axes: (r, c), or one axis
    rows_axis: str | None  # the mesh axis along the grid's rows (None: size 1)
    cols_axis: str | None
    groups: tuple[tuple[int, ...], ...]  # per solve group: device ids in NCCL rank order

    @property
    def nranks(self) -> int:
        return self.p * self.q

    order = ROW_MAJOR


def _parse_override(grid, n: int) -> str | tuple[int, int]:
    if grid in (None, "row", "col"):
        return grid
    if (
        isinstance(grid, tuple)
        and len(grid) == 2
        and all(isinstance(g, (int, np.integer)) and g > 0 for g in grid)
    ):
        if grid[0] * grid[1] != n:
            raise ValueError(
                f"jaxmg: grid {grid[0]} x {grid[1]} has {grid[0] * grid[1]} processes but "
                f"the solve axis has {n} devices"
            )
        if 1 not in grid:
            raise ValueError(
                "jaxmg: a 2-D grid comes from two mesh axes; one axis is an n x 1 or 1 x n grid"
            )
        return "row" if grid[1] == 1 else "col"
    raise ValueError(f"jaxmg: grid must be None, 'row', 'col' or (P, Q), got {grid!r}")


def grid_from_mesh(mesh, axes, op: str = "potrs", grid=None) -> Grid:
    """The P x Q grid and the NCCL rank order of every solve group."""
    if isinstance(axes, str):
        axes = (axes,)
    axes = tuple(axes)
    names = tuple(mesh.axis_names)
    if not 1 <= len(axes) <= 2 or len(set(axes)) != len(axes):
        raise ValueError(f"jaxmg: the solve axes are one or two distinct mesh axes, got {axes}")
    for ax in axes:
        if ax not in names:
            raise ValueError(f"jaxmg: axis {ax!r} is not an axis of the mesh {names}")
    if op not in OPS:
        raise ValueError(f"jaxmg: unknown op {op!r}")
    others = [ax for ax in names if ax not in axes]
    order = [names.index(ax) for ax in others] + [names.index(ax) for ax in axes]
    size = math.prod(mesh.shape[ax] for ax in axes)
    # Row-major over the solve axes: rank i*Q + j for mesh coordinate (i, j).
    ids = np.vectorize(lambda d: d.id, otypes=[np.int64])(mesh.devices)
    groups = tuple(tuple(int(d) for d in g) for g in np.transpose(ids, order).reshape(-1, size))
    if len(axes) == 2:
        if grid is not None and grid != (mesh.shape[axes[0]], mesh.shape[axes[1]]):
            raise ValueError(
                f"jaxmg: with two solve axes the grid is their shape "
                f"{mesh.shape[axes[0]]} x {mesh.shape[axes[1]]}, got grid={grid!r}"
            )
        return Grid(mesh.shape[axes[0]], mesh.shape[axes[1]], axes, axes[0], axes[1], groups)
    shape = _parse_override(grid, size) or GRID_ONE_AXIS[op]
    if shape == "row":
        return Grid(size, 1, axes, axes[0], None, groups)
    return Grid(1, size, axes, None, axes[0], groups)
