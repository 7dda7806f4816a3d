"""The cuSOLVERMp engine's Python side that needs no GPU (src/jaxmg/_mp.py):
shardings it accepts, result shapes, device-set tags."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxmg import _grid, _mp


def test_shard_kinds():
    assert _mp.shard_kind(P("r", "c"), ("r", "c"))[0] == _mp.SHARD_2D
    assert _mp.shard_kind(P("x", None), ("x",))[0] == _mp.SHARD_ROWS
    assert _mp.shard_kind(P("x"), ("x",))[0] == _mp.SHARD_ROWS
    assert _mp.shard_kind(P(None, "x"), ("x",))[0] == _mp.SHARD_COLS
    for spec, axes in ((P("c", "r"), ("r", "c")), (P("x", "x"), ("x",)), (P(), ("x",))):
        with pytest.raises(ValueError, match="cuSOLVERMp engine takes"):
            _mp.shard_kind(spec, axes)


@pytest.mark.parametrize("op", _mp.OPS)
def test_output_shapes(op):
    res, specs = _mp._outputs(op, 8, 4, 2, np.complex64, P("x", None), (2, 4))
    assert res[0].shape == (2, 4) and len(res) == len(specs)
    real = {"syevd": [(4,)], "gesvd": [(4,), (4, 4)]}.get(op, [])
    if op in ("potrs", "lu_solve", "least_squares"):
        assert res[1].shape == (2, 8)  # b column-major, replicated
    for r, shape in zip(res[1:], real):
        assert r.shape == shape
    if op == "potrs":
        assert res[2].shape == () and res[2].dtype == np.float32


def test_tags_differ_by_grid_and_devices():
    devs = np.array(jax.devices()[:4])
    m = Mesh(devs, ("x",))
    g14 = _grid.grid_from_mesh(m, "x", grid=(1, 4))
    g41 = _grid.grid_from_mesh(m, "x", grid=(4, 1))
    m2 = Mesh(devs[::-1], ("x",))
    tags = {_mp.set_tag(g14), _mp.set_tag(g41), _mp.set_tag(_grid.grid_from_mesh(m2, "x", grid=(1, 4)))}
    assert len(tags) == 3 and all(len(t) <= 63 for t in tags)


@pytest.mark.parametrize("op", _mp.OPS)
@pytest.mark.parametrize("mesh_shape", [(4,), (2, 2)])
def test_call_traces_to_the_right_shapes(monkeypatch, op, mesh_shape):
    """The shard_map around the ffi_call, traced on CPU (nothing runs): every
    output has its global shape; replicated ones are whole."""
    monkeypatch.setattr(_mp, "open_sets", lambda grid: "tag")
    devs = np.array(jax.devices()[:4]).reshape(mesh_shape)
    names = ("x",) if len(mesh_shape) == 1 else ("r", "c")
    mesh = Mesh(devs, names)
    grid = _grid.grid_from_mesh(mesh, names, op=op)
    spec = P("x", None) if len(names) == 1 else P("r", "c")
    n = 8
    m = 16 if op in ("least_squares", "qr", "gesvd", "polar") else n
    a = jax.ShapeDtypeStruct((m, n), np.float32)
    b = jax.ShapeDtypeStruct((m, 2), np.float32) if op in ("potrs", "lu_solve", "least_squares") else None

    def f(a, b=None):
        return _mp.call(op, grid, mesh, a, b, spec=spec, tile=2)

    out = jax.eval_shape(f, a, b) if b is not None else jax.eval_shape(f, a)
    assert out[0].shape == (m, n) and out[-1].shape == (4,)  # A's result; status per device
    want = {"syevd": [(n,)], "qr": [(n, n)], "gesvd": [(n,), (n, n)], "polar": [(n, n)],
            "potrs": [(2, m), ()], "lu_solve": [(2, m)], "least_squares": [(2, m)]}.get(op, [])
    assert [o.shape for o in out[1:-1]] == want
