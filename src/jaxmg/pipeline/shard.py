"""Per-shard helpers used inside shard_map: who am I on the solve axis, and
padding a row shard where its engine needs it (PadPlan).

Padding is local and only where an engine needs it: the gathering engines
take none; cuSolverMg's eigensolver gets buffer rows after A's rows (never
inside A: the eigensolver's reduction would couple them to A); its
Cholesky and LU get each shard of nloc rows grown to nloc_p (a multiple of
the tile) and each column block likewise, a symmetric permutation of
blockdiag(A, I), which they factor exactly (a pad row stays the identity's
row through every elimination step). No data crosses devices, and the pad
rows and columns are cut away afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import os
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from ..engines import multiproc as _multiproc
from . import tiles as _tiles

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # jaxmg/
_JAX = os.path.dirname(os.path.abspath(jax.__file__))
# Calls already named in each trace being built: the same call site twice
# in one program (a loop unrolled by tracing) must still get two names.
_named: "weakref.WeakKeyDictionary[object, dict[str, int]]" = weakref.WeakKeyDictionary()


def _user_frames(depth: int = 4) -> list[str]:
    """The caller's frames that make the call site, innermost first, as
    "file:function:line:offset": from the first frame outside jaxmg and JAX
    up to `depth` frames, stopping at the first JAX frame above it (the
    tracing of the user's function: where that was started from differs
    between a trace and a retrace, the traced code does not). The offset
    (bytecode position) keeps two calls on one line apart; file names are
    reduced to their base name, so that processes running the same program
    from different folders (one container each) name a site alike."""
    def inside(f, root):
        return os.path.abspath(f.f_code.co_filename).startswith(root + os.sep)

    f = sys._getframe(2)
    while f is not None and (inside(f, _PKG) or inside(f, _JAX)):
        f = f.f_back
    out = []
    while f is not None and len(out) < depth and not inside(f, _JAX):
        if not inside(f, _PKG):
            code = f.f_code
            name = os.path.basename(code.co_filename)
            out.append(f"{name}:{code.co_name}:{f.f_lineno}:{f.f_lasti}")
        f = f.f_back
    return out


# The program a public jaxmg call is traced into, set for the duration of
# the call (program_scope): JAX traces the bodies of shard_map and of
# custom_linear_solve (issue 16's rules) in traces of their own, whose
# parent is not the program's trace, so the count of calls per site would
# restart in each of them and two calls of one program get one name.
_program: contextvars.ContextVar = contextvars.ContextVar("jaxmg_program", default=None)


@contextlib.contextmanager
def program_scope():
    """Entered by every public jaxmg call (request.run, the ctx forms):
    new_site counts within the trace this call is made under. Nested
    entries keep the outermost."""
    if _program.get() is not None:
        yield
        return
    token = _program.set(_trace_above())
    try:
        yield
    finally:
        _program.reset(token)


def _outer_trace():
    """The trace of the program being built: the one program_scope
    recorded, else the outermost JAX trace above the current one; None
    outside tracing or on a JAX without it."""
    return _program.get() or _trace_above()


def _trace_above():
    try:
        from jax._src import core

        t = core.trace_ctx.trace
        while getattr(t, "parent_trace", None) is not None and not isinstance(
            t.parent_trace, core.EvalTrace
        ):
            t = t.parent_trace
        return None if isinstance(t, core.EvalTrace) else t
    except Exception:  # an internal API that moved: name by call site only
        return None


def new_site() -> str:
    """The name of one jaxmg call: the C rendezvous pairs the calls of all
    devices by it (plus a per-site count of executions in C), so every
    process must compute it alike and it must not drift. It is made from
    what is the same in every process running the program: the user's call
    site (the frames outside jaxmg and JAX), plus the how-many-th jaxmg call
    of that site within the program being traced, hashed. A retrace in one
    process gives the same name again (it used to shift a per-process
    counter and so every later pairing). The op, shapes and options stay
    out on purpose: processes that disagree on them must still meet, to be
    told so by the call's fingerprint (which names both calls), rather than
    wait for each other in vain. The count keeps apart the several calls
    one user line makes (a derivative's factor and its solves). Single-
    process programs add the pid: nothing else meets them."""
    key = "|".join(_user_frames())
    trace = _outer_trace()
    nth = 0
    if trace is not None:
        try:
            seen = _named.setdefault(trace, {})
            nth = seen.get(key, 0)
            seen[key] = nth + 1
        except TypeError:  # a trace that takes no weak reference
            nth = 0
    digest = hashlib.sha256(f"{key}|{nth}".encode()).hexdigest()[:16]
    owner = "mp" if _multiproc.active() else os.getpid()
    return f"jaxmg.{owner}.{digest}"


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


@dataclasses.dataclass(frozen=True)
class PadPlan:
    """How one shard of a square A reaches its engine (docs/tiles.md).

    A is N x N; each of the P shards holds lrows = ceil(N / P) of its rows
    (JAX's even sharding; the last shards' rows past N are padding after
    A). The gathering engines (the host's LAPACK, one GPU's cuSOLVER) take
    the shard as it is: no tile, no padding. cuSolverMg needs whole tiles:
    its eigensolver gets the shard in `rows` = lrows rounded up to the tile,
    its rows past lrows buffer room outside A (the engine's layout plan puts
    A's rows in its tiles and nothing else); its Cholesky and LU get A
    padded inside with an identity block per shard (`inside`), which they
    factor exactly."""

    tile: int     # the tile the engine is told (the whole shard where it takes none)
    lrows: int    # A's rows in this shard
    rows: int     # the shard's rows as the engine gets it
    inside: bool  # padded inside A to (rows, P * rows): identity rows and columns

    @property
    def padded(self) -> bool:
        return self.rows != self.lrows


def pads_inside(op: str, engine: str) -> bool:
    """Whether the engine (pipeline/decide.py's name) takes op's A padded inside
    (cuSolverMg's Cholesky and LU; see PadPlan)."""
    return engine == "mg" and op != "syevd"


def pad_plan(op: str, n: int, nparties: int, T_A: int | None, pad: bool, engine: str,
             max_tile: int | None = None) -> PadPlan:
    """The PadPlan of an N x N problem over nparties shards.

    T_A=None picks the tile from the shard height (_tiles.auto_tile); a
    tile taller than the shard is cut to it; engines with a tile limit
    (cuSolverMg's syevd: 1024, getrf: 512) get it here. pad=False refuses a
    tile that does not divide the shard, on every platform, so that a
    program behaves alike wherever it runs."""
    lrows = -(-n // nparties)
    tile = min(T_A, lrows) if T_A is not None else _tiles.auto_tile(lrows, max_tile)
    if max_tile is not None:
        tile = min(tile, max_tile)
    rows = -(-lrows // tile) * tile
    if rows != lrows and not pad:
        raise ValueError(
            f"jaxmg: the shard height {lrows} (N / devices) is not a multiple of T_A={tile}; "
            "pass pad=True or choose T_A dividing it"
        )
    if engine != "mg":
        return PadPlan(lrows, lrows, lrows, False)
    return PadPlan(tile, lrows, rows, pads_inside(op, engine) and rows != lrows)


def pad_end(x: jax.Array, mesh, rows: int, cols: int | None = None, diag=None) -> jax.Array:
    """A global matrix x padded at its end to rows x cols (cols: x's own by
    default) with zeros, and `diag` on the new diagonal entries where given.
    Replicated first: JAX cannot pad a dimension sharded on Explicit axes to
    a size its axes do not divide. The diagonal is an elementwise select,
    not x.at[idx, idx].set: that scatter, followed by a P(r, c) constraint,
    came out wrong under jit (jax 0.10.2, CPU: written at [k - N/2, k - N/2]
    of the first block), while rows were fine."""
    m, n = x.shape
    cols = n if cols is None else cols
    if (rows, cols) == (m, n):
        return x
    x = jnp.pad(constrain(x, mesh, jax.sharding.PartitionSpec(None, None)),
                ((0, rows - m), (0, cols - n)))
    if diag is None:
        return x
    i, j = jnp.arange(rows)[:, None], jnp.arange(cols)[None, :]
    return jnp.where((i == j) & (i >= m), jnp.asarray(diag, x.dtype), x)


def cut_end(x: jax.Array, mesh, rows: int, cols: int | None = None) -> jax.Array:
    """x[:rows, :cols], pad_end's inverse: replicated first where a cut is
    needed (JAX cannot shard the padded rows and then fewer of them
    evenly)."""
    if x.shape[0] == rows and (cols is None or x.shape[1] == cols):
        return x
    x = replicated(x, mesh)
    return x[:rows] if cols is None else x[:rows, :cols]


def everywhere(ndim: int) -> jax.sharding.PartitionSpec:
    """The spec of an array of ndim dimensions replicated on every device."""
    return jax.sharding.PartitionSpec(*((None,) * ndim))


def replicated(x: jax.Array, mesh) -> jax.Array:
    """x replicated on every device of mesh (constrain)."""
    return constrain(x, mesh, everywhere(x.ndim))


def buffer_rows(a: jax.Array, rows: int) -> jax.Array:
    """A shard with room for `rows` rows: zero rows after A's (cuSolverMg's
    eigensolver moves A's rows into its tiles within them)."""
    return a if a.shape[0] == rows else jnp.pad(a, ((0, rows - a.shape[0]), (0, 0)))


def square_blocks(a: jax.Array, nparties: int) -> jax.Array:
    """A row shard (l, N) widened with zero columns to (l, nparties * l), so
    that an all_to_all over the shards transposes it (N may fall short of
    nparties * l where the device count does not divide it)."""
    width = nparties * a.shape[0]
    return a if a.shape[1] == width else jnp.pad(a, ((0, 0), (0, width - a.shape[1])))


def drop_pad_eigenpairs(w: jax.Array, V: jax.Array, n: int):
    """(w, V) of A from those of blockdiag(A, 0) (w ascending, V's columns
    the eigenvectors): the engines whose layout pads A at its end with a
    zero block (cuSOLVERMp's grid) keep it exactly decoupled, so each pad
    eigenpair is (0, a unit vector on the pad rows), also where A has zero
    eigenvalues of its own. The n eigenvectors with the least weight on the
    pad rows are A's, in their order. Runs after the engine, on its
    results: no value before the call depends on A."""
    weight = jnp.sum(jnp.abs(V[n:, :]) ** 2, axis=0)
    keep = jnp.sort(jnp.argsort(weight, stable=True)[:n])
    return w[keep], V[:n, keep]


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
