"""The one-device route: the algorithm jnp / jax.scipy run on one device,
on the gathered matrix, where it beats jaxmg's own engines (pipeline/
decide.py's WINS table says where, with the measurement). An op that has
one declares it (its `one_device`, pipeline/declare.py); the algorithms
that are more than a jnp call or two are here (svd, polar).

run(req, A, *rest) returns what pipeline/mesh.py's core returns for the FFI
engines, the op's outputs and the status (mesh.py puts them in the
caller's layouts): the arrays are replicated and the algorithm runs (on
CPU devices, which share the host's cores, on one device, its result
broadcast; on GPUs on every device alike, as jnp does on replicated input:
one device's time and memory). There is no FFI call and so no rendezvous.
Status: -1 where the input is not finite (outputs NaN); else the
algorithm's own failure (lu_solve's zero pivot, as the engines number it);
else 1 where it did not converge or gave a non-finite result (outputs
NaN), as the engines report non-convergence; else 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..pipeline import ffi as _calls
from . import library as _library
from ..pipeline import shard as _shard

STATUS_FAILED = 1


def _compute_once(mesh) -> bool:
    """Whether one device computes and the others receive its result. CPU
    devices share the host's cores: P devices computing the same result
    would take P times as long as one. GPUs each compute on their own
    hardware, so there every device computes and nothing is broadcast."""
    return _library.mesh_platform(mesh) != "gpu"


def _replicated(fn, req, *arrays):
    """fn(*arrays) -> tuple of arrays, run on the gathered arrays inside a shard_map
    (so that jnp's algorithms see plain local arrays whatever the mesh's
    axis types), the results replicated: computed by the mesh's first
    device and summed over the mesh from zeros elsewhere (_compute_once),
    or by every device alike."""
    arrays = tuple(_shard.replicated(x, req.mesh) for x in arrays)
    probe = jax.eval_shape(fn, *(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in arrays))
    outs = tuple(_shard.everywhere(x.ndim) for x in probe)
    body = _once(fn, probe, tuple(req.mesh.axis_names)) if _compute_once(req.mesh) else fn
    # Full-precision products: JAX's default for float32 on GPUs is TF32
    # (about 1e-3), which QDWH's iterations and the checks compound.
    with jax.default_matmul_precision("highest"):
        return jax.shard_map(body, mesh=req.mesh,
                             in_specs=tuple(_shard.everywhere(x.ndim) for x in arrays),
                             out_specs=outs, check_vma=False)(*arrays)


def _once(fn, probe, axes):
    """fn on the device of linear index 0 over `axes` only (the other
    devices skip it under lax.cond), its outputs broadcast by a psum."""
    def zeros(*arrays):
        return tuple(jnp.zeros(x.shape, x.dtype) for x in probe)

    def body(*arrays):
        first = jax.lax.axis_index(axes) == 0
        return tuple(jax.lax.psum(x, axes) for x in jax.lax.cond(first, fn, zeros, *arrays))

    return body


def _guard(bad_input, outs, failure):
    """(outs with NaN where the call failed, status): -1 for non-finite
    input, else the algorithm's own failure (as the engines report it),
    else STATUS_FAILED where it gave a non-finite result."""
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in outs]))
    failure = jnp.asarray(failure, jnp.int32)
    status = jnp.where(bad_input, _calls.STATUS_NONFINITE,
                       jnp.where(failure != 0, failure,
                                 jnp.where(finite, 0, STATUS_FAILED))).astype(jnp.int32)
    fail = status != 0
    return tuple(jnp.where(fail, jnp.asarray(jnp.nan, x.dtype), x) for x in outs), status


def _bad(*arrays):
    return ~jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in arrays]))


def _sanitised(A, bad):
    """The identity where A is not finite, so that no algorithm sees NaN."""
    eye = jnp.eye(A.shape[0], A.shape[1], dtype=A.dtype)
    return jnp.where(bad, eye, A)


def svd(A, compute_u: bool, compute_vh: bool, full_matrices: bool):
    """(U or (M, 0), s, Vh or (0, N)): jnp.linalg.svd."""
    m, n = A.shape
    if not (compute_u or compute_vh):
        return jnp.zeros((m, 0), A.dtype), jnp.linalg.svd(A, compute_uv=False), \
            jnp.zeros((0, n), A.dtype)
    u, s, vh = jnp.linalg.svd(A, full_matrices=full_matrices)
    return (u if compute_u else jnp.zeros((m, 0), A.dtype)), s, \
        (vh if compute_vh else jnp.zeros((0, n), A.dtype))


def _probe_orthonormal(up, tol):
    """Whether Up's columns are orthonormal, probed with two fixed vectors
    (O(M N), not a Gram product): QDWH's Up is not unitary where A is
    rank deficient."""
    n = up.shape[1]
    v = jnp.stack([jnp.cos(jnp.arange(n) * 0.7 + k) for k in (0.0, 1.3)], axis=1).astype(up.dtype)
    err = jnp.linalg.norm(jnp.conj(up).T @ (up @ v) - v) / jnp.linalg.norm(v)
    return err <= tol


def _polar_tall(A):
    """(Up, H) of a tall A by QDWH (jax.lax.linalg.qdwh, as
    jax.scipy.linalg.polar), with the SVD route where QDWH did not converge
    or A is rank deficient (QDWH's Up is then not unitary)."""
    m, n = A.shape
    tol = 64 * max(m, n) ** 0.5 * jnp.finfo(A.dtype).eps

    def by_svd(A):
        u, s, vh = jnp.linalg.svd(A, full_matrices=False)
        return u @ vh

    up, _, _, converged = jax.lax.linalg.qdwh(A)
    up = jax.lax.cond(converged & _probe_orthonormal(up, tol), lambda A: up, by_svd, A)
    h = jnp.conj(up).T @ A
    return up, (h + jnp.conj(h).T) / 2


def polar(A, compute_h: bool):
    """(Up, H or (0, N)): QDWH (wide A: through A^H = W K, so Up = W^H,
    H = W K W^H)."""
    m, n = A.shape
    if m >= n:
        up, h = _polar_tall(A)
    else:
        w, k = _polar_tall(jnp.conj(A).T)
        up, h = jnp.conj(w).T, w @ k @ jnp.conj(w).T
        h = (h + jnp.conj(h).T) / 2
    return up, (h if compute_h else jnp.zeros((0, n), A.dtype))


def run(req, A, *rest):
    """The op's outputs and status on the gathered matrix (see the module
    docstring)."""
    def fn(A, *rest):
        bad = _bad(A, *rest)
        rest = tuple(jnp.where(bad, jnp.zeros_like(x), x) for x in rest)
        outs, failure = req.op.one_device(req.opts, _sanitised(A, bad), *rest)
        outs, status = _guard(bad, outs, failure)
        return (*outs, status)

    return _replicated(fn, req, A, *rest)
