"""The call forms, the same for every op: what the public functions of
jaxmg/ops/ hand over to.

    mesh_call(op, opts, A, *rest, ...)     A global, any accepted form of
                                           mesh and specs (the mesh level,
                                           and 1.4's *_shardmap_ctx outside
                                           a shard_map, works=k: the first k
                                           operands in the engines' rows too)
    shard_call(op, opts, statics, a, ...)  inside the caller's shard_map
    two_forms(inside, outside, name)       the *_shardmap_ctx function: one
                                           name for both forms

Every form returns the op's outputs (op.outputs(opts)) and the status last;
the op's public function picks what to return. Both run the op's
derivative and batching rule around the pipeline's core.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp

from ..rules.products import Layout
from . import ffi, request, shard
from . import validate as v
from .declare import EIGVECS, MATRIX, ROWS, SOLUTION, WITH_RHS
from .mesh import differentiable, run_core  # (mesh_call's `mesh` is the caller's Mesh)
from .per_shard import Statics, call, prologue, status_out


# ---- mesh level -------------------------------------------------------------------


def _entry(*args, req, works: int, donating: bool):
    """The first `works` operands in the engines' rows, then the op's
    outputs and status. donating (eager calls that donate: no derivative
    can follow): without the rule, and with the engine's buffer of A last
    (dropped after), for A to alias."""
    rows = tuple(request.a_work(x, req) for x in args[:works])
    if donating:
        return rows + run_core(req, *args, keep_engine=True)
    return rows + differentiable(req)(*args)


# One function object per form, so that request.run's jit cache keys on it.
_ENTRIES = {(k, d): functools.partial(_entry, works=k, donating=d)
            for k in range(3) for d in (False, True)}


def _empty(req, rest):
    """The outputs of an N = 0 problem, as jnp gives them."""
    dt = jnp.dtype(req.dtype)
    types = {"A": dt, "R": shard.real_dtype(dt), "I": jnp.int32}
    bufs = {b.name: b for b in ffi.table()[req.op.row].rets}
    outs = []
    for out in req.op.outputs(req.opts):
        buf = bufs[out.name]
        if out.layout == SOLUTION:
            outs.append(jnp.zeros(rest[0].shape, dt))
        elif out.layout in (MATRIX, EIGVECS, ROWS):
            outs.append(jnp.zeros((0, 0), dt))
        else:
            outs.append(jnp.zeros((0,) * len(buf.dims), types[buf.type]))
    return (*outs, jnp.int32(0))


def mesh_call(op, opts, A, *rest, T_A, mesh=None, in_specs=None, matrix_specs=None, pad=True,
              dispatch="auto", donate=False, works: int = 0):
    """(the first `works` operands in the engines' rows, outputs..., status)
    for global A (and b or B)."""
    req = request.normalise(op, op.check_options(opts), A, *rest, T_A=T_A, mesh=mesh,
                            specs=in_specs, matrix_specs=matrix_specs, pad=pad,
                            dispatch=dispatch, donate=donate)
    if req.n == 0:
        return tuple(jnp.asarray(x) for x in (A, *rest)[:works]) + _empty(req, rest)
    if req.donate and not request.traced(A, *rest):
        outs = request.run(_ENTRIES[works, True], req, A, *rest)
        return outs[: works + len(op.outputs(opts)) + 1]
    return request.run(_ENTRIES[works, False], req, A, *rest)


def pick(outs: tuple, status, want_status: bool):
    """A public function's return: outs, status appended when asked for, a
    lone array unwrapped."""
    outs = tuple(outs) + ((status,) if want_status else ())
    return outs if len(outs) > 1 else outs[0]


# ---- inside the caller's shard_map -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardCores:
    """What an op's rule gets per shard (as mesh.MeshCores at mesh level):
    the per-shard core of any op and options with the caller's statics."""

    statics: Statics
    per_shard = True

    @property
    def lay(self) -> Layout:
        return Layout(v.shard_axes(self.statics.axis_name))

    @property
    def v_cols(self) -> bool:
        return self.statics.v_layout == "cols"

    def __call__(self, op, opts):
        return functools.partial(call, op, opts, self.statics)


def _empty_shard(op, opts, a, rest):
    bufs = {b.name: b for b in ffi.table()[op.row].rets}
    outs = []
    for out in op.outputs(opts):
        if out.layout == SOLUTION:
            outs.append(rest[0])
        elif out.layout in (MATRIX, EIGVECS, ROWS):
            outs.append(a)
        else:
            dims = bufs[out.name].dims
            outs.append(jnp.zeros((1,) if not dims else (0,) * len(dims),
                                  shard.real_dtype(a.dtype)))
    return (*outs, status_out(0))


def shard_call(op, opts, st: Statics, a, *rest):
    """The op on this device's shard (and b, replicated, or B's shard),
    differentiable: its outputs per shard and the status (1,)."""
    op.check_options(opts)
    if op.shape == "square" and a.shape[0] == 0 and a.shape[1] == 0:
        v.tile(st.T_A)
        return _empty_shard(op, opts, a, rest)
    # checked before the rule's products touch the arrays (they would fail
    # first, with JAX's shape errors)
    s = prologue(op, a, st)
    if op.operands == WITH_RHS:
        v.rhs(rest[0], s.n if op.shape == "square" else s.nparties * a.shape[0], s.dtype)
    elif rest:
        v.same_matrix(rest[0], a, "the local shard of B")
    return op.rule(op, opts, ShardCores(st))(a, *rest)


# ---- one name, two forms ------------------------------------------------------------


def in_shard_map() -> bool:
    m = jax.sharding.get_abstract_mesh()
    return bool(tuple(getattr(m, "manual_axes", ()) or ()))


def two_forms(inside, outside, name):
    """The public *_shardmap_ctx function: `inside` within the caller's
    shard_map (the tutorial's and 0.0.x's form), `outside` on global
    arrays (1.4's form). A call that fits neither signature is a TypeError
    showing both."""
    sig_in, sig_out = inspect.signature(inside), inspect.signature(outside)

    @functools.wraps(inside)
    def ctx(*args, **kwargs):
        within = in_shard_map()
        fn, sig = (inside, sig_in) if within else (outside, sig_out)
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            where = "inside jax.shard_map" if within else "outside jax.shard_map (on global arrays)"
            raise TypeError(
                f"jaxmg: {name} called {where} takes {name}{sig}; ({e}). Inside a shard_map "
                f"it is {name}{sig_in}, outside {name}{sig_out}"
            ) from None
        with shard.program_scope():
            return fn(*args, **kwargs)

    ctx.__name__ = ctx.__qualname__ = name
    ctx.__doc__ = (
        f"{name}: two forms (docs/coming-from-jaxmg.md).\n\n"
        f"Inside the caller's jax.shard_map: {name}{sig_in}\n{inspect.getdoc(inside)}\n\n"
        f"Outside any shard_map, on global arrays (JAXMg 1.4): {name}{sig_out}\n"
        f"{inspect.getdoc(outside)}"
    )
    return ctx
