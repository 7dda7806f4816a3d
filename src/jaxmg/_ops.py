"""The three operations: per-shard bodies, one core per op, and the public
call forms (mesh level and *_shardmap_ctx), all of which go through the
core after _request.normalise.

Conventions that hold throughout. The C engines read each row shard as
column-major, so they see M = A^T = conj(A) for symmetric/Hermitian A:
  - potrs solves conj(A) y = conj(b), so x = conj(y);
  - potri's M^-1 = (A^-1)^T, which read row-major is A^-1 itself;
  - syevd's eigenvectors of M are conj of A's, and come back as rows
    (eigenvector j in row j), so one all_to_all turns them into columns.

Layers:
  _*_local(a, ...)        one device's row shard, inside a shard_map
  _core_*(A, ..., req)    global arrays, traced; the one path of every form
  potrs / potri / syevd   mesh level: normalise, run the core (cached jit)
  *_shardmap_ctx          inside the caller's shard_map: the local body;
                          outside any: 1.4's form (a_work first), the core
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .rules import hermitian as _autodiff
from .pipeline import ffi as _calls
from .pipeline import decide as _decide
from .engines import library as _library
from .engines import multiproc as _multiproc
from .pipeline import request as _request
from .pipeline import routes as _routes
from .pipeline import shard as _shard
from .pipeline import validate as v

# cuSolverMg's syevd takes tiles of at most 1024 columns; every platform
# uses the same limit so that all of them solve the same padded problem.
SYEVD_MAX_TILE = 1024

REP = P(None, None)

# ---------------------------------------------------------------------------
# per shard (inside shard_map)


def _status(status):
    """Per shard, the status is an int32 array of shape (1,), so that it can
    leave a shard_map as P(None) (as in the tutorial)."""
    return jnp.asarray(status, jnp.int32).reshape(1)


def _setup(a, axis_name, T_A, pad, op, dispatch, max_tile=None):
    """Checks one shard's call; returns the solve axes, their device count,
    the shard's _shard.PadPlan, (rank, group), the dtype and the engine's
    code for C (_decide). The shard is (ceil(N / P), N): N = P nloc inside
    the caller's shard_map, less where a core padded A's rows only."""
    axes = v.shard_axes(axis_name)
    _library.ensure_registered(_library.current_platform())
    _decide.check(dispatch)
    sizes = _shard.axis_sizes()
    nparties = math.prod(sizes[ax] for ax in axes)
    nloc, n, dt = v.local_shard(a, nparties)
    engine = _decide.for_shard(op, dt, n, nparties, axes, dispatch)
    plan = _shard.pad_plan(op, n, nparties, v.tile(T_A), v.flag(pad, "pad"), engine, max_tile)
    return axes, nparties, plan, _shard.where_am_i(axes), dt, _decide.c_code(engine)


def _pad_a(a, nparties, plan, rank):
    """The shard as its engine takes it (_shard.PadPlan)."""
    if plan.inside:
        return _shard.pad_shard(a, nparties, rank, plan.rows, 1)
    return _shard.buffer_rows(a, plan.rows)


def _pad_b(b, nparties, plan):
    return _shard.pad_rows(b, nparties, plan.lrows, plan.rows) if plan.inside else b


def _unpad_x(x, nparties, plan):
    return _shard.unpad_rows(x, nparties, plan.lrows, plan.rows) if plan.inside else x


def _unpad_a(r, nparties, plan):
    """A square result in the engine's shard back to A's shard."""
    if plan.inside:
        return _shard.unpad_shard(r, nparties, plan.lrows, plan.rows)
    return r[: plan.lrows]


def _unpad_status(status, plan):
    return _shard.unpad_status(status, plan.lrows, plan.rows) if plan.inside else status


def _nan_where(bad, x):
    return jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), x)


def _potrs_local(a, b, T_A, pad=True, axis_name=None, dispatch="auto", logdet=False,
                 factor=False):
    """(x, status (1,), logdet (1,) or None, factor or None) for one shard;
    b replicated. factor: also return the engine's A buffer (the Cholesky
    factor), so that a donated A has an output to alias."""
    axes, nparties, plan, where, dt, solver = _setup(a, axis_name, T_A, pad, "potrs", dispatch)
    n = a.shape[1]
    _, vector = v.rhs(b, n, dt)
    b2 = b[:, None] if vector else b
    a_p = _pad_a(a, nparties, plan, where[0])
    b_p = _pad_b(b2, nparties, plan)
    if _shard.is_complex(dt):
        b_p = jnp.conj(b_p)
    kw = dict(site=_shard.new_site(), tile=plan.tile, nparties=nparties, dispatch=solver,
              nonfinite=_calls.nonfinite(a, b2))
    ld = fac = None
    fn = _calls.potrs_with_logdet if logdet else _calls.potrs
    if factor:
        fac, *res = fn(a_p, b_p, where, with_factor=True, **kw)
    else:
        res = fn(a_p, b_p, where, **kw)
    x, status = res[0], res[1]
    bad = _calls.agreed_nonfinite(status)
    if logdet:
        ld = _nan_where(bad, jnp.asarray(res[2]).reshape(1))
    x = _unpad_x(x, nparties, plan)
    if _shard.is_complex(dt):
        x = jnp.conj(x)
    x = _nan_where(bad, x)
    status = _unpad_status(status, plan)
    return (x[:, 0] if vector else x), _status(status), ld, fac


def _potri_local(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """(this device's rows of A^-1, both triangles; status (1,))."""
    axes, nparties, plan, where, dt, solver = _setup(a, axis_name, T_A, pad, "potri", dispatch)
    inv, status = _calls.potri(
        _pad_a(a, nparties, plan, where[0]), where, site=_shard.new_site(), tile=plan.tile,
        nparties=nparties, dispatch=solver, nonfinite=_calls.nonfinite(a),
    )
    inv = _nan_where(_calls.agreed_nonfinite(status), _unpad_a(inv, nparties, plan))
    return inv, _status(_unpad_status(status, plan))


# Factor reuse (issue 16): the engine's Cholesky factor made once, then
# any number of solves and the inverse from it (the derivative rules of
# potrs and its logdet, _autodiff.Factored). The factor is opaque: A's
# padded shard shape and dtype, contents in the engine's own layout, valid
# only for the statics it was made with. The solve and inverse bodies take
# the original shard shape (nloc, N) and the same T_A, pad, axes and
# dispatch, and _setup derives the same tile, padding and solver from
# them (a pure function of those statics and the platform); the factor's
# shape is checked against that plan.


def _chol_factor_local(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """(factor (nloc_p, P nloc_p), status (1,), logdet (1,)) for one shard:
    status and logdet as potrs's (0 / failing minor / -1 non-finite)."""
    axes, nparties, plan, where, dt, solver = _setup(a, axis_name, T_A, pad, "potrs", dispatch)
    fac, status, logdet = _calls.chol_factor(
        _pad_a(a, nparties, plan, where[0]), where, site=_shard.new_site(),
        tile=plan.tile, nparties=nparties, dispatch=solver, nonfinite=_calls.nonfinite(a),
    )
    bad = _calls.agreed_nonfinite(status)
    status = _unpad_status(status, plan)
    # the factor stays as it is: opaque, and a failed one is never used
    # (_chol_solve_local, _chol_inverse_local flag it)
    return fac, _status(status), _nan_where(bad, jnp.asarray(logdet).reshape(1))


def _factor_setup(factor, shard, T_A, pad, axis_name, dispatch):
    """_setup for a call on a factor made from a shard of shape `shard`."""
    out = _setup(jax.ShapeDtypeStruct(tuple(shard), factor.dtype), axis_name, T_A, pad, "potrs",
                 dispatch)
    nparties, plan = out[1], out[2]
    want = (plan.rows, nparties * plan.rows if plan.inside else shard[1])
    if tuple(factor.shape) != want:
        raise ValueError(
            f"jaxmg: a Cholesky factor of shape {tuple(factor.shape)} does not fit a {shard} "
            f"shard with these statics (expected {want}): a factor is "
            "valid only with the tile, padding, axes and dispatch it was made with"
        )
    return out


def _factor_failed(fstatus):
    fst = jnp.reshape(jnp.asarray(fstatus), ()).astype(jnp.int32)
    return fst, fst != 0


def _chol_solve_local(factor, fstatus, b, shard, T_A, pad=True, axis_name=None,
                      dispatch="auto"):
    """(x, status (1,)): A x = b (b replicated) with the factor of A that
    _chol_factor_local made from a `shard`-shaped shard with these statics.
    A failed factor (fstatus != 0) gives NaN and fstatus; non-finite b, -1.
    Neither reaches the engine: a failed factor is flagged like non-finite
    input (its contents are not a factor)."""
    axes, nparties, plan, where, dt, solver = _factor_setup(
        factor, shard, T_A, pad, axis_name, dispatch
    )
    _, vector = v.rhs(b, shard[1], dt)
    b2 = b[:, None] if vector else b
    b_p = _pad_b(b2, nparties, plan)
    if _shard.is_complex(dt):
        b_p = jnp.conj(b_p)  # the engine solves conj(A) y = conj(b), as potrs's
    fst, failed = _factor_failed(fstatus)
    x, status = _calls.chol_solve(
        factor, b_p, where, site=_shard.new_site(), tile=plan.tile,
        nparties=nparties, dispatch=solver, nonfinite=_calls.nonfinite(b2) | failed,
    )
    x = _unpad_x(x, nparties, plan)
    if _shard.is_complex(dt):
        x = jnp.conj(x)
    x = _nan_where(_calls.agreed_nonfinite(status), x)
    return (x[:, 0] if vector else x), _status(jnp.where(failed, fst, status))


def _chol_inverse_local(factor, fstatus, shard, T_A, pad=True, axis_name=None, dispatch="auto"):
    """(this device's rows of A^-1, both triangles; status (1,)) from the
    factor, as _chol_solve_local."""
    axes, nparties, plan, where, dt, solver = _factor_setup(
        factor, shard, T_A, pad, axis_name, dispatch
    )
    fst, failed = _factor_failed(fstatus)
    inv, status = _calls.chol_inverse(
        factor, where, site=_shard.new_site(), tile=plan.tile, nparties=nparties,
        dispatch=solver, nonfinite=failed,
    )
    inv = _nan_where(_calls.agreed_nonfinite(status), _unpad_a(inv, nparties, plan))
    return inv, _status(jnp.where(failed, fst, status))


def _factor_path_open(platform: str) -> bool:
    """Whether the factor ops may run here: not on GPUs across processes,
    where the cuSolverMg engine's share step carries potrs/potri/syevd's
    buffers only (ops/handle.c refuses other ops there); those keep the
    rules that refactor."""
    return not (_multiproc.active() and platform == "gpu")


def _local_factored(shard, T_A, pad, axis_name, dispatch):
    """_autodiff.Factored for a shard of shape `shard` inside the caller's
    shard_map, or None where the factor path is closed."""
    if not _factor_path_open(_library.current_platform()):
        return None
    return _autodiff.Factored(
        factor=lambda a: _chol_factor_local(a, T_A, pad, axis_name, dispatch),
        solve=lambda F, s, b: _chol_solve_local(F, s, b, shard, T_A, pad, axis_name, dispatch),
        inverse=lambda F, s: _chol_inverse_local(F, s, shard, T_A, pad, axis_name, dispatch),
    )


V_LAYOUTS = ("cols", "rows")


def _syevd_local(a, T_A, return_eigenvectors=True, pad=True, axis_name=None, dispatch="auto",
                 v_layout="rows"):
    """(w, V block or None, status (1,)). V's block: "rows" (N/P, N), this
    device's rows of V; "cols" (N, N/P), this device's columns (0.0.x)."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    if v_layout not in V_LAYOUTS:
        raise ValueError(f"jaxmg: v_layout must be 'cols' or 'rows', got {v_layout!r}")
    axes, nparties, plan, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "syevd", dispatch, SYEVD_MAX_TILE
    )
    n = a.shape[1]
    # Never padded inside A (no pad value, nothing to couple to A): the
    # engine solves A itself (_shard.PadPlan).
    e, w, status = _calls.syevd(
        _pad_a(a, nparties, plan, where[0]), where, site=_shard.new_site(),
        tile=plan.tile, nparties=nparties, dispatch=solver, jobz=jobz, nonfinite=_calls.nonfinite(a),
    )
    bad = _calls.agreed_nonfinite(status)
    w, status = _nan_where(bad, w), _status(status)
    if not jobz:
        return w, None, status
    fix = jnp.conj if _shard.is_complex(dt) else (lambda x: x)
    e = e[: plan.lrows]  # eigenvectors d l + i of M, as rows
    if v_layout == "cols" and e.shape[1] == nparties * plan.lrows:
        # e's rows are eigenvectors j of this device's block: V's columns.
        return w, _nan_where(bad, fix(e.T)), status
    # Device r needs A's eigenvector entries for its own rows: a
    # distributed transpose, then conj.
    cols = jax.lax.all_to_all(_shard.square_blocks(e, nparties), axes, split_axis=1,
                              concat_axis=0, tiled=True)
    vecs = _nan_where(bad, fix(cols.T)[:, :n])
    if v_layout == "cols":  # rows (N/P, N) -> columns (N, N/P): one more all_to_all
        vecs = jax.lax.all_to_all(vecs, axes, split_axis=1, concat_axis=0, tiled=True)
    return w, vecs, status


# ---------------------------------------------------------------------------
# the cores: global arrays, traced, one per op


def _square_padded(req, op):
    """Whether op's engine takes A padded inside (cuSolverMg's Cholesky and
    LU, _shard.pads_inside): then the core pads A square, with an identity
    block at its end, and the per-shard body pads each shard likewise."""
    return _shard.pads_inside(op, req.engine)


def engine_rows(A, req, op):
    """A (N x N) in the engines' rows over the solve axes: N rounded up to a
    multiple of the device count P with rows after A's (zero: outside A,
    the engine never reads them), and, where op's engine pads inside A
    (_square_padded), columns too, with an identity block: no pad value
    ever depends on A. Rare (P must not divide N); it costs one copy, and A
    is replicated first: JAX cannot pad a dimension sharded on Explicit
    axes to a size they do not divide."""
    n, n1 = req.n, _padded_n(req)
    inside = n1 != n and _square_padded(req, op)
    A = _shard.pad_end(A, req.mesh, n1, n1 if inside else n, 1 if inside else None)
    return _request.to_rows(A, req)


def engine_b(b2, req, op):
    """b (N, K) replicated, with rows for the pad columns where A has them."""
    n, n1 = req.n, _padded_n(req)
    rows = n1 - n if n1 != n and _square_padded(req, op) else 0
    return jnp.pad(_shard.constrain(b2, req.mesh, REP), ((0, rows), (0, 0)))


def _padded_n(req):
    p = req.nparties
    return -(-req.n // p) * p


def _unpad_global(m, req, n1):
    """Cuts the global end padding off an N x N result (replicated first:
    JAX cannot shard n1 rows and then n of them evenly)."""
    if n1 == req.n:
        return m
    return _shard.constrain(m, req.mesh, REP)[: req.n, : req.n]


def _shard_map(body, req, in_specs, out_specs):
    return jax.shard_map(body, mesh=req.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


def _potrs_full(A, b, req, factor=False):
    """(x, status, logdet or None, factor or None); the factor only where
    asked and unpadded (it then has A's shape, in rows)."""
    if (r := _routes.route("potrs", req, A, b)) is not None:  # the cuSOLVERMp engine (issue 17)
        return (*r, None)
    n, n1 = req.n, _padded_n(req)
    logdet = bool(req.opt("logdet", False))
    factor = factor and n1 == n
    b2 = b[:, None] if b.ndim == 1 else b
    A = engine_rows(A, req, "potrs")
    b2 = engine_b(b2, req, "potrs")
    body = functools.partial(_potrs_local, T_A=req.tile, pad=req.pad, axis_name=req.axes,
                             dispatch=req.engine, logdet=logdet, factor=factor)
    keep = (True, True, logdet, factor)
    outs = tuple(s for s, k in zip((REP, P(None), P(None), req.row_spec), keep) if k)

    def local(a, b):
        return tuple(r for r, k in zip(body(a, b), keep) if k)

    res = list(_shard_map(local, req, (req.row_spec, REP), outs)(A, b2))
    x, status = res.pop(0)[:n], res.pop(0)[0]
    ld = res.pop(0)[0] if logdet else None
    fac = res.pop(0) if factor else None
    x = _request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req, b)
    return x, status, ld, fac


def _core_potrs(A, b, req):
    """Global (x, status, logdet or None): x in b's shape and layout."""
    return _potrs_full(A, b, req)[:3]


def _potrs_donating(A, b, req):
    """_core_potrs, plus the factor as a last output for a donated A to
    alias (eager donate=True)."""
    return _potrs_full(A, b, req, factor=True)


def _core_potri(A, req):
    """Global (A^-1 in A's layout, status)."""
    if (r := _routes.route("potri", req, A)) is not None:
        return r
    n1 = _padded_n(req)
    A = engine_rows(A, req, "potri")
    body = functools.partial(_potri_local, T_A=req.tile, pad=req.pad, axis_name=req.axes,
                             dispatch=req.engine)
    inv, status = _shard_map(body, req, (req.row_spec,), (req.row_spec, P(None)))(A)
    return _request.to_matrix_layout(_unpad_global(inv, req, n1), req), status[0]


def _factor_shard(req):
    """The shard shape the mesh-level factor is made from (engine_rows)."""
    n1 = _padded_n(req)
    return (n1 // req.nparties, n1 if _square_padded(req, "potrs") else req.n)


def _factor_statics(req):
    return dict(T_A=req.tile, pad=req.pad, axis_name=req.axes, dispatch=req.engine)


def _core_chol_factor(A, req):
    """Global (factor, status, logdet): the factor opaque, in rows over the
    solve axes ((P nloc_p) x (P nloc_p): the engine's padded shards)."""
    A = engine_rows(A, req, "potrs")
    body = functools.partial(_chol_factor_local, **_factor_statics(req))
    fac, status, logdet = _shard_map(body, req, (req.row_spec,),
                                     (req.row_spec, P(None), P(None)))(A)
    return fac, status[0], logdet[0]


def _core_chol_solve(F, fstatus, b, req):
    """Global (x in b's shape and layout, status) with _core_chol_factor's
    factor of the same request's A."""
    n = req.n
    b2 = engine_b(b[:, None] if b.ndim == 1 else b, req, "potrs")
    body = functools.partial(_chol_solve_local, shard=_factor_shard(req), **_factor_statics(req))
    x, status = _shard_map(body, req, (req.row_spec, P(), REP), (REP, P(None)))(F, fstatus, b2)
    x = x[:n]
    return _request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req, b), status[0]


def _core_chol_inverse(F, fstatus, req):
    """Global (A^-1 in A's layout, status) from the factor."""
    n1 = _padded_n(req)
    body = functools.partial(_chol_inverse_local, shard=_factor_shard(req),
                             **_factor_statics(req))
    inv, status = _shard_map(body, req, (req.row_spec, P()), (req.row_spec, P(None)))(F, fstatus)
    return _request.to_matrix_layout(_unpad_global(inv, req, n1), req), status[0]


def _factored(req):
    """_autodiff.Factored for a mesh-level potrs request, or None where its
    derivatives keep refactoring: the cuSOLVERMp route (issue 17: no factor
    ops there) and GPUs across processes (_factor_path_open)."""
    if req.engine == "mp" or not _factor_path_open(_library.mesh_platform(req.mesh)):
        return None
    return _autodiff.Factored(
        factor=lambda A: _core_chol_factor(A, req),
        solve=lambda F, s, b: _core_chol_solve(F, s, b, req),
        inverse=lambda F, s: _core_chol_inverse(F, s, req),
    )


def _core_syevd(A, req):
    """Global (w, V in A's layout or None, status)."""
    if (r := _routes.route("syevd", req, A)) is not None:
        return r
    n, n1 = req.n, _padded_n(req)
    jobz = bool(req.opt("jobz", True))
    A = engine_rows(A, req, "syevd")
    body = functools.partial(_syevd_local, T_A=req.tile, return_eigenvectors=jobz, pad=req.pad,
                             axis_name=req.axes, dispatch=req.engine, v_layout="rows")
    if jobz:
        w, V, status = _shard_map(body, req, (req.row_spec,), (P(None), req.row_spec, P(None)))(A)
        V = _request.to_matrix_layout(_unpad_global(V, req, n1), req)
    else:
        w, status = _shard_map(lambda a: body(a)[::2], req, (req.row_spec,), (P(None), P(None)))(A)
        V = None
    return w[:n], V, status[0]


# The cores that every public form calls, through _entry: issue 16's
# derivative and vmap rules wrap them there (same signature and outputs).
CORES = {"potrs": _core_potrs, "potri": _core_potri, "syevd": _core_syevd}


def _entry(op, req):
    """The core of op that the public forms run: issue 16's differentiable
    (and vmappable) one, same signature and outputs."""
    return _entry_for(op)


@functools.lru_cache(maxsize=None)
def _entry_for(op):
    # cached: _request.run caches its jit per (function, request)
    return _autodiff.differentiable(op, CORES[op], CORES["potri"],
                                    factored=_factored if op == "potrs" else None)


# ---------------------------------------------------------------------------
# empty problems (N = 0): results of the right shapes, as jnp gives


def _empty_potrs(b, req):
    dt = jnp.dtype(req.dtype)
    return jnp.zeros(b.shape, dt), jnp.int32(0), jnp.zeros((), _shard.real_dtype(dt))


def _empty_matrix(req):
    return jnp.zeros((0, 0), jnp.dtype(req.dtype))


# ---------------------------------------------------------------------------
# mesh level


def potrs(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
          *, matrix_specs=None, return_logdet=False, donate=False):
    """Solves A x = b for symmetric/Hermitian positive definite A.

    A (N, N) in any layout (see _request); b (N,) or (N, K) in any
    layout. Returns x in b's shape and layout; with return_logdet also
    log det A (real, replicated); with return_status the int32 status last
    (0, or the order of the first leading minor that is not positive
    definite, -1 for non-finite input; x and logdet are then NaN). mesh,
    in_specs / matrix_specs: any form of docs/coming-from-jaxmg.md, or
    None (inferred). donate=True lets the engine work in A's and b's
    buffers (they are deleted). T_A: the tile (None: automatic); pad: pad
    shards to whole tiles; dispatch: "auto", "multi" or "single" (GPUs).
    """
    want_status = v.flag(return_status, "return_status")
    logdet = v.flag(return_logdet, "return_logdet")
    req = _request.normalise("potrs", A, b, T_A=T_A, mesh=mesh, specs=in_specs,
                             matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                             donate=donate, opts=(("logdet", logdet),))
    if req.n == 0:
        x, status, ld = _empty_potrs(b, req)
    elif req.donate and not _request.traced(A, b):
        x, status, ld, _ = _request.run(_potrs_donating, req, A, b)
    else:
        x, status, ld = _request.run(_entry("potrs", req), req, A, b)
    out = (x,) + ((ld,) if logdet else ()) + ((status,) if want_status else ())
    return out if len(out) > 1 else x


def potri(A, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
          *, matrix_specs=None, donate=False):
    """Inverse of a symmetric/Hermitian positive definite A (both triangles),
    in A's layout (replicated when that layout cannot hold N). With
    return_status, (A^-1, status) as for potrs; the rest as for potrs."""
    want_status = v.flag(return_status, "return_status")
    req = _request.normalise("potri", A, T_A=T_A, mesh=mesh, specs=in_specs,
                             matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate)
    if req.n == 0:
        inv, status = _empty_matrix(req), jnp.int32(0)
    else:
        inv, status = _request.run(_entry("potri", req), req, A)
    return (inv, status) if want_status else inv


def syevd(A, T_A, mesh=None, in_specs=None, return_eigenvectors=True, return_status=False,
          pad=True, dispatch="auto", *, matrix_specs=None, donate=False):
    """Eigendecomposition of a symmetric/Hermitian A.

    Returns (w, V): eigenvalues ascending (real dtype, replicated) and the
    eigenvectors as columns (A V = V diag(w)) in A's layout; only w with
    return_eigenvectors=False; status appended with return_status (0; > 0
    if the solver did not converge; -1 for non-finite input). T_A is capped
    at 1024 (cuSolverMg's limit for syevd); the rest as for potrs.
    """
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    want_status = v.flag(return_status, "return_status")
    req = _request.normalise("syevd", A, T_A=T_A, mesh=mesh, specs=in_specs,
                             matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                             opts=(("jobz", jobz),))
    if req.n == 0:
        w = jnp.zeros((0,), _shard.real_dtype(jnp.dtype(req.dtype)))
        vecs, status = _empty_matrix(req), jnp.int32(0)
    else:
        w, vecs, status = _request.run(_entry("syevd", req), req, A)
    out = (w, vecs) if jobz else (w,)
    if want_status:
        out = out + (status,)
    return out if len(out) > 1 else out[0]


# ---------------------------------------------------------------------------
# *_shardmap_ctx: two forms under one name


def _in_shard_map() -> bool:
    m = jax.sharding.get_abstract_mesh()
    return bool(tuple(getattr(m, "manual_axes", ()) or ()))


def _two_forms(local, outside, name):
    """The public ctx function: `local` inside the caller's shard_map (the
    tutorial's and 0.0.x's form), `outside` on global arrays (1.4's form).
    A call that fits neither signature is a TypeError showing both."""
    sig_in, sig_out = inspect.signature(local), inspect.signature(outside)

    @functools.wraps(local)
    def ctx(*args, **kwargs):
        inside = _in_shard_map()
        fn, sig = (local, sig_in) if inside else (outside, sig_out)
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            where = "inside jax.shard_map" if inside else "outside jax.shard_map (on global arrays)"
            raise TypeError(
                f"jaxmg: {name} called {where} takes {name}{sig}; ({e}). Inside a shard_map "
                f"it is {name}{sig_in}, outside {name}{sig_out}"
            ) from None
        with _shard.program_scope():
            return fn(*args, **kwargs)

    ctx.__name__ = ctx.__qualname__ = name
    ctx.__doc__ = (
        f"{name}: two forms (docs/coming-from-jaxmg.md).\n\n"
        f"Inside the caller's jax.shard_map: {name}{sig_in}\n{inspect.getdoc(local)}\n\n"
        f"Outside any shard_map, on global arrays (JAXMg 1.4): {name}{sig_out}\n"
        f"{inspect.getdoc(outside)}"
    )
    return ctx


def _potrs_ctx_local(a, b, T_A, pad=True, axis_name=None, dispatch="auto", *,
                     return_logdet=False):
    """a: this device's row shard of A, (N / devices, N); b: (N, K) or (N,),
    replicated. Returns (x, status) or, with return_logdet, (x, logdet,
    status): x replicated like b, logdet (1,), status int32 (1,) (0;
    k > 0: leading minor k not positive definite; -1: non-finite input; x
    is then NaN). axis_name: the solve axis (or tuple), by default every
    manual axis of the shard_map."""
    logdet = v.flag(return_logdet, "return_logdet")
    if a.shape[0] == 0 and a.shape[1] == 0:
        return (b, jnp.zeros((1,), _shard.real_dtype(b.dtype)), _status(0)) if logdet \
            else (b, _status(0))
    axes = v.shard_axes(axis_name)
    # checked before the derivative rules touch a and b (their products
    # would fail first, with JAX's shape errors instead of these)
    v.tile(T_A)
    v.rhs(b, v.matrix(a, "the local shard of A")[0][1], a.dtype)

    def body(a, b):
        return _potrs_local(a, b, T_A, pad, axis_name, dispatch, logdet)[:3]

    def potri_body(a):
        return _potri_local(a, T_A, pad, axis_name, dispatch)

    factored = _local_factored(a.shape, T_A, pad, axis_name, dispatch)
    x, status, ld = _autodiff.differentiable_local(
        "potrs", body, axes, potri_body if logdet else None, factored)(a, b)
    return (x, ld, status) if logdet else (x, status)


def _global_req(op, a, b, T_A, mesh, matrix_specs, in_specs, pad, dispatch, donate, opts=()):
    return _request.normalise(op, a, b, T_A=T_A, mesh=mesh, specs=in_specs,
                              matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                              donate=donate, opts=opts)


def _potrs_ctx_global(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None,
                      return_logdet=False, pad=True, dispatch="auto", donate=False):
    """A and b global, any layout, no shard_map around: returns (a_work, x,
    status) or (a_work, x, logdet, status); a_work is A in the engines' row
    layout (its values), x in b's layout, status a scalar. Runs inline
    under the caller's jit (donate A there), else through a cached jit."""
    logdet = v.flag(return_logdet, "return_logdet")
    req = _global_req("potrs", a, b, T_A, mesh, matrix_specs, in_specs, pad, dispatch, donate,
                      (("logdet", logdet),))
    if req.n == 0:
        x, status, ld = _empty_potrs(b, req)
        a_work = jnp.asarray(a)
    else:
        a_work, x, status, ld = _request.run(_ctx_core_potrs, req, a, b)
    return (a_work, x, ld, status) if logdet else (a_work, x, status)


def _a_work(A, req):
    """1.4's a_work: A in the engines' row layout (replicated where that
    cannot hold N)."""
    return _request.to_rows(A, req) if _request.fits(req.n, req.mesh, req.row_spec) else A


def _ctx_core_potrs(A, b, req):
    x, status, ld = _entry("potrs", req)(A, b, req)
    return _a_work(A, req), x, status, ld


def _potri_ctx_local(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Returns (this device's rows of A^-1, both triangles, (N / P, N);
    status (1,) as for potrs)."""
    if a.shape[0] == 0 and a.shape[1] == 0:
        return a, _status(0)
    return _autodiff.differentiable_local(
        "potri", lambda a: _potri_local(a, T_A, pad, axis_name, dispatch),
        v.shard_axes(axis_name))(a)


def _potri_ctx_global(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
                      dispatch="auto", donate=False):
    """A global: returns (a_work, A^-1 in A's layout, status)."""
    req = _global_req("potri", a, None, T_A, mesh, matrix_specs, in_specs, pad, dispatch, donate)
    if req.n == 0:
        return jnp.asarray(a), _empty_matrix(req), jnp.int32(0)
    return _request.run(_ctx_core_potri, req, a)


def _ctx_core_potri(A, req):
    inv, status = _entry("potri", req)(A, req)
    return _a_work(A, req), inv, status


def _syevd_ctx_local(a, T_A, return_eigenvectors=True, pad=True, axis_name=None,
                     dispatch="auto", *, v_layout="cols"):
    """Returns (w, V, status), or (w, status) without eigenvectors: w (N,)
    ascending, replicated; V this device's block of the eigenvector matrix
    (eigenvectors in columns): v_layout="cols" (the default, as JAXMg
    0.0.x): (N, N / P), this device's columns, out_specs P(None, ax);
    "rows": (N / P, N), this device's rows, out_specs P(ax, None). status
    (1,) as for potrs. Differentiable (w; V for distinct eigenvalues, as
    jnp.linalg.eigh), in either layout and without eigenvectors."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    if T_A is not None and not isinstance(T_A, bool) and isinstance(T_A, int) \
            and T_A > SYEVD_MAX_TILE:
        raise ValueError(f"jaxmg: syevd_shardmap_ctx takes T_A <= {SYEVD_MAX_TILE}, got {T_A}")
    if a.shape[0] == 0 and a.shape[1] == 0:
        w = jnp.zeros((0,), _shard.real_dtype(a.dtype))
        return (w, a, _status(0)) if jobz else (w, _status(0))
    if v_layout not in V_LAYOUTS:
        raise ValueError(f"jaxmg: v_layout must be 'cols' or 'rows', got {v_layout!r}")
    v.tile(T_A)
    v.matrix(a, "the local shard of A")
    # differentiable (issue 16): the rule works on V in rows, either layout
    body = functools.partial(_syevd_local, T_A=T_A, return_eigenvectors=True, pad=pad,
                             axis_name=axis_name, dispatch=dispatch, v_layout=v_layout)
    values = (lambda a: _syevd_local(a, T_A, False, pad, axis_name, dispatch)[::2]) \
        if not jobz else None
    return _autodiff.syevd_local(body, v.shard_axes(axis_name), v_layout, values)(a)


def _syevd_ctx_global(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None,
                      return_eigenvectors=True, pad=True, dispatch="auto", donate=False):
    """A global: returns (a_work, w, V, status) or (a_work, w, status); V in
    A's layout, status a scalar."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    req = _global_req("syevd", a, None, T_A, mesh, matrix_specs, in_specs, pad, dispatch, donate,
                      (("jobz", jobz),))
    if req.n == 0:
        w = jnp.zeros((0,), _shard.real_dtype(jnp.dtype(req.dtype)))
        out = (jnp.asarray(a), w, _empty_matrix(req), jnp.int32(0))
    else:
        out = _request.run(_ctx_core_syevd, req, a)
    return out if jobz else (out[0], out[1], out[3])


def _ctx_core_syevd(A, req):
    w, V, status = _entry("syevd", req)(A, req)
    return _a_work(A, req), w, V, status


potrs_shardmap_ctx = _two_forms(_potrs_ctx_local, _potrs_ctx_global, "potrs_shardmap_ctx")
potri_shardmap_ctx = _two_forms(_potri_ctx_local, _potri_ctx_global, "potri_shardmap_ctx")
syevd_shardmap_ctx = _two_forms(_syevd_ctx_local, _syevd_ctx_global, "syevd_shardmap_ctx")


# ---------------------------------------------------------------------------
# helpers JAXMg's users import


def potri_symmetrize(a_inv):
    """The full Hermitian inverse from potri's output, whether that holds
    the upper triangle only (JAXMg 0.0.9's potri_shardmap_ctx) or both
    (jaxmg's): upper triangle plus the conjugate transpose of its strictly
    upper part. Reads only the upper triangle, so applying it twice is
    harmless. Works on global arrays (any sharding) and under jit."""
    a_inv = jnp.asarray(a_inv)
    if a_inv.ndim != 2 or a_inv.shape[0] != a_inv.shape[1]:
        raise ValueError(f"jaxmg: potri_symmetrize takes a square matrix, got shape {a_inv.shape}")
    upper = jnp.triu(a_inv)
    return upper + jnp.conj(jnp.triu(a_inv, 1)).T
