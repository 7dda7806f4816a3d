"""Least squares for a tall A in rows without gathering it: A = Q R by
CholeskyQR2 / shifted CholeskyQR3 (cholesky_qr.py), then x = R^-1 Q^H b.
Q^H b is each device's rows' share, summed (N x K, replicated); R^-1 is
a backward substitution over R's row blocks, one block row a step: its
owner solves with its diagonal block and the result is summed to every
device. Q is orthonormal to working precision (not the normal equations:
the error grows like cond(A), not cond(A)^2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..pipeline import shard as _shard
from . import rows
from .cholesky_qr import qr_body


def _lstsq_body(a, b, *, axes, p, m_global):
    q, r, status = qr_body(a, axes=axes, p=p, m_global=m_global, shift="auto")
    ok = rows.all_finite(b, axes)
    y = jax.lax.psum(rows.conj(q).T @ jnp.where(ok, b, 0), axes)
    x = rows.left_solve_upper(r, y, axes, p)
    status = rows.worst(jnp.where(ok, 0, rows.STATUS_NONFINITE), status)
    (x,) = rows.nan_where(status != 0, x)
    return x, status


def lstsq_cholesky(A, b, mesh, axes):
    """min ||A x - b||_2 for a tall A (M x N, M >= N, full column rank) and
    b (M,) or (M, K), both in rows over `axes` (moved there if not):
    (x (N,) or (N, K) replicated, status). status: 0; -1 and NaN x for
    non-finite A or b; k > 0 (x NaN) where CholeskyQR's factorization broke
    down (A numerically rank deficient beyond what the shift covers)."""
    axes = rows.solve_axes(mesh, axes)
    rows.check_tall(A, mesh, axes, "lstsq_cholesky")
    vector = np.ndim(b) == 1
    b2 = b[:, None] if vector else b
    if b2.ndim != 2 or b2.shape[0] != A.shape[0]:
        raise ValueError(f"jaxmg.composed.lstsq_cholesky: b must be (M,) or (M, K) with "
                         f"M = {A.shape[0]}, got {np.shape(b)}")
    if jnp.result_type(b2) != jnp.result_type(A):
        raise ValueError(f"jaxmg.composed.lstsq_cholesky: b's dtype {jnp.result_type(b2)} is not "
                         f"A's {jnp.result_type(A)}")
    b2 = _shard.constrain(b2, mesh, rows.row_spec(axes))
    x, status = rows.program(_lstsq_body, mesh, axes, 0, 2, n_in=2,
                             m_global=int(np.shape(A)[0]))(A, b2)
    return (x[:, 0] if vector else x), status
