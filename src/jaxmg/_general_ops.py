"""The general operations of JAXMg 1.4: lu_solve, least_squares, qr, gesvd
and polar. Per-shard bodies (the *_shardmap_ctx functions, for use inside
the caller's shard_map) and mesh-level functions in the tutorial style
(A, [b,] T_A, mesh, in_specs, return_status=False, pad=True,
dispatch="auto", and the op's own options).

Each mesh-level function is a thin public wrapper (validation and return
forms) over a core (`_core_<op>`) that takes already-validated arguments
(mesh, solve axes, T_A, pad, dispatch, the op's options) and returns every
output, status last, so that other call forms can share it.

Conventions. The C engines read each row shard column-major, that is they
see E = A^T. lu_solve hands them A^T's row shards instead (one all_to_all),
so that they factor A itself: cuSolverMg's getrs has no transpose. The
other ops undo the transpose in the engine (csrc/engines/host_general.c),
so no conjugation happens here. lu_solve is square and is padded like
potrs (blockdiag(A, I), exact). The rectangular ops gather onto
one device on every engine; T_A is validated but does not change their
results. Their A is padded at the end with zero rows when M is not a
multiple of the device count, and the engine is told A's true row count
(`mrows`), so padding never changes a result.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from . import _calls, _dispatch, _library, _multiproc, _shard
from . import _validate as v
from ._ops import _call, _pad_global, _row_spec, _setup, _status

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


def _rhs(b, m: int, a_dtype) -> tuple[int, bool]:
    """b (M,) or (M, K) of A's dtype, for an A of M rows."""
    return v.rhs(b, m, a_dtype)


def _dispatch_for(op: str, dispatch: str) -> str:
    _dispatch.check(dispatch)
    if dispatch == "multi" and op not in _dispatch.MULTI_OPS:
        raise ValueError(
            f"jaxmg: {op} has no multi-GPU solver yet; use dispatch='auto' or 'single'"
        )
    return dispatch


def _mesh_axes(mesh, in_specs, nspecs):
    mesh = v.mesh(mesh)
    specs = v.in_specs(in_specs, mesh, nspecs)
    axes = v.matrix_spec(specs[0], mesh)
    if nspecs == 2:
        v.replicated_spec(specs[1], "in_specs[1] (the spec of b)")
    _library.ensure_registered(_library.platform_of(mesh.devices.flat))
    _multiproc.check_mesh(mesh, axes)
    return mesh, axes


# ---------------------------------------------------------------------------
# per shard (inside shard_map)


def _setup_rect(a, axis_name, T_A, op, dispatch):
    """_ops._setup for a row shard of a rectangular A (mloc, N): the tile is
    the whole shard (these ops gather), so there is no shard padding."""
    axes = v.shard_axes(axis_name)
    platform = _library.current_platform()
    _library.ensure_registered(platform)
    _dispatch_for(op, dispatch)
    v.tile(T_A)
    sizes = _shard.axis_sizes()
    nparties = math.prod(sizes[ax] for ax in axes)
    _multiproc.check_traced(axes)
    mloc, n, dt = _matrix(a, "the local shard of A")
    where = _shard.where_am_i(axes)
    solver = _dispatch.resolve(dispatch, op, max(nparties * mloc, n), nparties, dt, platform)
    return axes, nparties, mloc, n, where, dt, solver


def _site(op):
    return _shard.new_site(op)


def lu_solve_shardmap_ctx(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """A x = b for a general square A (LU with partial pivoting) from inside
    the caller's shard_map. a: this device's row shard (N / devices, N); b:
    (N,) or (N, K), replicated. Returns (x, status): x replicated like b,
    status an int32 of shape (1,): 0, or k > 0 when U(k, k) is exactly zero
    (A singular; x is NaN)."""
    axes, nparties, nloc, nloc_p, tile, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "lu_solve", dispatch, LU_MAX_TILE
    )
    _dispatch_for("lu_solve", dispatch)
    n = a.shape[1]
    _, vector = v.rhs(b, n, dt)
    b2 = b[:, None] if vector else b
    a_p = _shard.pad_shard(a, nparties, where[0], nloc_p, 1)
    # This device's rows of A^T (read column-major by the engine: A's own
    # columns, as getrf/getrs without transpose want them).
    a_t = jax.lax.all_to_all(a_p, axes, split_axis=1, concat_axis=0, tiled=True).T
    b_p = _shard.pad_rows(b2, nparties, nloc, nloc_p)
    x, status = _calls.lu_solve(
        a_t, b_p, where, site=_site("lu_solve"), tile=tile, nparties=nparties, dispatch=solver
    )
    x = _shard.unpad_rows(x, nparties, nloc, nloc_p)
    return (x[:, 0] if vector else x), _status(_shard.unpad_status(status, nloc, nloc_p))


def _lstsq_shard(a, b, T_A, axis_name, dispatch, mrows):
    axes, nparties, mloc, n, where, dt, solver = _setup_rect(a, axis_name, T_A, "least_squares",
                                                             dispatch)
    m_all = nparties * mloc
    if m_all < n:
        raise ValueError(f"jaxmg: least_squares needs M >= N, got {m_all} x {n}")
    _, vector = _rhs(b, m_all, dt)
    b2 = b[:, None] if vector else b
    x, status = _calls.least_squares(
        a, b2, where, site=_site("least_squares"), tile=mloc, nparties=nparties, dispatch=solver,
        mrows=mrows or m_all,
    )
    return (x[:, 0] if vector else x), _status(status)


def least_squares_shardmap_ctx(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """min ||A x - b|| for A (M x N, M >= N, full column rank) from inside
    the caller's shard_map: a is this device's row shard (M / devices, N), b
    (M,) or (M, K) replicated. Returns (x, status): x (N,) or (N, K)
    replicated; status 0, or k > 0 when R(k, k) is exactly zero (A does not
    have full rank; x is NaN). T_A is accepted for symmetry (this op
    gathers) and pad is unused: any M works."""
    v.flag(pad, "pad")
    return _lstsq_shard(a, b, T_A, axis_name, dispatch, None)


def _qr_shard(a, T_A, axis_name, dispatch, mrows):
    axes, nparties, mloc, n, where, dt, solver = _setup_rect(a, axis_name, T_A, "qr", dispatch)
    if nparties * mloc < n:
        raise ValueError(f"jaxmg: qr needs M >= N, got {nparties * mloc} x {n}")
    q, r, status = _calls.qr(
        a, where, site=_site("qr"), tile=mloc, nparties=nparties, dispatch=solver,
        mrows=mrows or nparties * mloc,
    )
    return q, r, _status(status)


def qr_shardmap_ctx(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Reduced QR of A (M x N, M >= N) from inside the caller's shard_map.
    Returns (this device's rows of Q (M x N, orthonormal columns), R (N x N,
    upper triangular, replicated), status)."""
    v.flag(pad, "pad")
    return _qr_shard(a, T_A, axis_name, dispatch, None)


def _svd_sizes(m, n, compute_u, compute_vh, full_matrices):
    k = min(m, n)
    ucols = (m if full_matrices else k) if compute_u else 0
    vrows = (n if full_matrices else k) if compute_vh else 0
    return k, ucols, vrows


def _gesvd_shard(a, T_A, axis_name, dispatch, compute_u, compute_vh, full_matrices, mrows):
    axes, nparties, mloc, n, where, dt, solver = _setup_rect(a, axis_name, T_A, "gesvd", dispatch)
    m = mrows or nparties * mloc
    k, ucols, vrows = _svd_sizes(m, n, compute_u, compute_vh, full_matrices)
    u, s, vh, status = _calls.gesvd(
        a, where, site=_site("gesvd"), tile=mloc, nparties=nparties, dispatch=solver,
        ucols=ucols, vrows=vrows, mrows=m,
    )
    return u, s, vh, _status(status)


def _svd_out(u, s, vh, status, compute_u, compute_vh, with_status):
    out = ((u,) if compute_u else ()) + (s,) + ((vh,) if compute_vh else ())
    if with_status:
        out = out + (status,)
    return out if len(out) > 1 else out[0]


def gesvd_shardmap_ctx(a, T_A, compute_u=True, compute_vh=True, full_matrices=False, pad=True,
                       axis_name=None, dispatch="auto"):
    """SVD A = U diag(s) Vh of A (M x N, any shape) from inside the caller's
    shard_map. Returns (U, s, Vh, status) with U this device's rows (M x K
    for K = min(M, N), or M x M with full_matrices), s descending (real
    dtype, replicated), Vh (K x N, or N x N) replicated; U and Vh are left
    out when not computed; status (1,) last: 0, or > 0 if the solver did
    not converge."""
    cu, cv = v.flag(compute_u, "compute_u"), v.flag(compute_vh, "compute_vh")
    fm = v.flag(full_matrices, "full_matrices")
    v.flag(pad, "pad")
    u, s, vh, status = _gesvd_shard(a, T_A, axis_name, dispatch, cu, cv, fm, None)
    return _svd_out(u, s, vh, status, cu, cv, True)


def _polar_shard(a, T_A, axis_name, dispatch, compute_h, mrows):
    axes, nparties, mloc, n, where, dt, solver = _setup_rect(a, axis_name, T_A, "polar", dispatch)
    up, h, status = _calls.polar(
        a, where, site=_site("polar"), tile=mloc, nparties=nparties, dispatch=solver,
        compute_h=compute_h, mrows=mrows or nparties * mloc,
    )
    return up, h, _status(status)


def polar_shardmap_ctx(a, T_A, compute_h=True, pad=True, axis_name=None, dispatch="auto"):
    """Polar decomposition A = Up H (Up with orthonormal columns, or rows if
    M < N; H = (A^H A)^(1/2), Hermitian positive semidefinite, N x N) from
    inside the caller's shard_map. Returns (this device's rows of Up, H,
    status), or (Up rows, status) without compute_h."""
    ch = v.flag(compute_h, "compute_h")
    v.flag(pad, "pad")
    up, h, status = _polar_shard(a, T_A, axis_name, dispatch, ch, None)
    return (up, h, status) if ch else (up, status)


# ---------------------------------------------------------------------------
# mesh level: cores


def _nparties(mesh, axes):
    return math.prod(mesh.shape[ax] for ax in axes)


def _pad_rows_end(A, m, m1):
    """Zero rows at A's end up to m1 rows (the engine is told A has m)."""
    return A if m1 == m else jnp.pad(A, ((0, m1 - m), (0, 0)))


def _cut_rows(x, m, m1, mesh):
    """The first m rows of a row-sharded result of m1 rows: replicated when
    JAX cannot shard m rows evenly (as _ops._unpad_global)."""
    if m1 == m:
        return x
    return _shard.constrain(x, mesh, P(None, None))[:m]


def _lu_impl(A, b, *, T_A, mesh, axes, pad, n, dispatch):
    nparties = _nparties(mesh, axes)
    n1 = -(-n // nparties) * nparties
    A = _shard.constrain(_pad_global(A, n, n1, 1), mesh, _row_spec(axes))
    b = _shard.constrain(jnp.pad(b, ((0, n1 - n), (0, 0))), mesh, P(None, None))
    body = functools.partial(
        lu_solve_shardmap_ctx, T_A=T_A, pad=pad, axis_name=axes, dispatch=dispatch
    )
    x, status = jax.shard_map(
        body, mesh=mesh, in_specs=(_row_spec(axes), P(None, None)),
        out_specs=(P(None, None), P(None)), check_vma=False,
    )(A, b)
    return x[:n], status[0]


def _core_lu_solve(A, b, *, mesh, axes, T_A, pad, dispatch):
    """A (N, N), b (N, K), validated. Returns (x (N, K), status)."""
    return _call(_lu_impl, A, b, T_A=T_A, mesh=mesh, axes=axes, pad=pad, n=A.shape[0],
                 dispatch=dispatch)


def _lstsq_impl(A, b, *, T_A, mesh, axes, m, dispatch):
    nparties = _nparties(mesh, axes)
    m1 = -(-m // nparties) * nparties
    A = _shard.constrain(_pad_rows_end(A, m, m1), mesh, _row_spec(axes))
    b = _shard.constrain(jnp.pad(b, ((0, m1 - m), (0, 0))), mesh, P(None, None))
    body = functools.partial(_lstsq_shard, T_A=T_A, axis_name=axes, dispatch=dispatch, mrows=m)
    return jax.shard_map(
        lambda a_, b_: body(a_, b_), mesh=mesh, in_specs=(_row_spec(axes), P(None, None)),
        out_specs=(P(None, None), P(None)), check_vma=False,
    )(A, b)


def _core_least_squares(A, b, *, mesh, axes, T_A, pad, dispatch):
    """A (M, N) with M >= N, b (M, K), validated. Returns (x (N, K), status)."""
    x, status = _call(_lstsq_impl, A, b, T_A=T_A, mesh=mesh, axes=axes, m=A.shape[0],
                      dispatch=dispatch)
    return x, status[0]


def _qr_impl(A, *, T_A, mesh, axes, m, dispatch):
    nparties = _nparties(mesh, axes)
    m1 = -(-m // nparties) * nparties
    A = _shard.constrain(_pad_rows_end(A, m, m1), mesh, _row_spec(axes))
    body = functools.partial(_qr_shard, T_A=T_A, axis_name=axes, dispatch=dispatch, mrows=m)
    q, r, status = jax.shard_map(
        lambda a_: body(a_), mesh=mesh, in_specs=(_row_spec(axes),),
        out_specs=(_row_spec(axes), P(None, None), P(None)), check_vma=False,
    )(A)
    return _cut_rows(q, m, m1, mesh), r, status[0]


def _core_qr(A, *, mesh, axes, T_A, pad, dispatch):
    """A (M, N) with M >= N, validated. Returns (Q (M, N) sharded like A,
    R (N, N) replicated, status)."""
    return _call(_qr_impl, A, T_A=T_A, mesh=mesh, axes=axes, m=A.shape[0], dispatch=dispatch)


def _gesvd_impl(A, *, T_A, mesh, axes, m, dispatch, compute_u, compute_vh, full_matrices):
    nparties = _nparties(mesh, axes)
    m1 = -(-m // nparties) * nparties
    A = _shard.constrain(_pad_rows_end(A, m, m1), mesh, _row_spec(axes))
    body = functools.partial(
        _gesvd_shard, T_A=T_A, axis_name=axes, dispatch=dispatch, compute_u=compute_u,
        compute_vh=compute_vh, full_matrices=full_matrices, mrows=m,
    )
    u, s, vh, status = jax.shard_map(
        lambda a_: body(a_), mesh=mesh, in_specs=(_row_spec(axes),),
        out_specs=(_row_spec(axes), P(None), P(None, None), P(None)), check_vma=False,
    )(A)
    return _cut_rows(u, m, m1, mesh), s, vh, status[0]


def _core_gesvd(A, *, mesh, axes, T_A, pad, dispatch, compute_u, compute_vh, full_matrices):
    """A (M, N), validated. Returns (U, s, Vh, status); U is (M, 0) and Vh
    (0, N) when not computed."""
    return _call(_gesvd_impl, A, T_A=T_A, mesh=mesh, axes=axes, m=A.shape[0], dispatch=dispatch,
                 compute_u=compute_u, compute_vh=compute_vh, full_matrices=full_matrices)


def _polar_impl(A, *, T_A, mesh, axes, m, dispatch, compute_h):
    nparties = _nparties(mesh, axes)
    m1 = -(-m // nparties) * nparties
    A = _shard.constrain(_pad_rows_end(A, m, m1), mesh, _row_spec(axes))
    body = functools.partial(_polar_shard, T_A=T_A, axis_name=axes, dispatch=dispatch,
                             compute_h=compute_h, mrows=m)
    up, h, status = jax.shard_map(
        lambda a_: body(a_), mesh=mesh, in_specs=(_row_spec(axes),),
        out_specs=(_row_spec(axes), P(None, None), P(None)), check_vma=False,
    )(A)
    return _cut_rows(up, m, m1, mesh), h, status[0]


def _core_polar(A, *, mesh, axes, T_A, pad, dispatch, compute_h):
    """A (M, N), validated. Returns (Up (M, N) sharded like A, H (N, N) or
    (0, N), status)."""
    return _call(_polar_impl, A, T_A=T_A, mesh=mesh, axes=axes, m=A.shape[0], dispatch=dispatch,
                 compute_h=compute_h)


# ---------------------------------------------------------------------------
# mesh level: the public functions


def _with_status(out: tuple, status, want: bool):
    out = out + ((status,) if want else ())
    return out if len(out) > 1 else out[0]


def lu_solve(A, b, T_A, mesh, in_specs, return_status=False, pad=True, dispatch="auto"):
    """Solves A x = b for a general square A (LU with partial pivoting).

    A (N, N) row-sharded as in_specs[0] = P(axis, None); b (N,) or (N, K)
    replicated (in_specs[1] = P(None, None)). Returns x replicated, of b's
    shape; with return_status (x, status): 0, or k > 0 when U(k, k) is
    exactly zero (A singular; x is NaN). T_A, pad and dispatch as for
    potrs ("multi": cuSolverMg getrf/getrs on every GPU of the axis); the
    tile is capped at 512 (cuSolverMg's limit) on every platform."""
    mesh, axes = _mesh_axes(mesh, in_specs, 2)
    n, dt = v.square(A)
    _, vector = v.rhs(b, n, dt)
    T_A = v.tile(T_A)
    pad = v.flag(pad, "pad")
    want = v.flag(return_status, "return_status")
    dispatch = _dispatch_for("lu_solve", dispatch)
    b2 = v.as_array(b)[:, None] if vector else v.as_array(b)
    x, status = _core_lu_solve(v.as_array(A), b2, mesh=mesh, axes=axes, T_A=T_A, pad=pad,
                               dispatch=dispatch)
    return _with_status((x[:, 0] if vector else x,), status, want)


def least_squares(A, b, T_A, mesh, in_specs, return_status=False, pad=True, dispatch="auto"):
    """The least-squares solution of A x = b: min ||A x - b||_2 for A
    (M, N) with M >= N and full column rank.

    A row-sharded as in_specs[0] = P(axis, None); b (M,) or (M, K)
    replicated. Returns x, (N,) or (N, K), replicated; with return_status
    (x, status): 0, or k > 0 when R(k, k) is exactly zero (A has not full
    column rank; x is NaN). Any M and N: A is padded internally. T_A is
    validated; the op gathers onto one device on every engine today."""
    mesh, axes = _mesh_axes(mesh, in_specs, 2)
    m, n, dt = _tall(A, "least_squares")
    _, vector = _rhs(b, m, dt)
    T_A = v.tile(T_A)
    pad = v.flag(pad, "pad")
    want = v.flag(return_status, "return_status")
    dispatch = _dispatch_for("least_squares", dispatch)
    b2 = v.as_array(b)[:, None] if vector else v.as_array(b)
    x, status = _core_least_squares(v.as_array(A), b2, mesh=mesh, axes=axes, T_A=T_A, pad=pad,
                                    dispatch=dispatch)
    return _with_status((x[:, 0] if vector else x,), status, want)


def qr(A, T_A, mesh, in_specs, return_status=False, pad=True, dispatch="auto"):
    """Reduced QR A = Q R of A (M, N), M >= N: Q (M, N) with orthonormal
    columns, sharded like A; R (N, N) upper triangular, replicated.
    Returns (Q, R), or (Q, R, status) with return_status (0 on success)."""
    mesh, axes = _mesh_axes(mesh, in_specs, 1)
    _tall(A, "qr")
    T_A = v.tile(T_A)
    pad = v.flag(pad, "pad")
    want = v.flag(return_status, "return_status")
    dispatch = _dispatch_for("qr", dispatch)
    q, r, status = _core_qr(v.as_array(A), mesh=mesh, axes=axes, T_A=T_A, pad=pad,
                            dispatch=dispatch)
    return _with_status((q, r), status, want)


def gesvd(A, T_A, mesh, in_specs, compute_u=True, compute_vh=True, full_matrices=False,
          return_status=False, pad=True, dispatch="auto"):
    """Singular value decomposition A = U diag(s) Vh of A (M, N), any shape.

    s: min(M, N) singular values, descending, real dtype, replicated. U
    (M, K) sharded like A and Vh (K, N) replicated, K = min(M, N); with
    full_matrices U is (M, M) and Vh (N, N). Returns (U, s, Vh), (U, s)
    without compute_vh, (s, Vh) without compute_u, s without either; status
    appended with return_status (0, or > 0 if the solver did not
    converge; the outputs are then NaN)."""
    mesh, axes = _mesh_axes(mesh, in_specs, 1)
    _matrix(A)
    T_A = v.tile(T_A)
    pad = v.flag(pad, "pad")
    cu, cv = v.flag(compute_u, "compute_u"), v.flag(compute_vh, "compute_vh")
    fm = v.flag(full_matrices, "full_matrices")
    want = v.flag(return_status, "return_status")
    dispatch = _dispatch_for("gesvd", dispatch)
    u, s, vh, status = _core_gesvd(v.as_array(A), mesh=mesh, axes=axes, T_A=T_A, pad=pad,
                                   dispatch=dispatch, compute_u=cu, compute_vh=cv,
                                   full_matrices=fm)
    return _svd_out(u, s, vh, status, cu, cv, want)


def polar(A, T_A, mesh, in_specs, compute_h=True, return_status=False, pad=True,
          dispatch="auto"):
    """Polar decomposition A = Up H of A (M, N): Up (M, N) with orthonormal
    columns (rows if M < N), sharded like A; H = (A^H A)^(1/2) (N, N),
    Hermitian positive semidefinite, replicated (computed from the SVD).
    Returns (Up, H), or Up without compute_h; status appended with
    return_status (0, or > 0 if the SVD did not converge)."""
    mesh, axes = _mesh_axes(mesh, in_specs, 1)
    _matrix(A)
    T_A = v.tile(T_A)
    pad = v.flag(pad, "pad")
    ch = v.flag(compute_h, "compute_h")
    want = v.flag(return_status, "return_status")
    dispatch = _dispatch_for("polar", dispatch)
    up, h, status = _core_polar(v.as_array(A), mesh=mesh, axes=axes, T_A=T_A, pad=pad,
                                dispatch=dispatch, compute_h=ch)
    return _with_status((up, h) if ch else (up,), status, want)
