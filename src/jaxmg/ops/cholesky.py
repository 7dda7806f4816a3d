"""Factor reuse for potrs's derivatives: the engine's Cholesky factor made
once, then any number of solves and the inverse from it (rows chol_factor,
chol_solve and chol_inverse of the C op table). rules/hermitian.py's
Factored takes them; `factored(cores, shape)` builds one at mesh level or
per shard, or says None where the path is closed.

The factor is opaque: the engine's padded shard of A (its shape and dtype),
its contents in the engine's own layout, valid only with the statics it was
made with (tile, padding, axes, engine). The solve and the inverse are
given the shard shape A had, derive the same padding plan from the same
statics (pipeline/per_shard.py's prologue: a pure function of them), and
check the factor's shape against it. A failed factor (status != 0) never
reaches an engine: it is flagged like non-finite input, and its status is
returned with NaN results.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ..engines import library, multiproc
from ..pipeline import decide, ffi, mesh, request, shard
from ..pipeline import validate as v
from ..pipeline.per_shard import (Statics, pad_matrix, pad_rhs, prologue, status_out,
                                  unpad_matrix, unpad_rhs, view_back, view_in)
from ..rules.hermitian import Factored

REP = P(None, None)


# ---- per shard ------------------------------------------------------------------------


def _call(row, s, *args, nonfinite):
    return ffi.ffi(row, *view_in(ffi.table()[row], list(args)), s.where, site=shard.new_site(),
                   tile=s.plan.tile, nparties=s.nparties, dispatch=decide.c_code(s.engine), nonfinite=nonfinite)


def factor_shard(op, st: Statics, a):
    """(factor, status (1,), logdet (1,)) for this device's shard of A:
    status and logdet as potrs's."""
    s = prologue(op, a, st)
    fac, status, logdet = _call("chol_factor", s, pad_matrix(a, s), nonfinite=ffi.nonfinite(a))
    if s.plan.inside:
        status = shard.unpad_status(status, s.plan.lrows, s.plan.rows)
    return fac, status_out(status), jnp.asarray(logdet).reshape(1)


def _factor_prologue(op, st: Statics, shape, factor):
    s = prologue(op, jax.ShapeDtypeStruct(tuple(shape), factor.dtype), st)
    want = (s.plan.rows, s.nparties * s.plan.rows if s.plan.inside else shape[1])
    if tuple(factor.shape) != want:
        raise ValueError(
            f"jaxmg: a Cholesky factor of shape {tuple(factor.shape)} does not fit a "
            f"{tuple(shape)} shard with these statics (expected {want}): a factor is valid only "
            "with the tile, padding, axes and dispatch it was made with")
    return s


def _failed(fstatus):
    fst = jnp.reshape(jnp.asarray(fstatus), ()).astype(jnp.int32)
    return fst, fst != 0


def solve_shard(op, st: Statics, shape, factor, fstatus, b):
    """(x, status (1,)): A x = b (b replicated) with the factor of A that
    factor_shard made from a `shape`-shaped shard with these statics."""
    s = _factor_prologue(op, st, shape, factor)
    v.rhs(b, shape[1], s.dtype)
    b2 = b[:, None] if b.ndim == 1 else b
    fst, failed = _failed(fstatus)
    x, status = _call("chol_solve", s, factor, pad_rhs(b2, s),
                      nonfinite=ffi.nonfinite(b2) | failed)
    row = ffi.table()["chol_solve"]
    x = view_back(row.rets[0], unpad_rhs(x, s), s, st, row)
    return (x[:, 0] if b.ndim == 1 else x), status_out(jnp.where(failed, fst, status))


def inverse_shard(op, st: Statics, shape, factor, fstatus):
    """(this device's rows of A^-1, both triangles; status (1,)) from the factor."""
    s = _factor_prologue(op, st, shape, factor)
    fst, failed = _failed(fstatus)
    inv, status = _call("chol_inverse", s, factor, nonfinite=failed)
    inv = unpad_matrix(inv, s)
    return inv, status_out(jnp.where(failed, fst, status))


# ---- mesh level -----------------------------------------------------------------------


def _statics(req) -> Statics:
    return Statics(T_A=req.tile, pad=req.pad, axis_name=req.axes, dispatch=req.engine)


def _shard_shape(req):
    """The shard shape the mesh-level factor is made from (pipeline/mesh.py's
    end padding)."""
    pd = mesh.padding(req)
    return (pd.n1 // req.nparties, pd.n1 if pd.identity else req.n)


def _shard_map(body, req, in_specs, out_specs):
    return jax.shard_map(body, mesh=req.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


def factor_global(req, A):
    """(factor, status, logdet): the factor opaque, in rows over the solve axes."""
    A = request.to_rows(mesh.pad_matrix(A, req, mesh.padding(req)), req)
    fac, status, logdet = _shard_map(functools.partial(factor_shard, req.op, _statics(req)), req,
                                     (req.row_spec,), (req.row_spec, P(None), P(None)))(A)
    return fac, status[0], logdet[0]


def solve_global(req, F, fstatus, b):
    """(x in b's shape and layout, status) with factor_global's factor."""
    b2 = b[:, None] if b.ndim == 1 else b
    b2 = jnp.pad(shard.constrain(b2, req.mesh, REP), ((0, mesh.padding(req).rhs_rows), (0, 0)))
    body = functools.partial(solve_shard, req.op, _statics(req), _shard_shape(req))
    x, status = _shard_map(body, req, (req.row_spec, P(), REP), (REP, P(None)))(F, fstatus, b2)
    x = x[: req.n]
    return request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req, b), status[0]


def inverse_global(req, F, fstatus):
    """(A^-1 in A's layout, status) from the factor."""
    body = functools.partial(inverse_shard, req.op, _statics(req), _shard_shape(req))
    inv, status = _shard_map(body, req, (req.row_spec, P()), (req.row_spec, P(None)))(F, fstatus)
    return request.to_matrix_layout(shard.cut_end(inv, req.mesh, req.n, req.n), req), status[0]


# ---- the Factored a rule gets -------------------------------------------------------------


def _open(platform: str) -> bool:
    """Whether the factor ops may run: not on GPUs across processes, where
    the cuSolverMg engine's share step carries potrs/potri/syevd's buffers
    only (ops/handle.c refuses the others there); those keep the rules
    that refactor."""
    return not (multiproc.active() and platform == "gpu")


def factored(op, cores, shape) -> Factored | None:
    """rules/hermitian.Factored for potrs's rule (op: potrs's declaration,
    which the factor ops decide, pad and check as), at mesh level
    (cores.req) or per shard (cores.statics, A's shard `shape`); None where the factor
    path is closed (the cuSOLVERMp and one-device routes have no factor
    ops; GPUs across processes: _open)."""
    if cores.per_shard:
        if not _open(library.current_platform()):
            return None
        st = cores.statics
        return Factored(factor=functools.partial(factor_shard, op, st),
                        solve=functools.partial(solve_shard, op, st, shape),
                        inverse=functools.partial(inverse_shard, op, st, shape))
    req = cores.req
    if req.engine in ("mp", "local") or not _open(library.mesh_platform(req.mesh)):
        return None
    req = dataclasses.replace(req, op=op, opts=op.options())
    return Factored(factor=functools.partial(factor_global, req),
                    solve=functools.partial(solve_global, req),
                    inverse=functools.partial(inverse_global, req))
