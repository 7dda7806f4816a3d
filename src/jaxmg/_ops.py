"""The three operations: per-shard bodies (the *_shardmap_ctx functions) and
the mesh-level wrappers that validate, pad, shard_map and unpad.

Conventions that hold throughout. The C engines read each row shard as
column-major, so they see M = A^T = conj(A) for symmetric/Hermitian A:
  - potrs solves conj(A) y = conj(b), so x = conj(y);
  - potri's M^-1 = (A^-1)^T, which read row-major is A^-1 itself;
  - syevd's eigenvectors of M are conj of A's, and come back as rows
    (eigenvector j in row j), so one all_to_all turns them into columns.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from . import _calls, _dispatch, _library, _multiproc, _shard
from . import _validate as v

# cuSolverMg's syevd takes tiles of at most 1024 columns; every platform
# uses the same limit so that all of them solve the same padded problem.
SYEVD_MAX_TILE = 1024

# ---------------------------------------------------------------------------
# per shard (inside shard_map)


def _status(status):
    """Per shard, the status is an int32 array of shape (1,), so that it can
    leave a shard_map as P(None) (as in the tutorial)."""
    return status.reshape(1)


def _setup(a, axis_name, T_A, pad, op, dispatch, max_tile=None):
    """Checks one shard's call; returns the solve axes, their device count,
    the shard height before and after padding, the tile, (rank, group) and
    the dtype, and the solver to use (_dispatch)."""
    axes = v.shard_axes(axis_name)
    platform = _library.current_platform()
    _library.ensure_registered(platform)
    _dispatch.check(dispatch)
    sizes = _shard.axis_sizes()
    nparties = math.prod(sizes[ax] for ax in axes)
    _multiproc.check_traced(axes)
    nloc, n, dt = v.local_shard(a, nparties)
    tile, nloc_p = _shard.tile_plan(nloc, v.tile(T_A), v.flag(pad, "pad"), max_tile)
    rank_group = _shard.where_am_i(axes)
    solver = _dispatch.resolve(dispatch, op, nparties * nloc_p, nparties, dt, platform)
    return axes, nparties, nloc, nloc_p, tile, rank_group, dt, solver


def potrs_shardmap_ctx(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Cholesky solve A x = b from inside the caller's own shard_map.

    a: this device's row shard of A, (N / devices, N); b: (N, K) or (N,),
    replicated. Returns (x, status): x replicated like b, status an int32
    (0: solved; k > 0: the leading minor of order k is not positive
    definite, and x is NaN). axis_name: the mesh axis (or tuple of axes) A
    is sharded over; by default every manual axis of the shard_map. T_A:
    the tile width, or None to choose it from the shard height. dispatch:
    "auto", "multi" (cuSolverMg on every device) or "single" (one GPU after
    a gather); see jaxmg._dispatch.
    """
    axes, nparties, nloc, nloc_p, tile, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "potrs", dispatch
    )
    n = a.shape[1]
    _, vector = v.rhs(b, n, dt)
    b2 = b[:, None] if vector else b
    a_p = _shard.pad_shard(a, nparties, where[0], nloc_p, 1)
    b_p = _shard.pad_rows(b2, nparties, nloc, nloc_p)
    if _shard.is_complex(dt):
        b_p = jnp.conj(b_p)
    x, status = _calls.potrs(
        a_p, b_p, where, site=_shard.new_site("potrs"), tile=tile, nparties=nparties,
        dispatch=solver,
    )
    x = _shard.unpad_rows(x, nparties, nloc, nloc_p)
    if _shard.is_complex(dt):
        x = jnp.conj(x)
    return (x[:, 0] if vector else x), _status(_shard.unpad_status(status, nloc, nloc_p))


def potri_shardmap_ctx(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Inverse of a symmetric/Hermitian positive definite A from inside the
    caller's shard_map. Returns (this device's rows of A^-1, both triangles
    filled; status as for potrs). T_A and dispatch as for potrs."""
    axes, nparties, nloc, nloc_p, tile, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "potri", dispatch
    )
    a_p = _shard.pad_shard(a, nparties, where[0], nloc_p, 1)
    inv, status = _calls.potri(
        a_p, where, site=_shard.new_site("potri"), tile=tile, nparties=nparties, dispatch=solver
    )
    inv = _shard.unpad_shard(inv, nparties, nloc, nloc_p)
    return inv, _status(_shard.unpad_status(status, nloc, nloc_p))


def _pad_value(a, axes):
    """A diagonal value for the pad block above every eigenvalue of A, with
    a gap of the order of ||A||: the pad eigenpairs then sort last and stay
    apart from A's. The infinity norm bounds |lambda|."""
    bound = jax.lax.pmax(jnp.max(jnp.sum(jnp.abs(a), axis=1)), axes)
    bound = bound.astype(_shard.real_dtype(a.dtype))
    return jnp.where(jnp.isfinite(bound) & (bound > 0), 2 * bound, 1)


def syevd_shardmap_ctx(a, T_A, return_eigenvectors=True, pad=True, axis_name=None,
                       dispatch="auto"):
    """Eigendecomposition of a symmetric/Hermitian A from inside the caller's
    shard_map. Returns (w, V, status) with return_eigenvectors, else
    (w, status): w ascending (real dtype) and replicated; V this device's
    rows of the eigenvector matrix (eigenvectors in columns, as in
    jnp.linalg.eigh); status 0, or > 0 if the solver did not converge.
    T_A and dispatch as for potrs."""
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    axes, nparties, nloc, nloc_p, tile, where, dt, solver = _setup(
        a, axis_name, T_A, pad, "syevd", dispatch, SYEVD_MAX_TILE
    )
    n = a.shape[1]
    padded = nloc_p != nloc
    a_p = _shard.pad_shard(a, nparties, where[0], nloc_p, _pad_value(a, axes) if padded else 1)
    e, w, status = _calls.syevd(
        a_p, where, site=_shard.new_site("syevd"), tile=tile, nparties=nparties,
        dispatch=solver, jobz=jobz,
    )
    w, status = w[:n], _status(status)
    if not jobz:
        return w, status
    # e holds eigenvectors of M as rows; device r needs A's eigenvector
    # entries for its own rows: a distributed transpose, then conj.
    cols = jax.lax.all_to_all(e, axes, split_axis=1, concat_axis=0, tiled=True)
    vecs = jnp.conj(cols.T) if _shard.is_complex(dt) else cols.T
    vecs = vecs[:nloc, :n]
    return w, vecs, status


# ---------------------------------------------------------------------------
# mesh level


def _prepare(A, T_A, mesh, in_specs, nspecs, dispatch):
    mesh = v.mesh(mesh)
    specs = v.in_specs(in_specs, mesh, nspecs)
    axes = v.matrix_spec(specs[0], mesh)
    if nspecs == 2:
        v.replicated_spec(specs[1], "in_specs[1] (the spec of b)")
    n, dt = v.square(A)
    v.tile(T_A)
    _dispatch.check(dispatch)
    _library.ensure_registered(_library.platform_of(mesh.devices.flat))
    nparties = v.solve_size(mesh, axes)
    _multiproc.check_mesh(mesh, axes)
    return mesh, axes, n, dt, nparties


def _pad_global(A, n, n1, diag):
    """Pads A to n1 (a multiple of the device count) at its end; rare, and
    costs one copy, unlike the per-shard tile padding."""
    if n1 == n:
        return A
    A = jnp.pad(A, ((0, n1 - n), (0, n1 - n)))
    idx = jnp.arange(n, n1)
    return A.at[idx, idx].set(jnp.asarray(diag, A.dtype))


@functools.lru_cache(maxsize=None)
def _jitted(impl, statics):
    return jax.jit(impl, static_argnames=statics)


def _call(impl, *args, **static):
    """Runs impl eagerly through a cached jit; under an outer trace, inlines
    a fresh trace instead. Each trace gives every FFI call its own call-site
    key: two calls of one program must never share one, or devices that run
    them in different orders would pair them up wrongly."""
    if any(isinstance(a, jax.core.Tracer) for a in args):
        return impl(*args, **static)
    return _jitted(impl, tuple(sorted(static)))(*args, **static)


def _unpad_global(m, n, n1, mesh):
    """Cuts the global end padding off a row-sharded result. JAX cannot
    shard n rows evenly over a device count that does not divide n, so such
    a result comes back replicated."""
    if n1 == n:
        return m
    return _shard.constrain(m, mesh, P(None, None))[:n, :n]


def _row_spec(axes):
    return P(axes if len(axes) > 1 else axes[0], None)


def _potrs_impl(A, b, *, T_A, mesh, axes, pad, n, dispatch):
    nparties = math.prod(mesh.shape[ax] for ax in axes)
    n1 = -(-n // nparties) * nparties
    A = _shard.constrain(_pad_global(A, n, n1, 1), mesh, _row_spec(axes))
    b = _shard.constrain(jnp.pad(b, ((0, n1 - n), (0, 0))), mesh, P(None, None))
    body = functools.partial(
        potrs_shardmap_ctx, T_A=T_A, pad=pad, axis_name=axes, dispatch=dispatch
    )
    x, status = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(_row_spec(axes), P(None, None)),
        out_specs=(P(None, None), P(None)),
        check_vma=False,
    )(A, b)
    return x[:n], status[0]


def potrs(A, b, T_A, mesh, in_specs, return_status=False, pad=True, dispatch="auto"):
    """Solves A x = b for symmetric/Hermitian positive definite A.

    A (N, N) is row-sharded as in_specs[0] = P(axis, None); b (N,) or (N, K)
    is replicated (in_specs[1] = P(None, None)). Returns x replicated, of
    b's shape; with return_status, (x, status) where status is 0 or the
    order of the first leading minor that is not positive definite (then x
    is NaN). T_A is the tile width of the block-cyclic layout (None: chosen
    from N / devices); with pad the shards are padded internally to whole
    tiles. dispatch: "auto", "multi" (cuSolverMg on every device) or
    "single" (cuSOLVER on the first device after a gather); GPUs only.
    """
    mesh, axes, n, dt, _ = _prepare(A, T_A, mesh, in_specs, 2, dispatch)
    _, vector = v.rhs(b, n, dt)
    want_status = v.flag(return_status, "return_status")
    b2 = b[:, None] if vector else b
    x, status = _call(
        _potrs_impl, v.as_array(A), v.as_array(b2), T_A=v.tile(T_A), mesh=mesh, axes=axes,
        pad=v.flag(pad, "pad"), n=n, dispatch=dispatch,
    )
    x = x[:, 0] if vector else x
    return (x, status) if want_status else x


def _potri_impl(A, *, T_A, mesh, axes, pad, n, dispatch):
    nparties = math.prod(mesh.shape[ax] for ax in axes)
    n1 = -(-n // nparties) * nparties
    A = _shard.constrain(_pad_global(A, n, n1, 1), mesh, _row_spec(axes))
    body = functools.partial(
        potri_shardmap_ctx, T_A=T_A, pad=pad, axis_name=axes, dispatch=dispatch
    )
    inv, status = jax.shard_map(
        body, mesh=mesh, in_specs=(_row_spec(axes),), out_specs=(_row_spec(axes), P(None)),
        check_vma=False,
    )(A)
    return _unpad_global(inv, n, n1, mesh), status[0]


def potri(A, T_A, mesh, in_specs, return_status=False, pad=True, dispatch="auto"):
    """Inverse of a symmetric/Hermitian positive definite A (both triangles),
    sharded like A. in_specs = (P(axis, None),). With return_status,
    (A^-1, status) as for potrs; T_A and dispatch as for potrs."""
    mesh, axes, n, dt, _ = _prepare(A, T_A, mesh, in_specs, 1, dispatch)
    want_status = v.flag(return_status, "return_status")
    inv, status = _call(
        _potri_impl, v.as_array(A), T_A=v.tile(T_A), mesh=mesh, axes=axes, pad=v.flag(pad, "pad"),
        n=n, dispatch=dispatch,
    )
    return (inv, status) if want_status else inv


def _syevd_impl(A, *, T_A, mesh, axes, pad, n, jobz, dispatch):
    nparties = math.prod(mesh.shape[ax] for ax in axes)
    n1 = -(-n // nparties) * nparties
    if n1 != n:
        bound = jnp.max(jnp.sum(jnp.abs(A), axis=1)).astype(_shard.real_dtype(A.dtype))
        A = _pad_global(A, n, n1, jnp.where(jnp.isfinite(bound) & (bound > 0), 2 * bound, 1))
    A = _shard.constrain(A, mesh, _row_spec(axes))
    body = functools.partial(
        syevd_shardmap_ctx, T_A=T_A, return_eigenvectors=jobz, pad=pad, axis_name=axes,
        dispatch=dispatch,
    )
    outs = (P(None), _row_spec(axes), P(None)) if jobz else (P(None), P(None))
    res = jax.shard_map(body, mesh=mesh, in_specs=(_row_spec(axes),), out_specs=outs, check_vma=False)(A)
    w, status = res[0][:n], res[-1][0]
    if not jobz:
        return w, None, status
    return w, _unpad_global(res[1], n, n1, mesh), status


def syevd(A, T_A, mesh, in_specs, return_eigenvectors=True, return_status=False, pad=True,
          dispatch="auto"):
    """Eigendecomposition of a symmetric/Hermitian A.

    Returns (w, V): eigenvalues ascending (real dtype, replicated) and the
    eigenvectors as columns (A V = V diag(w)), sharded like A; only w with
    return_eigenvectors=False; status appended with return_status (0, or > 0
    if the solver did not converge). T_A is capped at 1024 (cuSolverMg's
    limit for syevd); T_A and dispatch otherwise as for potrs.
    """
    mesh, axes, n, dt, _ = _prepare(A, T_A, mesh, in_specs, 1, dispatch)
    jobz = v.flag(return_eigenvectors, "return_eigenvectors")
    want_status = v.flag(return_status, "return_status")
    w, vecs, status = _call(
        _syevd_impl, v.as_array(A), T_A=v.tile(T_A), mesh=mesh, axes=axes, pad=v.flag(pad, "pad"),
        n=n, jobz=jobz, dispatch=dispatch,
    )
    out = (w, vecs) if jobz else (w,)
    if want_status:
        out = out + (status,)
    return out if len(out) > 1 else out[0]
