"""The SVD of a tall A in rows from its polar decomposition: A = Up H
(qdwh), H = W diag(w) W^H (jaxmg.syevd on the row-sharded N x N H), so
A = (Up W) diag(w) W^H: U = Up W by the ring product, Vh = W^H by one
all-to-all. Singular values come out descending; an eigenvalue of H that
rounding left slightly negative gives |w| and flips its column of U.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..ops.syevd import syevd_shardmap_ctx
from . import rows
from .qdwh import hermitian_factor, polar_unitary


def _svd_body(a, *, axes, p, m_global, l0):
    ok = rows.all_finite(a, axes)
    a = jnp.where(ok, a, 0)
    up, st = polar_unitary(a, axes=axes, p=p, m_global=m_global, l0=l0)
    h = hermitian_factor(up, a, axes, p)
    w, v, st_eig = syevd_shardmap_ctx(h, None, axis_name=axes, v_layout="rows")
    w, v = w[::-1], v[:, ::-1]  # descending, as jnp.linalg.svd
    sign = jnp.where(w < 0, -1, 1).astype(a.dtype)
    u = rows.matmul(up, v * sign[None, :], axes)
    vh = rows.ctranspose(v, axes)
    status = rows.worst(jnp.where(ok, 0, rows.STATUS_NONFINITE), st, st_eig[0])
    u, s, vh = rows.nan_where(status != 0, u, jnp.abs(w), vh)
    return u, vh, s, status


def svd_polar(A, mesh, axes, *, l0=None):
    """Reduced SVD A = U diag(s) Vh of a tall A (M x N, M >= N) in rows
    over `axes`: (U (M, N) in rows, s (N,) descending and replicated,
    Vh (N, N) in rows, status). l0 as for polar_qdwh. status: 0; -1 and
    NaN results for non-finite A; k > 0 where the polar step's Cholesky
    or the eigensolver failed."""
    axes = rows.solve_axes(mesh, axes)
    rows.check_tall(A, mesh, axes, "svd_polar")
    l0 = None if l0 is None else float(l0)
    u, vh, s, status = rows.program(_svd_body, mesh, axes, 2, 2, m_global=int(np.shape(A)[0]),
                                     l0=l0)(A)
    return u, s, vh, status
