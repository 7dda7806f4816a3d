"""The cuSOLVERMp process grid from a mesh (src/jaxmg/_grid.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxmg.engines import grid as g


def mesh(shape, names):
    devs = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
    return Mesh(devs, names)


def test_two_axes_are_the_grid_row_major():
    m = mesh((2, 4), ("r", "c"))
    gr = g.grid_from_mesh(m, ("r", "c"))
    assert (gr.p, gr.q, gr.order) == (2, 4, g.ROW_MAJOR)
    # NCCL rank i*Q + j is the device at mesh coordinate (i, j).
    ids = [[d.id for d in row] for row in m.devices]
    assert gr.groups == (tuple(ids[0] + ids[1]),)
    gt = g.grid_from_mesh(m, ("c", "r"))  # the other way round: 4 x 2
    assert (gt.p, gt.q) == (4, 2)
    assert gt.groups[0][:2] == (ids[0][0], ids[1][0])


def test_other_axes_make_groups():
    m = mesh((2, 2, 2), ("x", "y", "z"))
    gr = g.grid_from_mesh(m, ("y", "z"))
    assert (gr.p, gr.q) == (2, 2) and len(gr.groups) == 2
    for k, group in enumerate(gr.groups):
        assert group == tuple(d.id for d in m.devices[k].reshape(-1))
    assert sorted(sum(gr.groups, ())) == sorted(d.id for d in m.devices.reshape(-1))


def test_one_axis_default_and_override():
    m = mesh((4,), ("x",))
    gr = g.grid_from_mesh(m, "x", op="syevd")
    assert (gr.p, gr.q) == (1, 4) and gr.cols_axis == "x" and gr.rows_axis is None
    assert (g.grid_from_mesh(m, "x", grid="row").p, g.grid_from_mesh(m, "x", grid=(4, 1)).q) == (4, 1)
    assert g.grid_from_mesh(m, "x", grid=(1, 4)).q == 4


@pytest.mark.parametrize(
    "axes, grid, match",
    [
        (("x", "x"), None, "distinct"),
        (("x", "y", "z"), None, "one or two"),
        (("w",), None, "not an axis"),
        (("x",), (3, 1), "has 3 processes"),
        (("x",), "diag", "grid must be"),
        (("x", "y"), (1, 4), "their shape"),
    ],
)
def test_bad_axes_and_grids(axes, grid, match):
    m = mesh((2, 2), ("x", "y"))
    with pytest.raises(ValueError, match=match):
        g.grid_from_mesh(m, axes, grid=grid)


def test_one_axis_grid_needs_a_unit_side():
    m = mesh((4,), ("x",))
    with pytest.raises(ValueError, match="two mesh axes"):
        g.grid_from_mesh(m, "x", grid=(2, 2))
    with pytest.raises(ValueError, match="unknown op"):
        g.grid_from_mesh(m, "x", op="trsm")
