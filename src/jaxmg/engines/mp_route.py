"""Running a mesh-level call on the cuSOLVERMp engine.

pipeline/mesh.py hands a mesh-level call here when the engine decision
chose "mp" for it (a solve group whose devices sit on several nodes, the
only engine that solves across nodes, or dispatch="mp" forced).
run(req, A, *rest) runs the op on the engine and returns its outputs
(op.outputs(opts), cut to A's sizes; mesh.py puts them in the caller's
layouts) and the status. Status is -1 (outputs NaN) for a non-finite
input, as on the other engines; the engine itself gives > 0 and NaN
outputs for a failing matrix (mapped as the op declares: sygvd's LAPACK
info).

The engine's grid comes from the solve axes: two axes are the P x Q grid
(A moved to P(r, c)), one axis a 1 x n or n x 1 grid (A by rows, or by
columns as given). A matrix that does not split evenly over the grid is
padded at its end (identity for the factorisations, zero rows for the
tall ops, a zero block for the eigenproblems, whose pad eigenpairs are
then told apart by their eigenvectors after the call:
_shard.drop_pad_eigenpairs). No pad value depends on A, so nothing
reduces over A before the engine. sygvd's B, sharded like A, is padded
with identity and placed as A is, and the engine solves the whole padded
pencil: cuSOLVERMp's sygvd on a leading sub-pencil (its `nvalid` below
the matrix's order) gives wrong vectors in f64 and fails in c64
(measured on one H100; bench/mp_smoke.py shows it).

The call itself is the op's row of the C op table (_calls): its buffers,
their shapes and layouts, and the engine's view of A, undone by
_calls.to_engine / from_engine; `call` is one shard_map around the row's
ffi_call. The results come back by the row's names, cut to A's shape and
put in the caller's layouts (_outputs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ..pipeline import ffi as _calls
from ..pipeline.per_shard import row_attrs
from ..pipeline import decide as _decide
from . import grid as _grid
from . import mp as _mp
from ..pipeline import shard as _shard

# The ops the engine runs (csrc/engines/mp/mp_engine.h: JMG_MP_OPS).
OPS = tuple(sorted(_decide.ENGINE_OPS["mp"]))
KIND = "collective"  # the engine's kind in the op table's rows (who sees A^T)
# Tiles where the caller gave none (T_A=None): the notes' best for
# potrf/getrf (1024) and for the eigen/SVD reductions (256).
_TILE = {"syevd": 256, "sygvd": 256, "gesvd": 256, "polar": 256}
_DEFAULT_TILE = 1024
# The eigenproblems: padded with a zero block of A (B's is identity).
_EIGEN = ("syevd", "sygvd")


# ---------------------------------------------------------------------------
# the request in the engine's terms


def _engine_spec(req) -> P:
    """A's layout for the engine: P(r, c) over two solve axes; over one, A's
    own rows or columns split, rows otherwise."""
    axes = req.axes
    if len(axes) == 2:
        return P(axes[0], axes[1])
    if len(axes) != 1:
        raise ValueError(
            f"jaxmg: the cuSOLVERMp engine solves over one or two mesh axes (a P x Q grid); "
            f"A's spec {req.a_spec} names {len(axes)}: {axes}"
        )
    if tuple(req.a_spec) == (None, axes[0]):
        return P(None, axes[0])
    return P(axes[0], None)


def _splits(req, spec) -> tuple[int, int]:
    sizes = [req.mesh.shape[a] if a is not None else 1 for a in spec]
    return sizes[0], sizes[1]


def _ceil(x: int, k: int) -> int:
    return -(-x // k)


def _up(x: int, k: int) -> int:
    return _ceil(x, k) * k


def _padded_layout(req, spec) -> tuple[int, int, int]:
    """A's shape on the engine and its tile: every shard's height a
    multiple of the tile (the C core's rule for every engine:
    ops/decode.c), a square A's columns too. The tile is the caller's
    T_A, at most a shard's share of A; else the fewest tiles of at most
    the op's best (_TILE) that cover a shard's share, made as equal as
    they can be, so that padding adds fewer rows to a shard than it has
    tiles."""
    m, n = req.shape
    pr, pc = _splits(req, spec)
    square = req.op.shape == "square"
    if not square and n % pc:
        raise ValueError(
            f"jaxmg: the cuSOLVERMp engine splits A's {n} columns over {pc} devices; {req.op.name} "
            "cannot pad columns: make N a multiple of the column axis, or shard A by rows"
        )
    k = math.lcm(pr, pc) if square else pr
    share = _ceil(m, k)
    tiles = _ceil(share, _TILE.get(req.op.row, _DEFAULT_TILE))
    tile = min(req.tile, share) if req.tile else _ceil(share, tiles)
    m1 = _up(m, k * tile)
    return m1, m1 if square else n, tile


def _pad(A, req, m1, n1, diag):
    """A padded to m1 x n1 at its end (replicated first: JAX cannot pad a
    sharded dimension to a size its axes do not divide); diag on the new
    diagonal of a square op."""
    return _shard.pad_end(A, req.mesh, m1, n1, None if req.op.shape != "square" else diag)


def call(op: str, grid, mesh, args, *, spec, tile: int, attrs: dict):
    """The row of op on the engine: args (global arrays in the row's order,
    `where` left out, A in `spec` over the solve axes); returns its results
    in the row's order, global: those sharded like A in spec, the status one
    per device, the rest replicated."""
    row = _calls.table()[op]
    axes = grid.axes
    sizes = [mesh.shape[ax] if ax is not None else 1 for ax in spec]
    split, nparties = sizes[1], math.prod(mesh.shape[ax] for ax in axes)
    kw = dict(site=_shard.new_site(), tile=tile, nparties=nparties, dispatch=0,
              target=_mp.target(op), tag=_mp.open_sets(grid), col_split=split, **attrs)

    def body(*xs):
        where = jnp.stack([jax.lax.axis_index(axes), 0]).astype(jnp.int32)
        # each rank's own flag (its shard of A, its copy of b): the ranks'
        # flags meet in the engine's agree step, no collective before it
        rets = _calls.ffi(op, *xs, where, nonfinite=_calls.nonfinite(*xs), **kw)
        return tuple(r.reshape(1) if b.name == "status" else r for r, b in zip(rets, row.rets))

    in_specs = tuple(spec if b.dims[:1] == "L" else P() for b in row.args if b.name != "where")
    out_specs = tuple(P(axes) if b.name == "status" else spec if b.dims[:1] == "L" else P()
                      for b in row.rets)
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)(*args)


def _run(req, A, b=None) -> dict:
    """The engine's results by the row's names, in the caller's terms: A
    (and b) padded and placed, the view of A undone, the status the largest
    over the devices (-1 for a non-finite input; outputs NaN then)."""
    m, n = req.shape
    op = req.op.row
    spec = _engine_spec(req)
    m1, n1, tile = _padded_layout(req, spec)
    pad_pairs = op in _EIGEN and n1 != n  # told apart by their eigenvectors after the call
    args = [_shard.constrain(_pad(A, req, m1, n1, 0 if op in _EIGEN else 1), req.mesh, spec)]
    if b is not None and req.op.operands == "AB":
        args.append(_shard.constrain(_pad(b, req, m1, n1, 1), req.mesh, spec))
    elif b is not None:
        b2 = b[:, None] if b.ndim == 1 else b
        args.append(jnp.pad(_shard.replicated(b2, req.mesh), ((0, m1 - m), (0, 0))))
    grid = _grid.grid_from_mesh(req.mesh, req.axes, op=op)
    attrs = row_attrs(req.op, req.opts, m, n, n1)
    if pad_pairs:
        attrs["jobz"] = 1
    rets = call(op, grid, req.mesh, _calls.to_engine(op, KIND, args), spec=spec,
                tile=tile, attrs=attrs)
    rets = _calls.from_engine(op, KIND, rets)
    out = dict(zip((r.name for r in _calls.table()[op].rets), rets))
    if pad_pairs:
        out["w"], out["a"] = _shard.drop_pad_eigenpairs(_shard.replicated(out["w"], req.mesh),
                                                        _shard.replicated(out["a"], req.mesh), n)
    # The same on every rank; -1 where some rank flagged non-finite input (no
    # engine ran, and the C core set the results NaN: call).
    status = jnp.max(out.pop("status")).astype(jnp.int32)
    # the engine's status is for the order it solved (sygvd's info counts B's minors in n1)
    out["status"] = req.op.status(status, n1) if req.op.status is not None else status
    return out


def _outputs(req, out, vector: bool):
    """The op's outputs, each cut to the unpadded sizes of its dimension
    letters, and the status."""
    m, n = req.shape
    d = {"L": m, "M": m, "N": n, "S": min(m, n)}
    rules = {r.name: r for r in _calls.table()[req.op.row].rets}
    res = []
    for o in req.op.outputs(req.opts):
        x = out[o.name]
        if rules[o.name].dims:
            x = _shard.cut_end(x, req.mesh,
                               *[d.get(c, x.shape[k]) for k, c in enumerate(rules[o.name].dims)])
        if o.name == "x" and vector:
            x = x[:, 0]
        res.append(x)
    return (*res, out["status"])


def run(req, A, *rest):
    """The op's outputs and status (see the module docstring), computed on
    the engine."""
    b = rest[0] if rest else None
    return _outputs(req, _run(req, A, b), b is not None and b.ndim == 1)
