"""The cuSOLVERMp engine's Python side that needs no GPU (src/jaxmg/_mp.py,
_mp_route.call): the row-built call's result shapes, device-set tags."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxmg.engines import grid as _grid
from jaxmg.engines import mp as _mp
from jaxmg.engines import mp_route as _mp_route


def test_tags_differ_by_grid_and_devices():
    devs = np.array(jax.devices()[:4])
    m = Mesh(devs, ("x",))
    g14 = _grid.grid_from_mesh(m, "x", grid=(1, 4))
    g41 = _grid.grid_from_mesh(m, "x", grid=(4, 1))
    m2 = Mesh(devs[::-1], ("x",))
    tags = {_mp.set_tag(g14), _mp.set_tag(g41), _mp.set_tag(_grid.grid_from_mesh(m2, "x", grid=(1, 4)))}
    assert len(tags) == 3 and all(len(t) <= 63 for t in tags)


@pytest.mark.parametrize("op", _mp_route.OPS)
@pytest.mark.parametrize("mesh_shape,spec", [((4,), P("x", None)), ((4,), P(None, "x")),
                                             ((2, 2), P("r", "c"))])
def test_call_traces_to_the_right_shapes(monkeypatch, op, mesh_shape, spec):
    """The shard_map around the row's ffi_call, traced on CPU (nothing runs):
    every output has its global shape; replicated ones are whole; A's
    shards may split its columns (col_split)."""
    monkeypatch.setattr(_mp, "open_sets", lambda grid: "tag")
    devs = np.array(jax.devices()[:4]).reshape(mesh_shape)
    names = ("x",) if len(mesh_shape) == 1 else ("r", "c")
    mesh = Mesh(devs, names)
    grid = _grid.grid_from_mesh(mesh, names, op=op)
    n = 8
    m = 16 if op in ("least_squares", "qr", "gesvd", "polar") else n
    args = [jax.ShapeDtypeStruct((m, n), np.float32)]
    if op in ("potrs", "lu_solve", "least_squares"):
        args.append(jax.ShapeDtypeStruct((m if op == "least_squares" else n, 2), np.float32))
    if op == "sygvd":  # B, sharded as A
        args.append(jax.ShapeDtypeStruct((n, n), np.float32))
    attrs = {"syevd": {"jobz": 1}, "sygvd": {"jobz": 1, "nvalid": n},
             "least_squares": {"mrows": m}, "qr": {"mrows": m},
             "gesvd": {"ucols": n, "vrows": n, "mrows": m}, "polar": {"hrows": n, "mrows": m}}
    out = jax.eval_shape(lambda *xs: _mp_route.call(op, grid, mesh, xs, spec=spec, tile=2,
                                                    attrs=attrs.get(op, {})), *args)
    want = {"potrs": [(m, n), (n, 2), (4,), ()], "potri": [(m, n), (4,)],
            "syevd": [(n, n), (n,), (4,)], "lu_solve": [(n, n), (n, 2), (4,)],
            "least_squares": [(m, n), (n, 2), (4,)], "qr": [(m, n), (n, n), (4,)],
            "gesvd": [(m, n), (m, n), (n,), (n, n), (4,)], "polar": [(m, n), (n, n), (4,)],
            "sygvd": [(n, n), (n,), (4,)]}[op]
    assert [o.shape for o in out] == want
