"""One normalisation step for every public mesh-level call.

Every call form that jaxmg accepts (JAXMg 0.0.2-0.0.9, 1.4.1 and jaxmg's
own) is turned here into one hashable `Request` before anything is traced.
The operations then see a single form: the mesh to run on, the solve axes,
the row layout the engines need, the layout A arrived in (the one matrix
results go back to), b's layout (x goes back to it) and the options.

Accepted:
  - spec: `in_specs` or `matrix_specs` (1.4's name; positional 5th or
    keyword), each a bare PartitionSpec, a 1-tuple/list (A's spec), or, for
    ops with a right-hand side, the tutorial's 2-tuple (A's spec, b's spec);
    omitted: inferred from A's sharding (eager: A.sharding; under jit:
    jax.typeof(A)), else 1.4's default P(*mesh.axis_names).
  - mesh: a Mesh, an AbstractMesh (jax.sharding.get_abstract_mesh() inside
    jax.set_mesh / use_abstract_mesh, eagerly or under jit), or None: then
    A's mesh, else the context mesh.
  - A's layout: P(r, None) (r a name or a tuple of names), P(r, c) on a 2-D
    grid, P(None, c), replicated P(None, None). The engines solve on rows
    over the spec's axes in order (r then c); A is moved there (one copy)
    and matrix results are moved back to A's spec.

The request is the first step of pipeline/forms.py's mesh_call:
`normalise(op, opts, A, *rest, ...)` checks the call and makes the engine
decision (pipeline/decide.py) once; `run(core, req, *args)` runs a core
(eagerly through a jit cached per request, donating if asked; under a
trace inline); to_rows / to_matrix_layout / to_a_layout / to_b_layout move
arrays between the caller's layouts and the engines' rows (pipeline/mesh.py).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

try:  # JAX <= 0.10; JAX 0.11 removed it and has no public replacement
    from jax.experimental.shard_alike import shard_alike
except ImportError:  # pragma: no cover - exercised on the GPU image's JAX 0.11
    shard_alike = None

from . import decide as _decide
from ..engines import library as _library
from . import shard as _shard
from . import validate as v
from .declare import WITH_RHS, WITH_TWIN

# The concrete mesh of jax.set_mesh (absent under use_abstract_mesh). The
# public jax.sharding.get_mesh refuses to answer under jax.jit, where this
# is needed too.
try:
    from jax._src.mesh import get_concrete_mesh as _get_concrete_mesh
except ImportError:  # pragma: no cover - older/newer JAX
    _get_concrete_mesh = None

_MESH_TYPES = (jax.sharding.Mesh, jax.sharding.AbstractMesh)


@dataclasses.dataclass(frozen=True)
class Request:
    """A normalised call: static, hashable (a jit cache key)."""

    op: object                # the op's declaration (pipeline/declare.py)
    mesh: object              # jax.sharding.Mesh, or AbstractMesh under jit
    axes: tuple[str, ...]     # the solve axes, in rank order
    a_spec: P                 # A's layout as given (2 entries): results go back to it
    shape: tuple[int, int]    # A's global shape
    dtype: str
    tile: int | None
    pad: bool
    dispatch: str             # as the caller gave it
    engine: str = "host"      # the engine _decide chose: host, single, mg, mp or local
    donate: bool = False
    b_spec: P | None = None   # b's layout (b's rank), x goes back to it
    b_vector: bool = False
    b_alike: bool = False     # b's layout is not visible while tracing: x takes b's own (to_b_layout)
    opts: object = None       # the op's options (its declaration's options dataclass)

    @property
    def n(self) -> int:
        return self.shape[1]

    @property
    def nparties(self) -> int:
        return v.solve_size(self.mesh, self.axes)

    @property
    def row_spec(self) -> P:
        return P(self.axes if len(self.axes) > 1 else self.axes[0], None)


# ---------------------------------------------------------------------------
# the spec argument


_SPEC_FORMS = ("a PartitionSpec P(...) for A, a 1-tuple/list (P(...),), or the 2-tuple "
               "(A's spec, b's spec)")


def _one_spec(specs, matrix_specs, with_b: bool):
    """(A's spec or None, b's spec or None) from in_specs / matrix_specs."""
    if specs is not None and matrix_specs is not None and specs != matrix_specs:
        raise ValueError(
            f"jaxmg: pass either in_specs or matrix_specs, not both (got {specs!r} and "
            f"{matrix_specs!r})"
        )
    s = specs if specs is not None else matrix_specs
    if s is None:
        return None, None
    if isinstance(s, P):
        return s, None
    forms = _SPEC_FORMS if with_b else "a PartitionSpec P(...) or a 1-tuple/list (P(...),)"
    if isinstance(s, (tuple, list)) and all(isinstance(x, P) for x in s):
        if len(s) == 1:
            return s[0], None
        if len(s) == 2 and with_b:
            return s[0], s[1]
    raise ValueError(f"jaxmg: in_specs / matrix_specs must be {forms}; got {s!r}")


def _pad_spec(s: P, rank: int, what: str, extra_none: bool = False) -> P:
    """s for an array of `rank` dimensions, None-padded. A spec with more
    entries than that is a ValueError, except trailing Nones where
    extra_none (P(None, None) for a 1-D b, as JAXMg's callers write it)."""
    parts = tuple(s)
    while extra_none and len(parts) > rank and parts[-1] is None:
        parts = parts[:-1]
    if len(parts) > rank:
        raise ValueError(f"jaxmg: {what} {s} has more entries than the array has dimensions ({rank})")
    return P(*(parts + (None,) * (rank - len(parts))))


def _names(part) -> tuple[str, ...]:
    if part is None:
        return ()
    return part if isinstance(part, tuple) else (part,)


# ---------------------------------------------------------------------------
# the mesh


def _context_mesh():
    m = jax.sharding.get_abstract_mesh()
    return None if m is None or m.empty else m


def _concrete_for(m):
    """A concrete Mesh for the AbstractMesh m: the context's (jax.set_mesh)
    where it matches, else the one jax.make_mesh builds for m's shape, names
    and axis types (as NetKet builds its process-grid mesh, then entered with
    use_abstract_mesh only). JAX lowers a shard_map over an abstract mesh
    against the context's devices, so an abstract mesh other than the
    context's cannot be used as it is (unbound axis names)."""
    if isinstance(m, jax.sharding.Mesh):
        return m
    c = _get_concrete_mesh() if _get_concrete_mesh is not None else None
    if c is not None and not c.empty and c.abstract_mesh == m:
        return c
    try:
        made = jax.make_mesh(tuple(m.axis_sizes), tuple(m.axis_names),
                             axis_types=tuple(m.axis_types))
    except Exception:  # not enough devices of this platform: keep it abstract
        return m
    return made if made.abstract_mesh == m else m


def _abstract(m):
    return m.abstract_mesh if isinstance(m, jax.sharding.Mesh) else m


def _sharding_of(x):
    """x's NamedSharding: eagerly its .sharding, under jit jax.typeof's."""
    if isinstance(x, jax.core.Tracer):
        try:
            s = jax.typeof(x).sharding
        except Exception:
            return None
    else:
        s = getattr(x, "sharding", None)
    return s if isinstance(s, jax.sharding.NamedSharding) else None


def _mesh_of(mesh, A):
    if mesh is not None:
        if not isinstance(mesh, _MESH_TYPES):
            raise TypeError(
                "jaxmg: mesh must be a jax.sharding.Mesh or AbstractMesh (or None: A's mesh or "
                f"the context mesh), got {type(mesh).__name__}"
            )
        if isinstance(mesh, jax.sharding.AbstractMesh):
            s = _sharding_of(A)
            if s is not None and isinstance(s.mesh, jax.sharding.Mesh) and s.mesh.abstract_mesh == mesh:
                return s.mesh
            return _concrete_for(mesh)
        return mesh
    s = _sharding_of(A)
    if s is not None and not s.mesh.empty:
        return _concrete_for(s.mesh)
    ctx = _context_mesh()
    if ctx is None:
        raise ValueError(
            "jaxmg: no mesh: pass mesh=..., put A on a mesh (jax.device_put with a "
            "NamedSharding), or call inside jax.set_mesh(...)"
        )
    return _concrete_for(ctx)


# ---------------------------------------------------------------------------
# A's layout


def _infer_spec(A, m) -> P:
    """1.4's inference: A's own spec on this mesh, else P(*mesh.axis_names)."""
    s = _sharding_of(A)
    if s is not None and _abstract(s.mesh) == _abstract(m):
        spec = _pad_spec(s.spec, 2, "A's sharding")
        if any(part is not None for part in spec):
            return spec
    names = tuple(m.axis_names)
    return _pad_spec(P(*names), 2, "the default spec") if len(names) <= 2 else P(names, None)


def _layout(spec: P, m) -> tuple[str, ...]:
    """The solve axes of A's spec: its row axes, then its column axes; all
    mesh axes for a replicated A."""
    rows, cols = _names(spec[0]), _names(spec[1])
    axes = rows + cols
    for ax in axes:
        if not isinstance(ax, str):
            raise ValueError(f"jaxmg: A's spec {spec}: mesh axis names must be strings, got {ax!r}")
        if ax not in m.axis_names:
            raise ValueError(
                f"jaxmg: A's spec {spec}: axis {ax!r} is not in the mesh (axes {tuple(m.axis_names)})"
            )
    if len(set(axes)) != len(axes):
        raise ValueError(f"jaxmg: A's spec {spec}: an axis is repeated")
    return axes if axes else tuple(m.axis_names)


def _sharding_visible(x) -> bool:
    """Whether x's sharding is known while tracing: eagerly always; under
    jit only on Explicit mesh axes (on Auto axes jax.typeof(x) shows every
    array replicated, whatever its layout)."""
    if not isinstance(x, jax.core.Tracer):
        return True
    s = _sharding_of(x)
    explicit = getattr(jax.sharding.AxisType, "Explicit", None)
    return (s is not None and not s.mesh.empty
            and all(t == explicit for t in s.mesh.axis_types))


def _b_spec(b, given, m, ndim: int) -> tuple[P, bool]:
    """(b's layout, alike): the spec given, else b's own on this mesh, else
    replicated. alike: no spec given and b's sharding not visible (jit on
    Auto axes); x then takes b's layout from b itself (to_b_layout), as it
    does eagerly, and the spec returned is only a replicated stand-in."""
    alike = given is None and not _sharding_visible(b)
    if given is not None:
        spec = _pad_spec(given, ndim, "b's spec", extra_none=True)
    else:
        s = _sharding_of(b)
        ok = s is not None and _abstract(s.mesh) == _abstract(m)
        spec = _pad_spec(s.spec, ndim, "b's sharding", extra_none=True) if ok else P(*((None,) * ndim))
    for part in spec:
        for ax in _names(part):
            if ax not in m.axis_names:
                raise ValueError(f"jaxmg: b's spec {spec}: axis {ax!r} is not in the mesh")
    return spec, alike


# ---------------------------------------------------------------------------
# the one entry


def engine_for(op, opts, mesh, axes, dispatch: str, shape: tuple, dtype) -> str:
    """The engine decision (decide.for_mesh) for a mesh-level call of the
    declared op on A of this shape: with the routes the op declares and the
    engines it says cannot run this call."""
    return _decide.for_mesh(op.decides_as, mesh, axes, dispatch, max(shape), dtype, op.routes,
                            op.unable(opts, *shape))


def normalise(op, opts, A, *rest, T_A, mesh, specs, matrix_specs=None, pad=True,
              dispatch="auto", donate=False) -> Request:
    """Checks a mesh-level call of op (a declaration, pipeline/declare.py)
    with options opts and returns its Request (see the module docstring);
    every failure is a ValueError/TypeError naming the accepted forms."""
    b = rest[0] if op.operands == WITH_RHS else None
    a_given, b_given = _one_spec(specs, matrix_specs, b is not None)
    if op.shape == "square":
        n, dt = v.square(A)
        shape = (n, n)
    else:
        shape, dt = v.matrix(A)
    if 0 in shape and not (op.empty_ok and shape == (0, 0)):
        raise ValueError(f"jaxmg: A is empty (shape {shape})")
    if op.shape == "tall" and shape[0] < shape[1]:
        raise ValueError(f"jaxmg: {op.name} needs at least as many rows as columns (M >= N), "
                         f"got A of shape {shape}")
    if op.operands == WITH_TWIN:
        v.same_matrix(rest[0], A)
    tile = v.tile(T_A)
    pad = v.flag(pad, "pad")
    donate = v.flag(donate, "donate")
    _decide.check(dispatch)
    m = _mesh_of(mesh, A)
    spec = _pad_spec(a_given, 2, "A's spec") if a_given is not None else _infer_spec(A, m)
    axes = _layout(spec, m)
    b_spec, b_vector, b_alike = None, False, False
    if b is not None:
        _, b_vector = v.rhs(b, shape[0], dt)
        b_spec, b_alike = _b_spec(b, b_given, m, 1 if b_vector else 2)
    _library.ensure_registered(_library.mesh_platform(m))
    engine = engine_for(op, opts, m, axes, dispatch, tuple(shape), dt)
    return Request(op=op, mesh=m, axes=axes, a_spec=spec, shape=tuple(shape), dtype=str(dt),
                   tile=tile, pad=pad, dispatch=dispatch, engine=engine, donate=donate,
                   b_spec=b_spec, b_vector=b_vector, b_alike=b_alike, opts=opts)


# ---------------------------------------------------------------------------
# running a core, and moving arrays between layouts (inside the core's trace)


@functools.lru_cache(maxsize=None)
def _jitted(core, req: Request, nargs: int):
    donate = tuple(range(nargs)) if req.donate else ()
    return jax.jit(lambda *args: _scoped(core, args, req), donate_argnums=donate)


def _scoped(core, args, req):
    """core under _shard.program_scope: every FFI call it traces is named
    within the program being traced (see _shard.new_site)."""
    with _shard.program_scope():
        return core(*args, req=req)


def _trace_state_clean() -> bool:
    try:
        from jax._src import core as _core

        return _core.trace_state_clean()
    except (ImportError, AttributeError):  # a JAX without it: tracers decide
        return True


def traced(*args) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in args)


def run(core, req: Request, *args):
    """core(*args, req=req): eagerly through a jit cached per (core, req), which
    donates the arguments when req.donate; under an outer trace inlined, so
    that every trace gives each FFI call its own call-site key."""
    if traced(*args) or not _trace_state_clean():
        # inside the caller's trace (closed-over constants included): inline
        return _scoped(core, args, req)
    out = _jitted(core, req, len(args))(*(v.as_array(a) for a in args))
    if req.donate:
        # donated means deleted (docs/donation.md), also where XLA found no
        # output to pair a buffer with (potrs's A when P does not divide N)
        for a in args:
            if isinstance(a, jax.Array) and not a.is_deleted():
                a.delete()
    return out


def fits(n: int, m, spec: P) -> bool:
    """Whether an array of n rows/cols can be held in `spec` on m (JAX needs
    every sharded dimension divisible by its axes' size)."""
    return all(n % v.solve_size(m, _names(part)) == 0 for part in spec)


def a_work(A, req: Request):
    """JAXMg 1.4's a_work: A in the engines' row layout (its values;
    replicated where that layout cannot hold N)."""
    return to_rows(A, req) if fits(A.shape[0], req.mesh, req.row_spec) else A


def to_rows(A, req: Request):
    return _shard.constrain(A, req.mesh, req.row_spec)


def to_matrix_layout(M, req: Request):
    """A matrix result (in req.row_spec, N x N) moved to A's own layout;
    replicated where that layout cannot hold N."""
    spec = req.a_spec if fits(M.shape[0], req.mesh, req.a_spec) else P(None, None)
    return _shard.constrain(M, req.mesh, spec)


def to_a_layout(X, req: Request):
    """A result with A's rows (M x N, or M x K) moved to A's own layout;
    replicated where that layout cannot hold X's shape."""
    ok = all(d % v.solve_size(req.mesh, _names(part)) == 0
             for d, part in zip(X.shape, tuple(req.a_spec)))
    return _shard.constrain(X, req.mesh, req.a_spec if ok else P(None, None))


def to_b_layout(x, req: Request, b=None):
    """x (b's rank) in b's layout: req.b_spec, replicated where that cannot
    hold x's rows; with req.b_alike, b's own layout taken from b (the
    array the caller passed) through XLA's sharding propagation, where JAX
    has shard_alike (up to 0.10; on 0.11 x then comes back as b_spec says,
    replicated: docs/sharding.md)."""
    if req.b_alike and b is not None and shard_alike is not None:
        return _like(x, b)
    spec = req.b_spec if fits(x.shape[0], req.mesh, req.b_spec) else P(*((None,) * x.ndim))
    return _shard.constrain(x, req.mesh, spec)


def _like(x, b):
    """x sharded as b is (shard_alike: one sharding for both, decided by
    propagation from b's), for x with b's shape but maybe fewer rows
    (least squares' N of M): x padded with zero rows to b's shape, then
    cut, so that its rows keep b's layout where it can hold them, else come
    back replicated, as to_b_layout's eager rule."""
    rows = x.shape[0]
    pad = ((0, b.shape[0] - rows),) + ((0, 0),) * (x.ndim - 1)
    x, _ = shard_alike(jnp.pad(x, pad) if rows != b.shape[0] else x, b)
    return x[:rows]
