"""The generalized Hermitian-definite eigenproblem A x = lambda B x (A
Hermitian, B Hermitian positive definite), scipy.linalg.eigh(a, b)'s
contract: eigenvalues ascending (real dtype), eigenvectors as columns,
B-orthonormal (V^H B V = I), A V = B V diag(w). One op, in every call form
of syevd: mesh level (`eigh_generalized`, and `sygvd`, the LAPACK and
cuSOLVER name) with the mesh and specs given or inferred, and
`eigh_generalized_shardmap_ctx` inside the caller's shard_map (local
shards) or outside one (global arrays).

The path, as syevd's in _ops.py:
  _local(a, b, ...)    one device's row shards of A and B, inside a
                       shard_map: the non-finite guard, the FFI call
                       (op "sygvd" of csrc/ops/op_table.c), V back in rows
                       or columns, LAPACK's info mapped to jaxmg's status
  _core(A, B, req)     global arrays: first _routes.route (the cuSOLVERMp
                       engine, which solves the pencil distributed:
                       _mp_route); else N padded to a multiple of the device
                       count, A and B in the engines' rows, the shard_map,
                       results back in A's layout
  _differentiable      the derivative and vmap rules around the core
                       (_autodiff.generalized_eigh, _batching.matrix_op)

Conventions. Both matrices are read by their upper triangles (the engines
read the lower triangles of A^T and B^T, as for syevd). The engines see
conj(A) and conj(B), whose eigenvectors are the conjugates of ours, and
hand them back as the rows of A's shards: one all_to_all and a conj make
them columns, as for syevd. Every per-shard engine gathers A and B (host
LAPACK sygvd/hegvd, or cuSOLVER sygvd on the first GPU: cuSolverMg has no
sygvd), so T_A and pad are validated but change nothing, and the shards need no
tile padding. The global padding of N to a multiple of the device count
is left out by the engine (attribute nvalid): a pad block would need
eigenvalues above the pencil's, whose bound takes ||B^-1||.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .rules import hermitian as ad
from .pipeline import ffi as _calls
from .pipeline import decide as _decide
from .engines import library as _library
from .pipeline import request as _request
from .pipeline import routes as _routes
from .pipeline import shard as _shard
from .pipeline import validate as v

# Per-shard and global helpers shared with syevd's path (private to _ops
# today; the redesign of issue 25 makes them one shared module).
from ._ops import (
    V_LAYOUTS,
    _a_work,
    _nan_where,
    _padded_n,
    _shard_map,
    _status,
    _two_forms,
    _unpad_global,
)

OP = "sygvd"
NAME = "eigh_generalized"

# ---------------------------------------------------------------------------
# checks


def _alike(A, B, what: str):
    """A and B matrices of one shape and one dtype (ValueError otherwise)."""
    (sa, dta), (sb, dtb) = v.matrix(A, f"{what}A"), v.matrix(B, f"{what}B")
    if (sa, dta) != (sb, dtb):
        raise ValueError(
            f"jaxmg: {NAME} needs {what}A and {what}B of one shape and dtype; got {sa} {dta} "
            f"and {sb} {dtb}"
        )


def _pair(A, B) -> None:
    """Global A and B: square, alike."""
    _alike(A, B, "")
    v.square(A)


def status_of(info, nvalid: int):
    """jaxmg's status from LAPACK sygvd's info for order nvalid: info =
    nvalid + k (B's leading minor k not positive definite) gives k; info
    in 1..nvalid (the eigensolver did not converge) gives nvalid + info;
    0 stays 0."""
    info = jnp.asarray(info, jnp.int32)
    return jnp.where(info > nvalid, info - nvalid,
                     jnp.where(info > 0, info + nvalid, info)).astype(jnp.int32)


# ---------------------------------------------------------------------------
# per shard (inside shard_map)


def _local(a, b, T_A, return_eigenvectors=True, pad=True, axis_name=None, dispatch="auto",
           nvalid=None, v_layout="rows"):
    """(w (N,), V block or None, status (1,)) for this device's row shards
    of A and B. V's block: "rows" (N/P, N) or "cols" (N, N/P). nvalid: the
    order of the pencil (the rest of N is padding; default N)."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    v.flag(pad, "pad")
    v.tile(T_A)
    if v_layout not in V_LAYOUTS:
        raise ValueError(f"jaxmg: v_layout must be 'cols' or 'rows', got {v_layout!r}")
    _decide.check(dispatch)
    axes = v.shard_axes(axis_name)
    _library.ensure_registered(_library.current_platform())
    nparties = math.prod(_shard.axis_sizes()[ax] for ax in axes)
    _alike(a, b, "the local shard of ")
    nloc, n, dt = v.local_shard(a, nparties)
    nvalid = n if nvalid is None else nvalid
    where = _shard.where_am_i(axes)
    solver = _decide.c_code(_decide.for_shard(OP, dt, n, nparties, axes, dispatch))
    # The engines gather: the whole shard is one tile, nothing is padded.
    e, w, info = _calls.ffi(OP, a, b, where, site=_shard.new_site(), tile=nloc,
                            nparties=nparties, dispatch=solver, jobz=int(jobz), nvalid=nvalid,
                            nonfinite=_calls.nonfinite(a, b))
    bad = _calls.agreed_nonfinite(info)
    w = _nan_where(bad, w)
    status = _status(status_of(info, nvalid))
    if not jobz:
        return w, None, status
    fix = jnp.conj if _shard.is_complex(dt) else (lambda x: x)
    if v_layout == "cols":  # e's rows are the eigenvectors of this device's columns
        return w, _nan_where(bad, fix(e.T)), status
    cols = jax.lax.all_to_all(e, axes, split_axis=1, concat_axis=0, tiled=True)
    return w, _nan_where(bad, fix(cols.T)), status


# ---------------------------------------------------------------------------
# the core: global arrays, traced


def _core(A, B, req):
    """(w, V in A's layout or None, status) for global A and B."""
    if (r := _routes.route(OP, req, A, B)) is not None:  # the cuSOLVERMp engine
        w, V, info = r  # LAPACK's info, as every engine returns it (-1: non-finite input)
        return w, V, status_of(info, req.n)
    n, n1 = req.n, _padded_n(req)
    jobz = bool(req.opt("jobz", True))
    # padded at the end with an identity block, which the engines leave out
    # (they solve the leading nvalid = N pencil)
    A = _request.to_rows(_shard.pad_end(A, req.mesh, n1, n1, 1), req)
    B = _request.to_rows(_shard.pad_end(B, req.mesh, n1, n1, 1), req)
    body = functools.partial(_local, T_A=req.tile, return_eigenvectors=jobz, pad=req.pad,
                             axis_name=req.axes, dispatch=req.engine, nvalid=n)
    rows = req.row_spec
    if jobz:
        w, V, status = _shard_map(body, req, (rows, rows), (P(None), rows, P(None)))(A, B)
        V = _request.to_matrix_layout(_unpad_global(V, req, n1), req)
    else:
        w, status = _shard_map(lambda a, b: body(a, b)[::2], req, (rows, rows),
                               (P(None), P(None)))(A, B)
        V = None
    return w[:n], V, status[0]


def _differentiable(A, B, req):
    """_core with derivatives in A and B and vmap (_autodiff's rules)."""
    lay = ad.layout_of(req)
    if req.opt("jobz", True):
        return ad.generalized_eigh(lambda A_, B_: _core(A_, B_, req), lay)(A, B)
    full = dataclasses.replace(req, opts=(("jobz", True),))
    w, status = ad.generalized_eigvalsh(lambda A_, B_: _core(A_, B_, req)[::2],
                                        lambda A_, B_: _core(A_, B_, full), lay)(A, B)
    return w, None, status


def _empty(req):
    dt = jnp.dtype(req.dtype)
    return jnp.zeros((0,), _shard.real_dtype(dt)), jnp.zeros((0, 0), dt), jnp.int32(0)


def _normalise(A, B, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate, jobz):
    _pair(A, B)
    return _request.normalise(OP, A, T_A=T_A, mesh=mesh, specs=in_specs,
                              matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                              donate=donate, opts=(("jobz", jobz),))


# ---------------------------------------------------------------------------
# mesh level


def eigh_generalized(A, B, T_A, mesh=None, in_specs=None, return_eigenvectors=True,
                     return_status=False, pad=True, dispatch="auto", *, matrix_specs=None,
                     donate=False):
    """Solves A x = lambda B x for Hermitian A and Hermitian positive
    definite B (scipy.linalg.eigh(a, b)).

    A and B: (N, N), one dtype; B is moved to A's layout. Both are read by
    their upper triangles. Returns (w, V): eigenvalues ascending (real
    dtype, replicated) and eigenvectors as columns in A's layout, with
    A V = B V diag(w) and V^H B V = I; w alone with
    return_eigenvectors=False; status appended with return_status: 0;
    k in 1..N: B's leading minor of order k is not positive definite
    (LAPACK's info N + k); > N: the eigensolver did not converge; -1:
    non-finite input (w and V are NaN whenever status != 0). The one-node
    engines gather A and B on one device (the host leader, or the first GPU
    of the axis), so T_A and pad change nothing there and dispatch='multi'
    is refused; cuSOLVERMp (dispatch='mp', or a solve group across nodes)
    solves the pencil distributed, in tiles of T_A. The rest as for syevd.
    """
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    want_status = v.flag(return_status, "return_status")
    req = _normalise(A, B, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate, jobz)
    w, vecs, status = (_empty(req) if req.n == 0
                       else _request.run(_differentiable, req, A, B))
    out = (w, vecs) if jobz else (w,)
    out = out + ((status,) if want_status else ())
    return out if len(out) > 1 else out[0]


# The LAPACK and cuSOLVER name, which clients porting code look for.
sygvd = eigh_generalized


# ---------------------------------------------------------------------------
# eigh_generalized_shardmap_ctx: two forms under one name


def _ctx_local(a, b, T_A, return_eigenvectors=True, pad=True, axis_name=None, dispatch="auto", *,
               v_layout="cols"):
    """a, b: this device's row shards of A and B, (N / P, N) each. Returns
    (w, V, status), or (w, status) without eigenvectors: w (N,) ascending,
    replicated; V this device's block of the eigenvector matrix
    (eigenvectors in columns, V^H B V = I): v_layout="cols" (default, as
    syevd_shardmap_ctx): (N, N / P), out_specs P(None, ax); "rows":
    (N / P, N), out_specs P(ax, None). status (1,) as for
    eigh_generalized. Differentiable in a and b (w; V for distinct
    eigenvalues)."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    if v_layout not in V_LAYOUTS:
        raise ValueError(f"jaxmg: v_layout must be 'cols' or 'rows', got {v_layout!r}")
    v.tile(T_A)
    _alike(a, b, "the local shard of ")
    if a.shape[0] == 0 and a.shape[1] == 0:
        w = jnp.zeros((0,), _shard.real_dtype(a.dtype))
        return (w, a, _status(0)) if jobz else (w, _status(0))
    lay = ad.Layout(v.shard_axes(axis_name))
    body = functools.partial(_local, T_A=T_A, return_eigenvectors=True, pad=pad,
                             axis_name=axis_name, dispatch=dispatch, v_layout=v_layout)
    cols = v_layout == "cols"
    if jobz:
        return ad.generalized_eigh(body, lay, cols)(a, b)
    values = functools.partial(_local, T_A=T_A, return_eigenvectors=False, pad=pad,
                               axis_name=axis_name, dispatch=dispatch)
    return ad.generalized_eigvalsh(lambda a_, b_: values(a_, b_)[::2], body, lay, cols)(a, b)


def _ctx_global(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None,
                return_eigenvectors=True, pad=True, dispatch="auto", donate=False):
    """A and B global, any layout, no shard_map around: returns (a_work,
    b_work, w, V, status) or (a_work, b_work, w, status); a_work and b_work
    are A and B in the engines' row layout (their values), V in A's
    layout, status a scalar."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    req = _normalise(a, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate, jobz)
    if req.n == 0:
        w, vecs, status = _empty(req)
        out = (jnp.asarray(a), jnp.asarray(b), w, vecs, status)
    else:
        out = _request.run(_ctx_core, req, a, b)
    return out if jobz else out[:3] + out[4:]


def _ctx_core(A, B, req):
    w, V, status = _differentiable(A, B, req)
    return _a_work(A, req), _a_work(B, req), w, V, status


eigh_generalized_shardmap_ctx = _two_forms(_ctx_local, _ctx_global,
                                           "eigh_generalized_shardmap_ctx")
