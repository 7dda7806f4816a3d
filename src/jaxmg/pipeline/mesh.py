"""The mesh-level half of the pipeline: global arrays in, global arrays out.

    run_core(req, A, *rest) -> (outputs..., status)

for a normalised request (pipeline/request.py, which also made the engine
decision): the routed engines (cuSOLVERMp, where every rank calls the
library on its grid; the one-device JAX algorithm; the routes composed from
jaxmg's distributed ops) take the whole call;
every other engine runs per shard:
  1. N (square ops) or M (tall ones) rounded up to a multiple of the device
     count at A's end: zero rows after A, or an identity block where the
     engine pads inside A (cuSolverMg's Cholesky and LU) or the op says so
     (end_pad="identity": the engine is told the true order). No pad value
     depends on A.
  2. A (and B) in the engines' rows over the solve axes, b replicated.
  3. One shard_map of per_shard.call.
  4. The outputs cut to A's sizes and put in the caller's layouts: the
     solution in b's, matrices in A's, the rest replicated; status a scalar.

`differentiable(req)` puts the op's derivative and batching rule around
this core (the rule gets `MeshCores`: the core for any op and options on
the same mesh and layout).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ..engines import local, mp_route
from ..rules.products import Layout
from . import ffi, request, shard
from .declare import (EIGVECS, ENGINE, MATRIX, REPLICATED, ROWS, SOLUTION, WITH_RHS, WITH_TWIN,
                      Out)
from .per_shard import Statics, call

REP = P(None, None)


def _composed(req, A, *rest):
    """The op's route composed from jaxmg's distributed ops (jaxmg/composed/):
    A in rows over the solve axes, never gathered (b as the caller gave it)."""
    return req.op.composed(req.opts, request.to_rows(A, req), req.mesh, req.axes, *rest)


# The engines that take the whole mesh-level call (their run(req, A, *rest)
# returns the op's outputs and status, which run_core puts in place).
ROUTED = {"mp": mp_route.run, "local": local.run, "composed": _composed}


def _up(x: int, k: int) -> int:
    return -(-x // k) * k


@dataclasses.dataclass(frozen=True)
class Padding:
    """Step 1's sizes: A's rows m1 (tall ops) or order n1 (square ones, of
    n0), and whether the square pad is an identity block (then b gets
    rows for it too)."""

    m1: int
    n1: int
    n0: int
    identity: bool

    @property
    def rhs_rows(self) -> int:
        return self.n1 - self.n0 if self.identity else 0


def padding(req) -> Padding:
    op, (m, n), p = req.op, req.shape, req.nparties
    if op.shape != "square":
        return Padding(_up(m, p), n, n, False)
    n1 = _up(n, p)
    identity = n1 != n and (op.end_pad == "identity" or shard.pads_inside(op.row, req.engine))
    return Padding(n1, n1, n, identity)


def pad_matrix(X, req, pd: Padding):
    if req.op.shape != "square":
        return shard.pad_end(X, req.mesh, pd.m1)
    return shard.pad_end(X, req.mesh, pd.n1, pd.n1 if pd.identity else req.n,
                         1 if pd.identity else None)


def _out_spec(out: Out, buf, req):
    if out.layout == SOLUTION:
        return REP
    if out.layout in (MATRIX, ROWS, EIGVECS, ENGINE):
        return req.row_spec
    return shard.everywhere(max(1, len(buf.dims)))


def _engine_out(req, pd: Padding, outs):
    """The row's result that aliases A, added for a donated A to alias
    where no output is that buffer already (and no end padding changes its
    shape): otherwise XLA finds nothing to reuse A's buffer for."""
    row = ffi.table()[req.op.row]
    aliased = next(b.name for b in row.rets if b.alias == 0)
    if any(o.name == aliased for o in outs) or pd.m1 != req.shape[0] or pd.n1 != req.n:
        return ()
    return (Out(aliased, ENGINE),)


def place(out: Out, x, req, b):
    """An output, cut to A's sizes, in the layout it declares: the solution
    in b's, matrices in A's, the rest replicated."""
    if out.layout == SOLUTION:
        return request.to_b_layout(x, req, b)
    if out.layout in (MATRIX, EIGVECS):
        return request.to_matrix_layout(x, req)
    if out.layout == ROWS:
        return request.to_a_layout(x, req)
    if out.layout == REPLICATED:  # a routed engine may hand it back sharded
        return shard.replicated(x, req.mesh)
    return x


def _back(out: Out, buf, x, req, b):
    """Step 4 for one output of the shard_map."""
    m, n = req.shape
    if out.layout == SOLUTION:
        x = x[:n]
        x = x[:, 0] if b.ndim == 1 else x
    elif out.layout in (MATRIX, EIGVECS):
        x = shard.cut_end(x, req.mesh, n, n)
    elif out.layout == ROWS:
        x = shard.cut_end(x, req.mesh, m)
    elif out.layout == REPLICATED and not buf.dims:
        x = x[0]
    elif out.layout == REPLICATED and buf.dims[:1] == "N":
        x = x[:n]
    return place(out, x, req, b)


def run_core(req, A, *rest, keep_engine: bool = False):
    """The op's outputs (op.outputs(opts), in the layouts they declare) and
    the status, for global A (and b or B); see the module docstring.
    keep_engine: also the engine's buffer of A, after the status, for a
    donated A to alias (where no output is that buffer already)."""
    op = req.op
    b = rest[0] if op.operands == WITH_RHS else None
    routed = ROUTED.get(req.engine)
    if routed is not None:
        *outs, status = routed(req, A, *rest)
        return (*(place(o, x, req, b) for o, x in zip(op.outputs(req.opts), outs)), status)
    pd = padding(req)
    args, in_specs = [request.to_rows(pad_matrix(A, req, pd), req)], [req.row_spec]
    if op.operands == WITH_RHS:
        b2 = rest[0][:, None] if rest[0].ndim == 1 else rest[0]
        rows = pd.rhs_rows if op.shape == "square" else pd.m1 - req.shape[0]
        args.append(jnp.pad(shard.constrain(b2, req.mesh, REP), ((0, rows), (0, 0))))
        in_specs.append(REP)
    elif op.operands == WITH_TWIN:
        args.append(request.to_rows(pad_matrix(rest[0], req, pd), req))
        in_specs.append(req.row_spec)
    outs = op.outputs(req.opts) + (_engine_out(req, pd, op.outputs(req.opts)) if keep_engine else ())
    st = Statics(T_A=req.tile, pad=req.pad, axis_name=req.axes, dispatch=req.engine,
                 mrows=req.shape[0] if op.shape != "square" else None,
                 nvalid=req.n if op.end_pad == "identity" else None)
    bufs = {b.name: b for b in ffi.table()[op.row].rets}
    out_specs = tuple(_out_spec(o, bufs[o.name], req) for o in outs) + (P(None),)
    res = jax.shard_map(functools.partial(call, op, req.opts, st, outputs=outs), mesh=req.mesh,
                        in_specs=tuple(in_specs), out_specs=out_specs, check_vma=False)(*args)
    back = tuple(_back(o, bufs[o.name], x, req, b) for o, x in zip(outs, res[:-1]))
    n = len(op.outputs(req.opts))
    return (*back[:n], res[-1][0], *back[n:])


# ---- derivatives ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeshCores:
    """What an op's rule (pipeline/declare.py) gets at mesh level: the
    non-differentiable core of any op and options on this request's mesh,
    axes and layout (`cores(op, opts)`), and the rules' Layout."""

    req: object

    @property
    def lay(self) -> Layout:
        return Layout(tuple(self.req.axes), self.req.mesh, self.req.a_spec)

    per_shard = False
    v_cols = False

    def __call__(self, op, opts):
        req = self.req
        if op is not req.op:
            engine = request.engine_for(op, opts, req.mesh, req.axes, req.dispatch, req.shape,
                                        req.dtype)
            b_spec = req.b_spec if op.operands == WITH_RHS else None
            req = dataclasses.replace(req, op=op, engine=engine, b_spec=b_spec)
        req = dataclasses.replace(req, opts=opts)
        return lambda *arrays: run_core(req, *arrays)


def differentiable(req):
    """run_core(req, ...) with the op's derivative and batching rule."""
    return req.op.rule(req.op, req.opts, MeshCores(req))
