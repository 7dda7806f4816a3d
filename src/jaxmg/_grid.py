"""The cuSOLVERMp process grid from a JAX mesh, and which engine solves.

A solve runs on the devices of one or two mesh axes (the "solve axes"); the
other mesh axes index independent solve groups, each with its own
communicator. Two axes (r, c) are the P x Q grid itself: the device at mesh
coordinate (i, j) of the group is process (i, j) and NCCL rank i*Q + j
(cuSOLVERMp's ROW_MAJOR grid mapping). One axis of n devices is an n x 1 or
a 1 x n grid; GRID_ONE_AXIS says which per op, and grid= overrides it.

Engines and where they may run (ENGINES): one GPU after a gather
("single"), cuSolverMg ("mg", one process's or one node's GPUs, shared
memory or CUDA IPC) and cuSOLVERMp ("mp", NCCL: any set of GPUs, across
nodes too). A solve group whose devices sit on several nodes can only go to
"mp"; ops cuSolverMg does not have can only go to "single" or "mp".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

ROW_MAJOR = 1  # cusolverMpGridMapping_t: rank = r * Q + c


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    ops: frozenset
    across_nodes: bool  # may a solve group span several nodes?


_ALL_OPS = frozenset(
    {"potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar"}
)
ENGINES = {
    "single": EngineInfo(_ALL_OPS, across_nodes=False),
    "mg": EngineInfo(frozenset({"potrs", "potri", "syevd", "lu_solve"}), across_nodes=False),
    "mp": EngineInfo(_ALL_OPS, across_nodes=True),
}

# One solve axis: "row" puts its n devices in an n x 1 grid, "col" in 1 x n.
# 1 x n keeps a row-sharded A's shard shape (M = A^T is split in columns,
# and so is the 1 x n layout: most tiles stay on their device) and is the
# shape cuSOLVERMp's one-dimensional SYTRD path accepts. Not yet measured
# on GPUs against n x 1 (the GPU run's bench step times both; replace these
# entries with what it finds).
GRID_ONE_AXIS = {op: "col" for op in _ALL_OPS}

# dispatch="auto": largest N one GPU takes (gathered), per op; beyond it the
# multi-GPU engine. potrs/potri/syevd from bench/README.md (cuSolverMg on
# 4 H200); lu_solve (cuSolverMg getrf/getrs, issue 15) takes potrs's, as
# _dispatch does; the other ops are cuSOLVERMp-only and not yet measured
# (absent: one GPU as long as the matrix fits its memory share).
SINGLE_MAX_N = {"potrs": 16384, "potri": None, "syevd": 24576, "lu_solve": 16384}


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
    if op not in _ALL_OPS:
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


def spans_nodes(groups: Sequence[Sequence[int]], node_of_device: Mapping[int, str]) -> bool:
    """Whether some solve group has devices on more than one node."""
    return any(len({node_of_device[d] for d in g}) > 1 for g in groups)


def choose_engine(
    op: str,
    n: int,
    *,
    dispatch: str = "auto",
    across_nodes: bool = False,
    available: Sequence[str] = ("single", "mg", "mp"),
    fits_one_gpu: bool = True,
) -> str:
    """The engine that solves: dispatch "single", "mg" or "mp" forces one
    (a ValueError where it cannot run this op or this device set); "auto"
    takes the only engine allowed across nodes, else one GPU up to
    SINGLE_MAX_N (when the gathered matrix fits), else cuSolverMg where it
    has the op, else cuSOLVERMp."""
    if op not in _ALL_OPS:
        raise ValueError(f"jaxmg: unknown op {op!r}")
    if dispatch != "auto" and dispatch not in ENGINES:
        raise ValueError(f"jaxmg: dispatch must be 'auto', 'single', 'mg' or 'mp', got {dispatch!r}")

    def allowed(e: str) -> bool:
        info = ENGINES[e]
        return e in available and op in info.ops and (info.across_nodes or not across_nodes)

    if dispatch != "auto":
        if not allowed(dispatch):
            why = (
                "its devices span several nodes, which only the cuSOLVERMp engine ('mp') "
                "solves across"
                if across_nodes and not ENGINES[dispatch].across_nodes
                else f"engine {dispatch!r} has no {op}"
                if op not in ENGINES[dispatch].ops
                else f"engine {dispatch!r} is not available in this installation"
            )
            raise ValueError(f"jaxmg: dispatch={dispatch!r} cannot run this {op}: {why}")
        return dispatch
    if across_nodes:
        if not allowed("mp"):
            raise ValueError(
                f"jaxmg: this {op} spans several nodes, which needs the cuSOLVERMp engine "
                "(pip install nvidia-cusolvermp-cu13); it is not available"
            )
        return "mp"
    limit = SINGLE_MAX_N.get(op)
    if allowed("single") and fits_one_gpu and (limit is None or n <= limit):
        return "single"
    for e in ("mg", "mp"):
        if allowed(e):
            return e
    if allowed("single"):
        return "single"
    raise ValueError(f"jaxmg: no engine available for {op}")
