"""The general operations of JAXMg 1.4: lu_solve, least_squares, qr, gesvd
and polar, in every call form of potrs (src/jaxmg/_request.py): mesh and
specs optional (taken from A's sharding or the context mesh), in_specs or
matrix_specs in any accepted form, any layout of A and b, donate,
return_status, pad, dispatch, and the two *_shardmap_ctx forms (inside the
caller's shard_map on local shards; outside one on global arrays, JAXMg
1.4's form).

Layers, as in _ops.py:
  - per shard (`_*_local`): one device's shard of A in rows, inside a
    shard_map; calls the FFI (_calls) and pads / unpads.
  - cores (`_*_req(A, [b,] req)`): global arrays, traced: A moved to the
    engines' rows, a shard_map of the per-shard body, results moved back
    to A's (b's) layout; every output, status last. `_core_<op>(A, [b,] *,
    mesh, axes, T_A, pad, dispatch, ...)` are the same cores for already
    validated keyword arguments (A in rows over `axes`), used by the
    derivative rules (_autodiff_general.py).
  - public functions: normalise, run the core, pick the return form.

Conventions. The C engines read each row shard column-major, that is they
see E = A^T, and undo the transpose themselves after the meeting
(csrc/engines/host_general.c), so A's own shards go to the call, with no
collective before it and no conjugation here. One exception: cuSolverMg's
getrs has no transpose, so for that engine alone lu_solve hands over A^T's
row shards (one all_to_all, _lu_rows_for). lu_solve is square and is padded like
potrs (_shard.PadPlan: only for cuSolverMg, blockdiag(A, I), exact). The rectangular ops gather onto one device
on every engine today; T_A is validated but does not change their results.
Their A is padded at the end with zero rows when M is not a multiple of the
device count, and the engine is told A's true row count (`mrows`), so
padding never changes a result. Non-finite input gives status -1 and NaN
outputs without reaching an engine (as for potrs).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .rules import hermitian as ad
from .rules import general as adg
from .pipeline import ffi as _calls
from .pipeline import decide as _decide
from .engines import library as _library
from .pipeline import request as _request
from .pipeline import routes as _routes
from .pipeline import shard as _shard
from .pipeline import validate as v
from ._ops import (_nan_where, _pad_a, _pad_b, _setup, _status,
                   _two_forms, _unpad_status, _unpad_x, engine_b, engine_rows)

REP = P(None, None)

# cuSolverMg's getrf/getrs take tiles of at most 512 columns; every
# platform uses the same limit so that all of them solve the same padded
# problem (as for syevd's 1024).
LU_MAX_TILE = 512

# ---------------------------------------------------------------------------
# validation of the general ops' own arguments


def _matrix(A, what: str = "A") -> tuple[int, int, object]:
    """A 2-D matrix of a supported dtype, not empty. Returns (M, N, dtype)."""
    if not hasattr(A, "shape") or not hasattr(A, "dtype"):
        raise TypeError(f"jaxmg: {what} must be an array, got {type(A).__name__}")
    shape = tuple(A.shape)
    if len(shape) != 2:
        raise ValueError(f"jaxmg: {what} must be a 2-D matrix, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"jaxmg: {what} is empty (shape {shape})")
    dt = v.dtype(A.dtype, what)
    return shape[0], shape[1], dt


def _tall(A, op: str) -> tuple[int, int, object]:
    m, n, dt = _matrix(A)
    if m < n:
        raise ValueError(
            f"jaxmg: {op} needs at least as many rows as columns (M >= N), got A of shape {(m, n)}"
        )
    return m, n, dt


# ---------------------------------------------------------------------------
# per shard (inside shard_map)


# The engine whose getrs has no transpose (cuSolverMg, csrc/engines/cuda/
# mg_getrs.c): it must see A itself, so it takes A^T's row shards. Every
# other engine transposes the A^T it sees after the meeting.
_LU_TAKES_AT = _decide.c_code("mg")


def _lu_rows_for(solver, a_p, nparties, axes):
    """The row shards lu_solve's engine takes: A's own, or for cuSolverMg
    this device's rows of A^T (read column-major: A's columns), one
    all_to_all before the call, A's columns cut back where the device count
    does not divide N."""
    if solver != _LU_TAKES_AT:
        return a_p
    width = a_p.shape[1]
    return jax.lax.all_to_all(_shard.square_blocks(a_p, nparties), axes, split_axis=1,
                              concat_axis=0, tiled=True).T[:, :width]


def _lu_local(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """(x, status (1,)) for one row shard of a square A; b replicated."""
    axes, nparties, plan, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "lu_solve", dispatch, LU_MAX_TILE
    )
    n = a.shape[1]
    _, vector = v.rhs(b, n, dt)
    b2 = b[:, None] if vector else b
    a_p = _lu_rows_for(solver, _pad_a(a, nparties, plan, where[0]), nparties, axes)
    x, status = _calls.lu_solve(
        a_p, _pad_b(b2, nparties, plan), where, site=_shard.new_site(), tile=plan.tile,
        nparties=nparties, dispatch=solver, nonfinite=_calls.nonfinite(a, b2),
    )
    x = _nan_where(_calls.agreed_nonfinite(status), _unpad_x(x, nparties, plan))
    return (x[:, 0] if vector else x), _status(_unpad_status(status, plan))


@dataclasses.dataclass(frozen=True)
class _Shard:
    """One row shard of a rectangular A, checked (the tile is the whole
    shard: these ops gather, so there is no shard padding)."""

    axes: tuple
    nparties: int
    mloc: int
    n: int
    m: int          # A's rows; the shards' rows past them are padding
    where: object   # (rank, group)
    dt: object
    solver: int


def _rect(a, axis_name, T_A, op, dispatch, mrows) -> _Shard:
    axes = v.shard_axes(axis_name)
    _library.ensure_registered(_library.current_platform())
    _decide.check(dispatch)
    v.tile(T_A)
    sizes = _shard.axis_sizes()
    nparties = math.prod(sizes[ax] for ax in axes)
    mloc, n, dt = _matrix(a, "the local shard of A")
    m = mrows or nparties * mloc
    if op in ("least_squares", "qr") and m < n:
        raise ValueError(f"jaxmg: {op} needs M >= N, got {m} x {n}")
    where = _shard.where_am_i(axes)
    engine = _decide.for_shard(op, dt, max(m, n), nparties, axes, dispatch)
    return _Shard(axes, nparties, mloc, n, m, where, dt, _decide.c_code(engine))


def _kw(s: _Shard, op, *inputs):
    """The call's keywords; inputs: this shard's A (and b), whose non-finite
    entries the C meeting keeps from every engine (_calls.nonfinite)."""
    return dict(site=_shard.new_site(), tile=s.mloc, nparties=s.nparties, dispatch=s.solver,
                mrows=s.m, nonfinite=_calls.nonfinite(*inputs))


def _lstsq_local(a, b, T_A, axis_name=None, dispatch="auto", mrows=None):
    """(x, status (1,)) for one row shard of A (M x N); b (M,) or (M, K) replicated."""
    s = _rect(a, axis_name, T_A, "least_squares", dispatch, mrows)
    _, vector = v.rhs(b, s.nparties * s.mloc, s.dt)
    b2 = b[:, None] if vector else b
    x, status = _calls.least_squares(a, b2, s.where, **_kw(s, "least_squares", a, b2))
    x = _nan_where(_calls.agreed_nonfinite(status), x)
    return (x[:, 0] if vector else x), _status(status)


def _qr_local(a, T_A, axis_name=None, dispatch="auto", mrows=None):
    """(this shard's rows of Q, R replicated, status (1,))."""
    s = _rect(a, axis_name, T_A, "qr", dispatch, mrows)
    q, r, status = _calls.qr(a, s.where, **_kw(s, "qr", a))
    bad = _calls.agreed_nonfinite(status)
    return _nan_where(bad, q), _nan_where(bad, r), _status(status)


def _svd_sizes(m, n, compute_u, compute_vh, full_matrices):
    k = min(m, n)
    ucols = (m if full_matrices else k) if compute_u else 0
    vrows = (n if full_matrices else k) if compute_vh else 0
    return k, ucols, vrows


def _gesvd_local(a, T_A, compute_u=True, compute_vh=True, full_matrices=False, axis_name=None,
                 dispatch="auto", mrows=None):
    """(this shard's rows of U (ucols columns), s, Vh (vrows rows), status (1,))."""
    s = _rect(a, axis_name, T_A, "gesvd", dispatch, mrows)
    _, ucols, vrows = _svd_sizes(s.m, s.n, compute_u, compute_vh, full_matrices)
    u, sv, vh, status = _calls.gesvd(a, s.where, ucols=ucols, vrows=vrows, **_kw(s, "gesvd", a))
    bad = _calls.agreed_nonfinite(status)
    return _nan_where(bad, u), _nan_where(bad, sv), _nan_where(bad, vh), _status(status)


def _polar_local(a, T_A, compute_h=True, axis_name=None, dispatch="auto", mrows=None):
    """(this shard's rows of Up, H replicated ((0, N) without compute_h), status (1,))."""
    s = _rect(a, axis_name, T_A, "polar", dispatch, mrows)
    up, h, status = _calls.polar(a, s.where, compute_h=compute_h, **_kw(s, "polar", a))
    bad = _calls.agreed_nonfinite(status)
    return _nan_where(bad, up), _nan_where(bad, h), _status(status)


# ---------------------------------------------------------------------------
# the cores: global arrays, traced, every output (status last)


def _shard_map(body, req, in_specs, out_specs):
    return jax.shard_map(body, mesh=req.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


def _padded(rows, req):
    p = req.nparties
    return -(-rows // p) * p


def _tall_rows(A, req, m1):
    """A (M x N) padded with zero rows to m1, in the engines' rows."""
    return _request.to_rows(_shard.pad_end(A, req.mesh, m1), req)


def _rhs_rows(b, rows, rows1, req):
    b2 = b[:, None] if b.ndim == 1 else b
    return jnp.pad(_shard.constrain(b2, req.mesh, REP), ((0, rows1 - rows), (0, 0)))


def _cut_rows(X, m, m1, req):
    if m1 == m:
        return X
    return _shard.constrain(X, req.mesh, REP)[:m]


def _lu_req(A, b, req):
    """(x in b's shape and layout, status)."""
    if (r := _routes.route("lu_solve", req, A, b)) is not None:  # the cuSOLVERMp engine (issue 17)
        return r
    n = req.n
    body = functools.partial(_lu_local, T_A=req.tile, pad=req.pad, axis_name=req.axes,
                             dispatch=req.engine)
    x, status = _shard_map(body, req, (req.row_spec, REP), (REP, P(None)))(
        engine_rows(A, req, "lu_solve"), engine_b(b[:, None] if b.ndim == 1 else b, req, "lu_solve"))
    x = x[:n]
    return _request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req, b), status[0]


def _lstsq_req(A, b, req):
    """(x (N,) or (N, K), in b's layout where it fits, status)."""
    if (r := _routes.route("least_squares", req, A, b)) is not None:  # the cuSOLVERMp engine (issue 17)
        return r
    m, m1 = req.shape[0], _padded(req.shape[0], req)
    body = functools.partial(_lstsq_local, T_A=req.tile, axis_name=req.axes,
                             dispatch=req.engine, mrows=m)
    x, status = _shard_map(body, req, (req.row_spec, REP), (REP, P(None)))(
        _tall_rows(A, req, m1), _rhs_rows(b, m, m1, req))
    return _request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req, b), status[0]


def _qr_req(A, req):
    """(Q in A's layout, R replicated, status)."""
    if (r := _routes.route("qr", req, A)) is not None:  # the cuSOLVERMp engine (issue 17)
        return r
    m, m1 = req.shape[0], _padded(req.shape[0], req)
    body = functools.partial(_qr_local, T_A=req.tile, axis_name=req.axes, dispatch=req.engine,
                             mrows=m)
    q, r, status = _shard_map(body, req, (req.row_spec,), (req.row_spec, REP, P(None)))(
        _tall_rows(A, req, m1))
    return _request.to_a_layout(_cut_rows(q, m, m1, req), req), r, status[0]


def _gesvd_req(A, req):
    """(U in A's layout ((M, 0) when not computed), s, Vh replicated ((0, N)
    when not computed), status)."""
    if (r := _routes.route("gesvd", req, A)) is not None:  # the cuSOLVERMp engine (issue 17)
        return r
    m, m1 = req.shape[0], _padded(req.shape[0], req)
    body = functools.partial(_gesvd_local, T_A=req.tile, compute_u=req.opt("compute_u", True),
                             compute_vh=req.opt("compute_vh", True),
                             full_matrices=req.opt("full_matrices", False), axis_name=req.axes,
                             dispatch=req.engine, mrows=m)
    u, s, vh, status = _shard_map(body, req, (req.row_spec,),
                                  (req.row_spec, P(None), REP, P(None)))(_tall_rows(A, req, m1))
    return _request.to_a_layout(_cut_rows(u, m, m1, req), req), s, vh, status[0]


def _polar_req(A, req):
    """(Up in A's layout, H replicated ((0, N) without compute_h), status)."""
    if (r := _routes.route("polar", req, A)) is not None:  # the cuSOLVERMp engine (issue 17)
        return r
    m, m1 = req.shape[0], _padded(req.shape[0], req)
    body = functools.partial(_polar_local, T_A=req.tile, compute_h=req.opt("compute_h", True),
                             axis_name=req.axes, dispatch=req.engine, mrows=m)
    up, h, status = _shard_map(body, req, (req.row_spec,), (req.row_spec, REP, P(None)))(
        _tall_rows(A, req, m1))
    return _request.to_a_layout(_cut_rows(up, m, m1, req), req), h, status[0]


CORES = {"lu_solve": _lu_req, "least_squares": _lstsq_req, "qr": _qr_req, "gesvd": _gesvd_req,
         "polar": _polar_req}


# ---------------------------------------------------------------------------
# the differentiable forms (derivative rules of issue 16, _autodiff_general),
# one per op; module-level so that _request.run caches one jit per request


def _lu_diff(A, b, req):
    return ad.linear_solve(lambda A_, b_: _lu_req(A_, b_, req), ad.layout_of(req))(A, b)


def _lstsq_diff(A, b, req):
    return adg.least_squares(lambda A_, b_: _lstsq_req(A_, b_, req), ad.layout_of(req))(A, b)


def _qr_diff(A, req):
    return adg.qr(lambda A_: _qr_req(A_, req), ad.layout_of(req))(A)


def _with(req, **opts):
    return dataclasses.replace(req, opts=tuple({**dict(req.opts), **opts}.items()))


def _svd_rule(core, core_usv, lay, compute_u, compute_vh, full_matrices):
    """The differentiable gesvd for one form: core(A) -> (U, s, Vh,
    status) as asked, core_usv the reduced SVD with both factors (the
    one-sided and full_matrices forms differentiate through it; full
    matrices only where they are the reduced ones, see
    adg.check_full_matrices)."""
    if compute_u and compute_vh and not full_matrices:
        return adg.gesvd(core, lay)
    if compute_u or compute_vh:
        return adg.svd_parts(core, core_usv, lay, compute_u, compute_vh, full_matrices)
    values = adg.singular_values(lambda A: core(A)[1::2], core_usv, lay)

    def f(A):
        s, status = values(A)
        dt = A.dtype
        return jnp.zeros((A.shape[0], 0), dt), s, jnp.zeros((0, A.shape[1]), dt), status

    return f


def _gesvd_diff(A, req):
    cu, cv, full = req.opt("compute_u"), req.opt("compute_vh"), req.opt("full_matrices")
    usv = _with(req, compute_u=True, compute_vh=True, full_matrices=False)
    return _svd_rule(lambda A_: _gesvd_req(A_, req), lambda A_: _gesvd_req(A_, usv),
                     ad.layout_of(req), cu, cv, full)(A)


def _polar_diff(A, req):
    """Tall or wide A (the rule needs full rank); U, s, Vh for the
    derivative from one reduced gesvd."""
    usv = dataclasses.replace(req, op="gesvd", opts=(("compute_u", True), ("compute_vh", True),
                                                      ("full_matrices", False)))
    return adg.polar(lambda A_: _polar_req(A_, req), ad.layout_of(req),
                     lambda A_: _gesvd_req(A_, usv))(A)


def _validated_req(op, A, b, mesh, axes, T_A, pad, dispatch, opts=()):
    """A Request for arguments validated elsewhere: A (and its results) in
    rows over `axes`, b and x replicated."""
    axes = tuple(axes)
    engine = _decide.for_mesh(op, mesh, axes, dispatch, max(A.shape), A.dtype)
    return _request.Request(
        op=op, mesh=mesh, axes=axes, a_spec=P(axes if len(axes) > 1 else axes[0], None),
        shape=tuple(A.shape), dtype=str(jnp.dtype(A.dtype)), tile=T_A, pad=pad,
        dispatch=dispatch, engine=engine, b_spec=None if b is None else P(*((None,) * b.ndim)),
        b_vector=b is not None and b.ndim == 1, opts=tuple(opts))


def _core_lu_solve(A, b, *, mesh, axes, T_A, pad, dispatch):
    """A (N, N) in rows over axes, b (N, K): (x replicated, status)."""
    req = _validated_req("lu_solve", A, b, mesh, axes, T_A, pad, dispatch)
    return _request.run(_lu_req, req, A, b)


def _core_least_squares(A, b, *, mesh, axes, T_A, pad, dispatch):
    """A (M, N), M >= N, b (M, K): (x (N, K) replicated, status)."""
    req = _validated_req("least_squares", A, b, mesh, axes, T_A, pad, dispatch)
    return _request.run(_lstsq_req, req, A, b)


def _core_qr(A, *, mesh, axes, T_A, pad, dispatch):
    """A (M, N), M >= N: (Q (M, N) in rows, R (N, N) replicated, status)."""
    req = _validated_req("qr", A, None, mesh, axes, T_A, pad, dispatch)
    return _request.run(_qr_req, req, A)


def _core_gesvd(A, *, mesh, axes, T_A, pad, dispatch, compute_u, compute_vh, full_matrices):
    """A (M, N): (U, s, Vh, status); U (M, 0) and Vh (0, N) when not computed."""
    opts = (("compute_u", compute_u), ("compute_vh", compute_vh), ("full_matrices", full_matrices))
    req = _validated_req("gesvd", A, None, mesh, axes, T_A, pad, dispatch, opts)
    return _request.run(_gesvd_req, req, A)


def _core_polar(A, *, mesh, axes, T_A, pad, dispatch, compute_h):
    """A (M, N): (Up (M, N) in rows, H (N, N) or (0, N), status)."""
    req = _validated_req("polar", A, None, mesh, axes, T_A, pad, dispatch, (("compute_h", compute_h),))
    return _request.run(_polar_req, req, A)


# ---------------------------------------------------------------------------
# mesh level


_TALL = ("least_squares", "qr")


def _normalise(op, A, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate, opts=()):
    square = op == "lu_solve"
    if op in _TALL:
        _tall(A, op)
    else:
        _matrix(A)
    return _request.normalise(op, A, b, T_A=T_A, mesh=mesh, specs=in_specs,
                              matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                              square=square, opts=opts)


def _with_status(out: tuple, status, want: bool):
    out = out + ((status,) if want else ())
    return out if len(out) > 1 else out[0]


def _svd_out(u, s, vh, compute_u, compute_vh):
    return ((u,) if compute_u else ()) + (s,) + ((vh,) if compute_vh else ())


def _svd_opts(compute_u, compute_vh, full_matrices):
    return (("compute_u", v.flag(compute_u, "compute_u")),
            ("compute_vh", v.flag(compute_vh, "compute_vh")),
            ("full_matrices", v.flag(full_matrices, "full_matrices")))


def lu_solve(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
             *, matrix_specs=None, donate=False):
    """Solves A x = b for a general square A (LU with partial pivoting).

    A (N, N) and b ((N,) or (N, K)) in any layout, mesh and specs in any
    form of potrs (or None: inferred). Returns x in b's shape and layout;
    with return_status (x, status): 0, k > 0 when U(k, k) is exactly zero
    (A singular; x is NaN), -1 for non-finite input. T_A, pad and dispatch
    as for potrs ("multi": cuSolverMg getrf/getrs on every GPU of the
    axis); the tile is capped at 512 (cuSolverMg's limit) on every
    platform."""
    want = v.flag(return_status, "return_status")
    req = _normalise("lu_solve", A, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate)
    x, status = _request.run(_lu_diff, req, A, b)
    return _with_status((x,), status, want)


def least_squares(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True,
                  dispatch="auto", *, matrix_specs=None, donate=False):
    """The least-squares solution of A x = b: min ||A x - b||_2 for A
    (M, N) with M >= N and full column rank.

    b (M,) or (M, K). Returns x, (N,) or (N, K), in b's layout where it
    fits (else replicated); with return_status (x, status): 0, k > 0 when
    R(k, k) is exactly zero (A has not full column rank; x is NaN), -1 for
    non-finite input. Any M and N: A is padded internally. T_A is
    validated; the op gathers onto one device on every engine today."""
    want = v.flag(return_status, "return_status")
    req = _normalise("least_squares", A, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch,
                     donate)
    x, status = _request.run(_lstsq_diff, req, A, b)
    return _with_status((x,), status, want)


def qr(A, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto", *,
       matrix_specs=None, donate=False):
    """Reduced QR A = Q R of A (M, N), M >= N: Q (M, N) with orthonormal
    columns, in A's layout; R (N, N) upper triangular, replicated.
    Returns (Q, R), or (Q, R, status) with return_status (0; -1 for
    non-finite input)."""
    want = v.flag(return_status, "return_status")
    req = _normalise("qr", A, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate)
    q, r, status = _request.run(_qr_diff, req, A)
    return _with_status((q, r), status, want)


def gesvd(A, T_A, mesh=None, in_specs=None, compute_u=True, compute_vh=True,
          full_matrices=False, return_status=False, pad=True, dispatch="auto", *,
          matrix_specs=None, donate=False):
    """Singular value decomposition A = U diag(s) Vh of A (M, N), any shape.

    s: min(M, N) singular values, descending, real dtype, replicated. U
    (M, K) in A's layout and Vh (K, N) replicated, K = min(M, N); with
    full_matrices U is (M, M) and Vh (N, N). Returns (U, s, Vh), (U, s)
    without compute_vh, (s, Vh) without compute_u, s without either; status
    appended with return_status (0; > 0 if the solver did not converge, -1
    for non-finite input; the outputs are then NaN)."""
    want = v.flag(return_status, "return_status")
    opts = _svd_opts(compute_u, compute_vh, full_matrices)
    req = _normalise("gesvd", A, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate,
                     opts)
    u, s, vh, status = _request.run(_gesvd_diff, req, A)
    return _with_status(_svd_out(u, s, vh, opts[0][1], opts[1][1]), status, want)


def polar(A, T_A, mesh=None, in_specs=None, compute_h=True, return_status=False, pad=True,
          dispatch="auto", *, matrix_specs=None, donate=False):
    """Polar decomposition A = Up H of A (M, N): Up (M, N) with orthonormal
    columns (rows if M < N), in A's layout; H = (A^H A)^(1/2) (N, N),
    Hermitian positive semidefinite, replicated (computed from the SVD).
    Returns (Up, H), or Up without compute_h; status appended with
    return_status (0; > 0 if the SVD did not converge; -1 for non-finite
    input)."""
    want = v.flag(return_status, "return_status")
    ch = v.flag(compute_h, "compute_h")
    req = _normalise("polar", A, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate,
                     (("compute_h", ch),))
    up, h, status = _request.run(_polar_diff, req, A)
    return _with_status((up, h) if ch else (up,), status, want)


# ---------------------------------------------------------------------------
# *_shardmap_ctx: inside the caller's shard_map (local shards), or outside
# one on global arrays (JAXMg 1.4's form: no shard_map around, a_work first)


def _lu_ctx_local(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """a: this device's row shard of A, (N / devices, N); b (N,) or (N, K),
    replicated. Returns (x, status): x replicated like b, status (1,) as
    for lu_solve. Differentiable in a and b (issue 16)."""
    pad = v.flag(pad, "pad")
    # checked before the rule's products touch a and b (they would fail
    # first, with JAX's shape errors)
    dt = _setup(a, axis_name, T_A, pad, "lu_solve", dispatch, LU_MAX_TILE)[4]
    v.rhs(b, a.shape[1], dt)
    return ad.linear_solve(lambda a_, b_: _lu_local(a_, b_, T_A, pad, axis_name, dispatch),
                           _local_layout(axis_name))(a, b)


def _local_layout(axis_name):
    """The derivative rules' Layout inside the caller's shard_map."""
    return ad.Layout(v.shard_axes(axis_name))


def _lu_ctx_global(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
                   dispatch="auto", donate=False):
    """A and b global: returns (a_work, x, status); a_work is A in the
    engines' rows, x in b's layout, status a scalar."""
    req = _normalise("lu_solve", a, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate)
    return _request.run(_lu_ctx_core, req, a, b)


def _lu_ctx_core(A, b, req):
    x, status = _lu_diff(A, b, req)
    return _request.to_rows(A, req), x, status


def _lstsq_ctx_local(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """a: this device's row shard of A (M / devices, N), M >= N; b (M,) or
    (M, K) replicated. Returns (x, status): x (N,) or (N, K) replicated,
    status (1,) as for least_squares. pad is unused: any M works.
    Differentiable in a and b."""
    v.flag(pad, "pad")
    return adg.least_squares(lambda a_, b_: _lstsq_local(a_, b_, T_A, axis_name, dispatch),
                             _local_layout(axis_name))(a, b)


def _lstsq_ctx_global(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
                      dispatch="auto", donate=False):
    """A and b global: returns (a_work, b_work, x, status); b_work is b
    with x in its first N rows, as JAXMg 1.4.1's (the rows below are b's
    own, not LAPACK's residual components)."""
    req = _normalise("least_squares", a, b, T_A, mesh, in_specs, matrix_specs, pad, dispatch,
                     donate)
    return _request.run(_lstsq_ctx_core, req, a, b)


def _lstsq_ctx_core(A, b, req):
    x, status = _lstsq_diff(A, b, req)
    return _request.to_rows(A, req), jnp.asarray(b).at[: x.shape[0]].set(x), x, status


def _qr_ctx_local(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Returns (this device's rows of Q, R (N, N) replicated, status (1,)).
    Differentiable."""
    v.flag(pad, "pad")
    return adg.qr(lambda a_: _qr_local(a_, T_A, axis_name, dispatch), _local_layout(axis_name))(a)


def _qr_ctx_global(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
                   dispatch="auto", donate=False):
    """A global: returns (Q in A's layout, R, status)."""
    req = _normalise("qr", a, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate)
    return _request.run(_qr_diff, req, a)


def _gesvd_ctx_local(a, T_A, compute_u=True, compute_vh=True, full_matrices=False, pad=True,
                     axis_name=None, dispatch="auto"):
    """Returns (U rows of this device, s, Vh, status (1,)), U and Vh left
    out when not computed; shapes as for gesvd. Differentiable as gesvd."""
    opts = dict(_svd_opts(compute_u, compute_vh, full_matrices))
    cu, cv, full = opts["compute_u"], opts["compute_vh"], opts["full_matrices"]
    v.flag(pad, "pad")

    def core(cu, cv, full):
        return lambda a_: _gesvd_local(a_, T_A, cu, cv, full, axis_name, dispatch)

    u, s, vh, status = _svd_rule(core(cu, cv, full), core(True, True, False),
                                 _local_layout(axis_name), cu, cv, full)(a)
    return _svd_out(u, s, vh, cu, cv) + (status,)


def _gesvd_ctx_global(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, compute_u=True,
                      compute_vh=True, full_matrices=False, pad=True, dispatch="auto",
                      donate=False):
    """A global: returns (a_work, U, s, Vh, status), less what is not computed."""
    opts = _svd_opts(compute_u, compute_vh, full_matrices)
    req = _normalise("gesvd", a, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate,
                     opts)
    a_work, u, s, vh, status = _request.run(_gesvd_ctx_core, req, a)
    return (a_work,) + _svd_out(u, s, vh, opts[0][1], opts[1][1]) + (status,)


def _gesvd_ctx_core(A, req):
    return (_request.to_rows(A, req),) + _gesvd_diff(A, req)


def _polar_ctx_local(a, T_A, compute_h=True, pad=True, axis_name=None, dispatch="auto"):
    """Returns (Up rows of this device, H, status (1,)), or (Up rows,
    status) without compute_h. Differentiable (A of full rank)."""
    ch = v.flag(compute_h, "compute_h")
    v.flag(pad, "pad")
    up, h, status = adg.polar(
        lambda a_: _polar_local(a_, T_A, ch, axis_name, dispatch), _local_layout(axis_name),
        lambda a_: _gesvd_local(a_, T_A, True, True, False, axis_name, dispatch))(a)
    return (up, h, status) if ch else (up, status)


def _polar_ctx_global(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, compute_h=True,
                      pad=True, dispatch="auto", donate=False):
    """A global: returns (Up, H, status), or (Up, status): no a_work, as
    JAXMg 1.4.1's (and as qr's)."""
    ch = v.flag(compute_h, "compute_h")
    req = _normalise("polar", a, None, T_A, mesh, in_specs, matrix_specs, pad, dispatch, donate,
                     (("compute_h", ch),))
    up, h, status = _request.run(_polar_diff, req, a)
    return (up, h, status) if ch else (up, status)


lu_solve_shardmap_ctx = _two_forms(_lu_ctx_local, _lu_ctx_global, "lu_solve_shardmap_ctx")
least_squares_shardmap_ctx = _two_forms(_lstsq_ctx_local, _lstsq_ctx_global,
                                        "least_squares_shardmap_ctx")
qr_shardmap_ctx = _two_forms(_qr_ctx_local, _qr_ctx_global, "qr_shardmap_ctx")
gesvd_shardmap_ctx = _two_forms(_gesvd_ctx_local, _gesvd_ctx_global, "gesvd_shardmap_ctx")
polar_shardmap_ctx = _two_forms(_polar_ctx_local, _polar_ctx_global, "polar_shardmap_ctx")
