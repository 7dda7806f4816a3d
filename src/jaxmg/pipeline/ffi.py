"""The FFI calls themselves, on one device's padded shard, built from the C
core's op table (csrc/ops/op_table.h, read through _library.op_table_text):
each op's arguments and results, their shapes, dtypes and layouts and which
result aliases which argument are data in C, so there is one generic
`ffi` call here and a thin function per op that names its results.

The matrix result aliases A (and potrs/lu_solve's solution aliases b), so
the engine works in place; XLA copies an input first unless the caller
donated it, which keeps the caller's arrays intact.

The rows also say which engine kinds see A^T ("leader": host LAPACK and
cuSolverMg, a leader runs the op for all; "collective": cuSOLVERMp, every
rank calls the library) and what that does to each buffer; to_engine and
from_engine undo it, the one place that does, on global arrays.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..rules import batching as _batching
from ..engines import library as _library
from ..engines import multiproc as _multiproc
from . import shard as _shard

# Column-major layouts (major-to-minor (1, 0)), as LAPACK and cuSolverMg read
# them; XLA transposes small arrays such as right-hand sides for us.
_COL_MAJOR = (1, 0)


@dataclasses.dataclass(frozen=True)
class Buf:
    name: str
    dims: str      # one letter per dimension (op_table.h), "" for a scalar
    type: str      # "A" A's dtype, "R" its real dtype, "I" int32
    col_major: bool
    alias: int | None
    view: str | None  # where the engine sees A^T: "c" conj, "h" conj-transposed


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    shape: str     # "square", "tall" or "any"
    attrs: tuple[str, ...]
    args: tuple[Buf, ...]
    rets: tuple[Buf, ...]
    sees_at: tuple[str, ...]  # the engine kinds that see A^T


def _parse(text: str) -> dict[str, Op]:
    ops: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "op":
            cur = dict(name=f[1], shape=f[2], attrs=() if f[3] == "-" else tuple(f[3].split(",")),
                       args=[], rets=[], sees_at=() if f[4] == "-" else tuple(f[4].split(",")))
            ops[f[1]] = cur
        else:
            buf = Buf(f[1], "" if f[2] == "-" else f[2], f[3], f[4] == "col",
                      None if f[5] == "-" else int(f[5]), None if f[6] == "-" else f[6])
            cur["args" if f[0] == "arg" else "rets"].append(buf)
    return {k: Op(v["name"], v["shape"], v["attrs"], tuple(v["args"]), tuple(v["rets"]),
                  v["sees_at"]) for k, v in ops.items()}


@functools.lru_cache(maxsize=None)
def table() -> dict[str, Op]:
    return _parse(_library.op_table_text())


def _dims(op: Op, arrays, nparties: int, attrs: dict) -> dict[str, int]:
    split = int(attrs.get("col_split", 1))  # A's columns split too (2-D blocks)
    nloc, n = arrays[0].shape[-2], arrays[0].shape[-1] * split
    m = nparties // split * nloc
    rows = int(attrs.get("mrows", m))  # A's own rows; the shards' past them are padding
    d = {"L": nloc, "N": n, "M": m, "S": min(rows, n), "K": 0}
    for buf, x in zip(op.args, arrays):
        if "K" in buf.dims:
            d["K"] = x.shape[x.ndim - len(buf.dims) + buf.dims.index("K")]
    for letter, name in zip("ab", op.attrs):
        d[letter] = int(attrs[name])
    return d


def shard_shape(buf: Buf, d: dict[str, int], split: int = 1) -> tuple[int, ...]:
    """A buffer's per-shard shape: one whose first letter is L is sharded
    like A, its columns split as A's are (op_table.h)."""
    shape = [d[c] for c in buf.dims]
    if buf.dims[:1] == "L" and len(shape) == 2:
        shape[1] //= split
    return tuple(shape)


def _dtype(t: str, a_dtype):
    return {"A": a_dtype, "R": _shard.real_dtype(a_dtype), "I": jnp.int32}[t]


def _layout(buf: Buf, nbatch: int):
    """Column-major for a col_major matrix, after nbatch (most major) batch
    dimensions; None (row-major) otherwise."""
    if not (buf.col_major and len(buf.dims) == 2):
        return None
    return tuple(range(nbatch)) + tuple(nbatch + d for d in _COL_MAJOR)


def _sequential(platform: str, meet: dict) -> bool:
    """How a batch (jax.vmap, any depth) meets the call: one call with the
    batch as one leading dimension on every buffer, which the C core runs
    element by element after one rendezvous (csrc/ops/handle.c). The GPU
    engine's cross-process sharing carries one element's buffers, so a
    multi-process GPU program loops (one call per element) instead."""
    return bool(meet) and platform != "cpu"


def _where_arg(where, nonfinite):
    """The op's int32 `where` input: (rank, group) and this device's own
    non-finite flag (csrc/engines/engine.h, JMG_WHERE_LEN)."""
    flag = jnp.asarray(False if nonfinite is None else nonfinite).astype(jnp.int32).reshape(1)
    return jnp.concatenate([jnp.asarray(where, jnp.int32).reshape(2), flag])


# The status of a call whose A or b holds a NaN or an infinity (docs/status.md);
# the C core returns it (engine.h, JMG_STATUS_NONFINITE).
STATUS_NONFINITE = -1


def nonfinite(*arrays):
    """This device's own flag for ffi's `nonfinite`: whether its shard of A
    or its copy of b holds a NaN or an infinity (one pass over them, no
    collective). The C rendezvous (or the collective engine's agree step)
    ORs every party's, runs no engine when any is set and returns
    STATUS_NONFINITE everywhere, so nothing waits for the other devices
    before the call."""
    bad = jnp.zeros((), jnp.bool_)
    for x in arrays:
        bad = bad | ~jnp.all(jnp.isfinite(x))
    return bad


def ffi(name: str, *arrays, site: str, tile: int, nparties: int, dispatch: int, nonfinite=None,
        target: str | None = None, **attrs):
    """Calls op `name` of the table on per-shard arrays (its arguments in
    table order, `where` as (rank, group)); returns all its results in table
    order. nonfinite: this device's flag (a traced bool) that its input
    holds a NaN or an infinity: the C core then runs no engine, sets the
    float results NaN and the status -1 on every device. Under jax.vmap,
    one call for the whole batch, however deep the nesting (_sequential). target: another engine's
    FFI target for the row (the cuSOLVERMp engine's, whose attributes, a
    string `tag` among them, pass through; its calls loop under vmap)."""
    op = table()[name]
    if len(arrays) != len(op.args):
        raise TypeError(f"jaxmg: {name} takes {len(op.args)} arrays, got {len(arrays)}")
    arrays = tuple(_where_arg(x, nonfinite) if buf.name == "where" else x
                   for buf, x in zip(op.args, arrays))
    missing = set(op.attrs) - set(attrs)
    if missing:
        raise TypeError(f"jaxmg: {name} needs the attributes {sorted(missing)}")
    platform = _library.current_platform()
    meet = {} if target else _multiproc.meet_attrs(platform)
    split = int(attrs.get("col_split", 1))
    kw = dict(site=site, tile=np.int64(tile), nparties=np.int64(nparties),
              dispatch=np.int64(dispatch))
    kw.update({k: v if isinstance(v, str) else np.int64(v) for k, v in attrs.items()})
    kw.update(meet)

    def call(*arrays):  # arrays with at most one leading batch dimension (_batching.folded)
        d = _dims(op, arrays, nparties, attrs)
        lead = arrays[0].shape[:-2]
        out = tuple(jax.ShapeDtypeStruct(lead + shard_shape(r, d, split),
                                         _dtype(r.type, arrays[0].dtype)) for r in op.rets)
        return jax.ffi.ffi_call(
            target or _library.target_name(name),
            out,
            input_layouts=tuple(_layout(b, len(lead)) for b in op.args),
            output_layouts=tuple(_layout(r, len(lead)) for r in op.rets),
            input_output_aliases={r.alias: i for i, r in enumerate(op.rets)
                                  if r.alias is not None},
            has_side_effect=True,
        )(*arrays, **kw)

    ranks = tuple(len(b.dims) for b in op.args)
    return _batching.folded(call, ranks, bool(target) or _sequential(platform, meet))(*arrays)


# ---- the engines' view of A ------------------------------------------------


def _view(x, how: str | None):
    if x is None or how is None:
        return x
    x = jnp.conj(x) if _shard.is_complex(x.dtype) else x
    return x.T if how == "h" else x


def to_engine(name: str, kind: str, args):
    """The arguments (global arrays, table order, `where` left out) as an
    engine of `kind` takes them: where its row says that kind sees A^T,
    each buffer as its view says."""
    op = table()[name]
    if kind not in op.sees_at:
        return tuple(args)
    return tuple(_view(x, b.view) for x, b in zip(args, op.args))


def from_engine(name: str, kind: str, rets):
    """The results (global arrays, table order) as the caller wants them:
    to_engine's undoing on the way back."""
    op = table()[name]
    if kind not in op.sees_at:
        return tuple(rets)
    return tuple(_view(x, b.view) for x, b in zip(rets, op.rets))


# ---- the ops, naming their results ----------------------------------------
#
# Each takes its arrays in table order and the keywords of every call:
# site, tile, nparties, dispatch, and nonfinite (this device's flag), as ffi.


def potrs_with_logdet(a, b, where, *, with_factor: bool = False, **call):
    """(x, status, logdet): logdet is log det of the padded matrix, a real
    scalar identical on every shard, NaN when status != 0. with_factor:
    (a_out, x, status, logdet), a_out being the result aliased to A (the
    factor's scratch), which a caller that donates A must keep."""
    a_out, x, status, logdet = ffi("potrs", a, b, where, **call)
    return (a_out, x, status, logdet) if with_factor else (x, status, logdet)


def potrs(a, b, where, *, with_factor: bool = False, **call):
    """(x, status), or (a_out, x, status) with with_factor (see potrs_with_logdet)."""
    out = potrs_with_logdet(a, b, where, with_factor=True, **call)
    return out[:3] if with_factor else out[1:3]


def potri(a, where, **call):
    return ffi("potri", a, where, **call)


def syevd(a, where, *, jobz: bool, **call):
    return ffi("syevd", a, where, jobz=int(jobz), **call)


def lu_solve(a, b, where, **call):
    """(x, status): A x = b with b (N, K) replicated, x likewise."""
    _, x, status = ffi("lu_solve", a, b, where, **call)
    return x, status


def least_squares(a, b, where, *, mrows: int, **call):
    """(x, status): min ||A x - b|| with b (M, K) replicated, x (N, K); A
    has mrows rows, the shards' rows past them are padding."""
    _, x, status = ffi("least_squares", a, b, where, mrows=mrows, **call)
    return x, status


def qr(a, where, *, mrows: int, **call):
    """(Q's rows of this shard, R replicated, status)."""
    return ffi("qr", a, where, mrows=mrows, **call)


def gesvd(a, where, *, ucols: int, vrows: int, mrows: int, **call):
    """(U's rows of this shard (ucols columns), s, Vh (vrows rows), status)."""
    _, u, s, vh, status = ffi("gesvd", a, where, ucols=ucols, vrows=vrows, mrows=mrows, **call)
    return u, s, vh, status


def polar(a, where, *, compute_h: bool, mrows: int, **call):
    """(Up's rows of this shard, H replicated (or (0, N)), status)."""
    n = a.shape[1]
    return ffi("polar", a, where, hrows=n if compute_h else 0, mrows=mrows, **call)


# ---- factor reuse (issue 16): one factorization, then solves and the inverse

def chol_factor(a, where, **call):
    """(factor, status, logdet): the engine's Cholesky factor of the padded
    matrix in A's shard shape and dtype, OPAQUE (its contents are the
    engine's own layout: valid only for chol_solve / chol_inverse with the
    same tile, nparties and dispatch, and only where status is 0)."""
    return ffi("chol_factor", a, where, **call)


def chol_solve(factor, b, where, **call):
    """(x, status): A x = b with chol_factor's factor (read, not changed)."""
    return ffi("chol_solve", factor, b, where, **call)


def chol_inverse(factor, where, **call):
    """(this shard's rows of A^-1, both triangles; status), written in the
    factor's buffer (XLA copies the factor first where it is still used)."""
    return ffi("chol_inverse", factor, where, **call)
