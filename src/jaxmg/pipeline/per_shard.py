"""One device's part of every op, inside a shard_map: the per-shard half
of the pipeline (pipeline/mesh.py builds the shard_map around it at mesh
level; the *_shardmap_ctx forms call it inside the caller's own).

    call(op, opts, statics, a, *rest) -> (outputs..., status (1,))

in steps, the same for every op:
  1. the prologue: the shard checked, the solve axes and their device
     count, this device's (rank, group), the engine (pipeline/decide.py)
     and the shard's padding plan (pipeline/shard.py, PadPlan);
  2. A (and B) padded as the plan says, b's rows likewise, and the
     engine's view of A undone on the way in (the row's 'c' buffers are
     conjugated for engines that see A^T);
  3. the FFI call of the op's row, with this device's non-finite flag;
  4. on the way back: padding cut, the view undone ('c' conjugated, 'h':
     the eigenvectors the engine returns as rows turned into columns by a
     distributed transpose), the status mapped to A's order. Where the
     parties agreed the input was not finite the C core ran no engine and
     set the results NaN itself (no pass over them here).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..engines import library
from . import decide, ffi, shard
from . import validate as v
from .declare import ENGINE, SOLUTION, WITH_RHS, WITH_TWIN

V_LAYOUTS = ("cols", "rows")

# The kind (in the op table's rows: who sees A^T) of the engines that run
# per shard: a leader runs the op for every party.
KIND = "leader"


@dataclasses.dataclass(frozen=True)
class Statics:
    """A per-shard call's static arguments, as the caller gave them (the
    mesh level passes its request's: its engine as dispatch)."""

    T_A: object = None
    pad: object = True
    axis_name: object = None
    dispatch: str = "auto"
    mrows: int | None = None    # A's rows where the shards end in padding rows (tall ops)
    nvalid: int | None = None   # the problem's order where N ends in an identity block
    v_layout: str = "rows"      # eigenvectors per shard: this device's rows or columns


@dataclasses.dataclass(frozen=True)
class Shard:
    """A checked shard: what every later step needs."""

    axes: tuple
    nparties: int
    plan: shard.PadPlan
    where: object      # (rank, group), int32
    dtype: object
    engine: str
    m: int             # A's rows
    n: int             # A's columns


def prologue(op, a, st: Statics) -> Shard:
    """Step 1 for a shard of A (or anything with its shape and dtype)."""
    axes = v.shard_axes(st.axis_name)
    library.ensure_registered(library.current_platform())
    decide.check(st.dispatch)
    tile, pad = v.tile(st.T_A), v.flag(st.pad, "pad")
    if st.v_layout not in V_LAYOUTS:
        raise ValueError(f"jaxmg: v_layout must be 'cols' or 'rows', got {st.v_layout!r}")
    sizes = shard.axis_sizes()
    nparties = math.prod(sizes[ax] for ax in axes)
    if op.shape == "square":
        nloc, n, dt = v.local_shard(a, nparties)
        m = n
    else:
        (nloc, n), dt = v.matrix(a, "the local shard of A")
        m = st.mrows or nparties * nloc
        if op.shape == "tall" and m < n:
            raise ValueError(f"jaxmg: {op.name} needs M >= N, got {m} x {n}")
    engine = decide.for_shard(op.decides_as, dt, max(m, n), nparties, axes, st.dispatch)
    if op.shape == "square":
        plan = shard.pad_plan(op.row, n, nparties, tile, pad, engine, op.max_tile)
    else:  # the engines gather these: the whole shard is one tile
        plan = shard.PadPlan(nloc, nloc, nloc, False)
    return Shard(axes, nparties, plan, shard.where_am_i(axes), dt, engine, m, n)


# ---- step 2: into the engine's shard ----------------------------------------


def pad_matrix(x, s: Shard):
    """A's (or B's) shard as the engine takes it (PadPlan)."""
    if s.plan.inside:
        return shard.pad_shard(x, s.nparties, s.where[0], s.plan.rows, 1)
    return shard.buffer_rows(x, s.plan.rows)


def transposed(a, s: Shard):
    """This device's rows of A^T (read column-major by the engine: A's
    columns), from its rows of A: one all_to_all, the columns cut back
    where the device count does not divide N."""
    width = a.shape[1]
    return jax.lax.all_to_all(shard.square_blocks(a, s.nparties), s.axes, split_axis=1,
                              concat_axis=0, tiled=True).T[:, :width]


def pad_rhs(b2, s: Shard):
    return shard.pad_rows(b2, s.nparties, s.plan.lrows, s.plan.rows) if s.plan.inside else b2


def _conj(x):
    return jnp.conj(x) if shard.is_complex(x.dtype) else x


def view_in(row, args):
    """The arguments as the engine (KIND) takes them: its row's 'c'
    buffers conjugated where it sees A^T."""
    if KIND not in row.sees_at:
        return args
    return [_conj(x) if b.view == "c" else x for x, b in zip(args, row.args)]


# ---- step 4: back from it -----------------------------------------------------


def unpad_matrix(x, s: Shard):
    """A result shaped like the engine's shard of A back to A's rows."""
    if s.plan.inside:
        return shard.unpad_shard(x, s.nparties, s.plan.lrows, s.plan.rows)
    return x[: s.plan.lrows]


def unpad_rhs(x, s: Shard):
    return shard.unpad_rows(x, s.nparties, s.plan.lrows, s.plan.rows) if s.plan.inside else x


def eigvecs(e, s: Shard, v_layout: str):
    """The engine's eigenvectors (of conj(A): the rows of this device's
    shard are eigenvectors) as A's eigenvector matrix's block of this
    device: its rows (an all_to_all) or its columns."""
    if v_layout == "cols" and e.shape[1] == s.nparties * e.shape[0]:
        return _conj(e.T)
    cols = jax.lax.all_to_all(shard.square_blocks(e, s.nparties), s.axes, split_axis=1,
                              concat_axis=0, tiled=True)
    vecs = _conj(cols.T)[:, : s.n]
    if v_layout == "cols":
        vecs = jax.lax.all_to_all(vecs, s.axes, split_axis=1, concat_axis=0, tiled=True)
    return vecs


def status_out(status):
    """A per-shard status: int32 of shape (1,), so that it can leave a
    shard_map as P(None) (as in the tutorial)."""
    return jnp.asarray(status, jnp.int32).reshape(1)


def _back(out, buf, x, s: Shard, st: Statics, row):
    """One output of the call, in the caller's terms (step 4)."""
    if out.layout == ENGINE:
        return x
    if not buf.dims:  # a scalar: (1,) per shard, as the status
        x = x.reshape(1)
    if buf.dims[:1] == "L":
        x = unpad_matrix(x, s)
    elif out.layout == SOLUTION:
        x = unpad_rhs(x, s)
    return view_back(buf, x, s, st, row)


def view_back(buf, x, s: Shard, st: Statics, row):
    """A result as the caller wants it where the engine (KIND) sees A^T:
    the row's 'c' buffers conjugated, its 'h' ones (eigenvectors as rows)
    turned into A's eigenvector block."""
    if KIND not in row.sees_at:
        return x
    if buf.view == "h":
        return eigvecs(x, s, st.v_layout)
    return _conj(x) if buf.view == "c" else x


def row_attrs(op, opts, m: int, n: int, nvalid: int) -> dict:
    """The attributes of op's row for A's rows m and columns n: the op's
    own (from its options), and `mrows` / `nvalid` where the row takes
    them (A's true rows; the order of a problem that ends in padding)."""
    attrs = dict(op.attrs(opts, m, n))
    row = ffi.table()[op.row]
    if "mrows" in row.attrs:
        attrs["mrows"] = m
    if "nvalid" in row.attrs:
        attrs["nvalid"] = nvalid
    return attrs


# ---- the call -------------------------------------------------------------------


def call(op, opts, st: Statics, a, *rest, outputs=None):
    """Steps 1-4 for this device's shard a of A (and b, replicated, or B's
    shard): the op's outputs (op.outputs(opts), or `outputs` where the
    caller wants others of the row, each as its layout says per shard) and
    the status (1,): 0, the engine's failure (a failing minor in A's
    order, non-convergence), or ffi.STATUS_NONFINITE when any party's
    input was not finite (outputs NaN then)."""
    s = prologue(op, a, st)
    row = ffi.table()[op.row]
    vector = op.operands == WITH_RHS and rest[0].ndim == 1
    if op.operands == WITH_RHS:
        v.rhs(rest[0], s.n if op.shape == "square" else s.nparties * a.shape[0], s.dtype)
        others = [rest[0][:, None] if vector else rest[0]]
        args = [pad_matrix(a, s), pad_rhs(others[0], s)]
    elif op.operands == WITH_TWIN:
        v.same_matrix(rest[0], a, "the local shard of B")
        others = [rest[0]]
        args = [pad_matrix(a, s), pad_matrix(rest[0], s)]
    else:
        others, args = [], [pad_matrix(a, s)]
    if s.engine in op.transposed_for:
        args[0] = transposed(args[0], s)
    attrs = row_attrs(op, opts, s.m, s.n, st.nvalid or s.n)
    rets = ffi.ffi(op.row, *view_in(row, args), s.where, site=shard.new_site(),
                   tile=s.plan.tile, nparties=s.nparties, dispatch=decide.c_code(s.engine),
                   nonfinite=ffi.nonfinite(a, *others), **attrs)
    by_name = {b.name: (b, x) for b, x in zip(row.rets, rets)}
    status = by_name["status"][1]
    res = []
    for out in op.outputs(opts) if outputs is None else outputs:
        buf, x = by_name[out.name]
        x = _back(out, buf, x, s, st, row)
        res.append(x[:, 0] if vector and out.layout == SOLUTION else x)
    if op.status is not None:
        status = op.status(status, st.nvalid or s.n)
    if s.plan.inside:
        status = shard.unpad_status(status, s.plan.lrows, s.plan.rows)
    return (*res, status_out(status))
