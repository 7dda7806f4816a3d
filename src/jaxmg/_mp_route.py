"""Routing a mesh-level call to the cuSOLVERMp engine.

Every op's core asks `route(op, req, *arrays)` first. It returns None,
and the core goes on with its one-node engines, unless the mesh is on GPUs
and `_grid.choose_engine` picks "mp" for this request: a solve group whose
devices sit on several nodes (the only engine that solves across nodes),
or dispatch="mp" forced. Then it runs the op on the engine and returns the
core's own outputs (same shapes, layouts and status convention):

    potrs         (x in b's shape and layout, status, logdet or None)
    potri         (A^-1 in A's layout, status)
    syevd         (w, V in A's layout or None, status)
    lu_solve, least_squares   (x in b's shape and layout, status)
    qr            (Q in A's layout, R, status)
    gesvd         (U in A's layout or (M, 0), s, Vh or (0, N), status)
    polar         (U in A's layout, H or (0, N), status)

Status is -1 (outputs NaN) for a non-finite input, as on the other engines;
the engine itself gives > 0 and NaN outputs for a failing matrix.

On CPU nothing routes: a solve group across nodes stays the ValueError of
_multiproc.check_mesh, and dispatch="mp" is a ValueError naming the
platform. `takes(op, mesh, axes, dispatch, n)` is the decision alone, for
_request.normalise to skip that node check where this engine will solve.

The engine's grid comes from the solve axes: two axes are the P x Q grid
(A moved to P(r, c)), one axis a 1 x n or n x 1 grid (A by rows, or by
columns as given). A matrix that does not split evenly over the grid is
padded at its end as the cores pad (identity for the factorisations, a
diagonal above the spectrum for syevd, zero rows for the tall ops).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import _dispatch, _grid, _multiproc

REP = P(None, None)
_WITH_B = ("potrs", "lu_solve", "least_squares")
_TALL = ("least_squares", "qr", "gesvd", "polar")
# Tiles where the caller gave none (T_A=None): the notes' best for
# potrf/getrf (1024) and for the eigen/SVD reductions (256).
_TILE = {"syevd": 256, "gesvd": 256, "polar": 256}
_DEFAULT_TILE = 1024


# ---------------------------------------------------------------------------
# the decision


def _concrete(mesh) -> bool:
    return getattr(mesh, "devices", None) is not None  # a Mesh (an AbstractMesh has none)


def _platform(mesh) -> str:
    if _concrete(mesh):
        return {d.platform for d in np.asarray(mesh.devices).flat}.pop()
    try:
        return mesh.abstract_device.platform
    except Exception:
        return jax.default_backend()


def available() -> bool:
    """Whether this installation has libjaxmg_mp.so."""
    from ._library import _library_path

    try:
        _library_path("jaxmg_mp")
    except ImportError:
        return False
    return True


def spans_nodes(mesh, axes) -> bool:
    """Whether some solve group (one position along the other mesh axes)
    has devices on more than one node (JAXMG_NODE_ID, else the host name)."""
    if not _multiproc.active() or not _concrete(mesh):
        return False
    _, nodes = _multiproc.job()
    names = list(mesh.axis_names)
    order = [names.index(a) for a in names if a not in axes] + [names.index(a) for a in axes]
    size = math.prod(mesh.shape[a] for a in axes)
    for group in np.transpose(mesh.devices, order).reshape(-1, size):
        if len({nodes[d.process_index] for d in group}) > 1:
            return True
    return False


def takes(op: str, mesh, axes, dispatch: str, n: int = 0) -> bool:
    """Whether the cuSOLVERMp engine solves this call (ValueError where it
    must and cannot: dispatch="mp" off GPUs, a forced one-node engine across
    nodes, or no libjaxmg_mp.so for a solve across nodes)."""
    platform = _platform(mesh)
    if platform != "gpu":
        if dispatch == "mp":
            raise ValueError(
                f"jaxmg: dispatch='mp' (the cuSOLVERMp engine) runs on GPUs only; this mesh is "
                f"on {platform!r}. Use dispatch='auto' there."
            )
        return False
    across = spans_nodes(mesh, tuple(axes))
    if not across and dispatch != "mp":
        return False  # a one-node problem: the one-node engines decide (_dispatch.resolve)
    have = ("single", "mg") + (("mp",) if available() else ())
    engine = _grid.choose_engine(op, n, dispatch=_dispatch.engine_of(dispatch),
                                 across_nodes=across, available=have)
    if engine == "mp" and not _concrete(mesh):
        raise ValueError(
            "jaxmg: the cuSOLVERMp engine needs a concrete Mesh (pass mesh=..., or call inside "
            "jax.set_mesh(mesh)); got an AbstractMesh"
        )
    return engine == "mp"


# ---------------------------------------------------------------------------
# the request in the engine's terms


def _engine_spec(req) -> P:
    """A's layout for the engine: P(r, c) over two solve axes; over one, A's
    own rows or columns split, rows otherwise."""
    axes = req.axes
    if len(axes) == 2:
        return P(axes[0], axes[1])
    if len(axes) != 1:
        raise ValueError(
            f"jaxmg: the cuSOLVERMp engine solves over one or two mesh axes (a P x Q grid); "
            f"A's spec {req.a_spec} names {len(axes)}: {axes}"
        )
    if tuple(req.a_spec) == (None, axes[0]):
        return P(None, axes[0])
    return P(axes[0], None)


def _splits(req, spec) -> tuple[int, int]:
    sizes = [req.mesh.shape[a] if a is not None else 1 for a in spec]
    return sizes[0], sizes[1]


def _up(x: int, k: int) -> int:
    return -(-x // k) * k


def _padded_shape(req, spec) -> tuple[int, int]:
    m, n = req.shape
    pr, pc = _splits(req, spec)
    if req.op in _TALL:
        if n % pc:
            raise ValueError(
                f"jaxmg: the cuSOLVERMp engine splits A's {n} columns over {pc} devices; {req.op} "
                "cannot pad columns: make N a multiple of the column axis, or shard A by rows"
            )
        return _up(m, pr), n
    n1 = _up(n, math.lcm(pr, pc))
    return n1, n1


def _pad(A, req, m1, n1, diag):
    """A padded to m1 x n1 at its end (replicated first: JAX cannot pad a
    sharded dimension to a size its axes do not divide); diag on the new
    diagonal of a square op."""
    from . import _shard

    m, n = A.shape
    if (m1, n1) == (m, n):
        return A
    A = jnp.pad(_shard.constrain(A, req.mesh, REP), ((0, m1 - m), (0, n1 - n)))
    if req.op in _TALL:
        return A
    # An elementwise select, not A.at[idx, idx].set: that scatter, followed
    # by a P(r, c) constraint, came out wrong under jit (jax 0.10.2, CPU:
    # written at [k - N/2, k - N/2] of the first block), while rows were fine.
    i = jnp.arange(n1)
    new = (i[:, None] == i[None, :]) & (i[:, None] >= n)
    return jnp.where(new, jnp.asarray(diag, A.dtype), A)


def _syevd_diag(A):
    """A value above A's spectrum (its largest absolute row sum, doubled):
    the padded eigenvalues come last."""
    real = jnp.finfo(A.dtype).dtype
    bound = jnp.max(jnp.sum(jnp.abs(A), axis=1)).astype(real)
    return jnp.where(jnp.isfinite(bound) & (bound > 0), 2 * bound, 1)


def _rep(x, req):
    from . import _shard

    return _shard.constrain(x, req.mesh, P(*((None,) * x.ndim)))


def _cut(x, req, rows, cols=None):
    """x[:rows, :cols], replicated first where a cut is needed."""
    if x.shape[0] == rows and (cols is None or x.shape[1] == cols):
        return x
    x = _rep(x, req)
    return x[:rows] if cols is None else x[:rows, :cols]


def _nan(bad, x):
    return None if x is None else jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), x)


def _shard_flags(A, req, spec):
    """Each device's own flag that its shard of A holds a NaN or an
    infinity, one entry per shard (laid out as the shards): computed where
    the shard lives, so no collective runs before the engine."""
    def body(a):
        return (~jnp.all(jnp.isfinite(a))).reshape(1, 1)

    return jax.shard_map(body, mesh=req.mesh, in_specs=(spec,), out_specs=spec,
                         check_vma=False)(A)


def _run(req, A, b=None):
    """(engine results dict, bad, m, n): A (and b) padded and placed, run.
    Non-finite entries reach the engine as zeros; whether there were any
    is known only after it (the shards' flags meet once the engine's status
    exists), so that no device waits for the others before the call. Then
    the status is -1 and the outputs NaN (_nan), as on the other engines."""
    from . import _mp, _shard

    m, n = req.shape
    spec = _engine_spec(req)
    m1, n1 = _padded_shape(req, spec)
    diag = _syevd_diag(A) if req.op == "syevd" else 1
    A = _shard.constrain(_pad(A, req, m1, n1, diag), req.mesh, spec)
    flags = _shard_flags(A, req, spec)
    A = jnp.where(jnp.isfinite(A), A, jnp.zeros((), A.dtype))
    bad_b = jnp.zeros((), jnp.bool_)
    if b is not None:
        b2 = b[:, None] if b.ndim == 1 else b
        b2 = jnp.pad(_rep(b2, req), ((0, m1 - m), (0, 0)))
        bad_b = ~jnp.all(jnp.isfinite(b2))  # b2 is replicated: a local reduction
        b2 = jnp.where(jnp.isfinite(b2), b2, jnp.zeros((), b2.dtype))
    else:
        b2 = None
    tile = req.tile or _TILE.get(req.op, _DEFAULT_TILE)
    jobz = int(req.opt("logdet", False)) if req.op == "potrs" else int(req.opt("jobz", True))
    out = _mp.solve(req.op, A, b2, mesh=req.mesh, axes=req.axes, tile=tile, jobz=jobz,
                    spec=spec)
    # The barrier orders the flags' reduction after the engine's status.
    flags, status = jax.lax.optimization_barrier((flags, out["status"]))
    bad = jnp.any(flags) | bad_b
    out["status"] = jnp.where(bad, jnp.int32(-1), status).astype(jnp.int32)
    return out, bad, m, n


def _x(out, bad, req, b, n):
    from . import _request

    x = _nan(bad, _cut(out["x"], req, n))
    return _request.to_b_layout(x[:, 0] if b.ndim == 1 else x, req)


def _matrix(x, bad, req, rows, cols):
    from . import _request

    return _request.to_matrix_layout(_nan(bad, _cut(x, req, rows, cols)), req)


def _potrs(req, A, b):
    out, bad, m, n = _run(req, A, b)
    ld = _nan(bad, out["logdet"]) if req.opt("logdet", False) else None
    return _x(out, bad, req, b, n), out["status"], ld


def _potri(req, A):
    out, bad, m, n = _run(req, A)
    return _matrix(out["inv"], bad, req, n, n), out["status"]


def _syevd(req, A):
    out, bad, m, n = _run(req, A)
    w = _nan(bad, _cut(out["w"], req, n))
    v = _matrix(out["v"], bad, req, n, n) if req.opt("jobz", True) else None
    return w, v, out["status"]


def _solve_x(req, A, b):
    out, bad, m, n = _run(req, A, b)
    return _x(out, bad, req, b, n), out["status"]


def _qr(req, A):
    out, bad, m, n = _run(req, A)
    return _matrix(out["q"], bad, req, m, n), _nan(bad, out["r"]), out["status"]


def _gesvd(req, A):
    m, n = req.shape
    if req.opt("full_matrices", False) and m > n:
        raise ValueError("jaxmg: the cuSOLVERMp engine computes the thin SVD only "
                         "(full_matrices=False, or m == n)")
    out, bad, m, n = _run(req, A)
    dt = jnp.dtype(req.dtype)
    u = (_matrix(out["u"], bad, req, m, n) if req.opt("compute_u", True)
         else jnp.zeros((m, 0), dt))
    vh = _nan(bad, out["vh"]) if req.opt("compute_vh", True) else jnp.zeros((0, n), dt)
    return u, _nan(bad, out["s"]), vh, out["status"]


def _polar(req, A):
    out, bad, m, n = _run(req, A)
    h = _nan(bad, out["h"]) if req.opt("compute_h", True) else jnp.zeros((0, n), jnp.dtype(req.dtype))
    return _matrix(out["u"], bad, req, m, n), h, out["status"]


RUN = {"potrs": _potrs, "potri": _potri, "syevd": _syevd, "lu_solve": _solve_x,
       "least_squares": _solve_x, "qr": _qr, "gesvd": _gesvd, "polar": _polar}


def route(op: str, req, *arrays):
    """None unless the cuSOLVERMp engine solves this request (see the module
    docstring); then the core's outputs, computed there."""
    if not takes(op, req.mesh, req.axes, req.dispatch, req.shape[1]):
        return None
    return RUN[op](req, *arrays)
