"""The FFI calls themselves, on one device's padded shard, built from the C
core's op table (csrc/ops/op_table.h, read through _library.op_table_text):
each op's arguments and results, their shapes, dtypes and layouts and which
result aliases which argument are data in C, so there is one generic
`ffi` call here and a thin function per op that names its results.

The matrix result aliases A (and potrs/lu_solve's solution aliases b), so
the engine works in place; XLA copies an input first unless the caller
donated it, which keeps the caller's arrays intact.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _library, _multiproc, _shard

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


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    shape: str     # "square", "tall" or "any"
    attrs: tuple[str, ...]
    args: tuple[Buf, ...]
    rets: tuple[Buf, ...]


def _parse(text: str) -> dict[str, Op]:
    ops: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "op":
            cur = dict(name=f[1], shape=f[2], attrs=() if f[3] == "-" else tuple(f[3].split(",")),
                       args=[], rets=[])
            ops[f[1]] = cur
        else:
            buf = Buf(f[1], "" if f[2] == "-" else f[2], f[3], f[4] == "col",
                      None if f[5] == "-" else int(f[5]))
            cur["args" if f[0] == "arg" else "rets"].append(buf)
    return {k: Op(v["name"], v["shape"], v["attrs"], tuple(v["args"]), tuple(v["rets"]))
            for k, v in ops.items()}


@functools.lru_cache(maxsize=None)
def table() -> dict[str, Op]:
    return _parse(_library.op_table_text())


def _dims(op: Op, arrays, nparties: int, attrs: dict) -> dict[str, int]:
    nloc, n = arrays[0].shape
    m = nparties * nloc
    rows = int(attrs.get("mrows", m))  # A's own rows; the shards' past them are padding
    d = {"L": nloc, "N": n, "M": m, "S": min(rows, n), "K": 0}
    for buf, x in zip(op.args, arrays):
        if "K" in buf.dims:
            d["K"] = x.shape[buf.dims.index("K")]
    for letter, name in zip("ab", op.attrs):
        d[letter] = int(attrs[name])
    return d


def _dtype(t: str, a_dtype):
    return {"A": a_dtype, "R": _shard.real_dtype(a_dtype), "I": jnp.int32}[t]


def _layout(buf: Buf):
    return _COL_MAJOR if buf.col_major and len(buf.dims) == 2 else None


def _vmap_method(platform: str, meet: dict) -> str:
    """How jax.vmap meets the call: "broadcast_all" hands the C core one
    call with the batch as leading dimensions on every buffer, which it runs
    element by element after one rendezvous (csrc/ops/handle.c). The GPU
    engine's cross-process sharing carries one element's buffers, so a
    multi-process GPU program loops (one call per element) instead."""
    return "sequential" if meet and platform != "cpu" else "broadcast_all"


def _where_arg(where, nonfinite):
    """The op's int32 `where` input: (rank, group) and this device's own
    non-finite flag (csrc/engines/engine.h, JMG_WHERE_LEN)."""
    flag = jnp.asarray(False if nonfinite is None else nonfinite).astype(jnp.int32).reshape(1)
    return jnp.concatenate([jnp.asarray(where, jnp.int32).reshape(2), flag])


def ffi(name: str, *arrays, site: str, tile: int, nparties: int, dispatch: int, nonfinite=None,
        **attrs):
    """Calls op `name` of the table on per-shard arrays (its arguments in
    table order, `where` as (rank, group)); returns all its results in table
    order. nonfinite: this device's flag (a traced bool) that its input
    holds a NaN or an infinity: the C meeting then runs no engine, and the
    status is -1 on every device. Under jax.vmap, one call for the whole
    batch (_vmap_method)."""
    op = table()[name]
    if len(arrays) != len(op.args):
        raise TypeError(f"jaxmg: {name} takes {len(op.args)} arrays, got {len(arrays)}")
    arrays = tuple(_where_arg(x, nonfinite) if buf.name == "where" else x
                   for buf, x in zip(op.args, arrays))
    missing = set(op.attrs) - set(attrs)
    if missing:
        raise TypeError(f"jaxmg: {name} needs the attributes {sorted(missing)}")
    d = _dims(op, arrays, nparties, attrs)
    a_dtype = arrays[0].dtype
    out = tuple(
        jax.ShapeDtypeStruct(tuple(d[c] for c in r.dims), _dtype(r.type, a_dtype)) for r in op.rets
    )
    platform = _library.current_platform()
    meet = _multiproc.meet_attrs(platform)
    call = jax.ffi.ffi_call(
        _library.target_name(name),
        out,
        input_layouts=tuple(_layout(b) for b in op.args),
        output_layouts=tuple(_layout(r) for r in op.rets),
        input_output_aliases={r.alias: i for i, r in enumerate(op.rets) if r.alias is not None},
        has_side_effect=True,
        vmap_method=_vmap_method(platform, meet),
    )
    kw = dict(site=site, tile=np.int64(tile), nparties=np.int64(nparties),
              dispatch=np.int64(dispatch))
    kw.update({k: np.int64(v) for k, v in attrs.items()})
    kw.update(meet)
    return call(*arrays, **kw)


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
