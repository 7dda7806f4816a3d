"""QR of a tall matrix in rows by CholeskyQR2, and by shifted CholeskyQR3
where CholeskyQR2 loses orthogonality (Fukaya, Kannan, Nakatsukasa,
Yamamoto, Yanagisawa: shifted Cholesky QR for ill-conditioned matrices).

One CholeskyQR pass: G = B^H B (a ring reduce-scatter, in rows),
G = R^H R (rows.cholesky, in rows), Q = B R^-1 (a triangular solve on
each device's rows). A pass loses orthogonality like u cond(B)^2, so two
passes are exact to working precision for cond(B) below about u^-1/2; a
first pass on G + s I with s = 11 (m n + n (n + 1)) u ||B||_F^2 brings any
cond(B) below about u^-1 into that range. B may be a stack of row blocks
(QDWH orthonormalises [sqrt(c) X; I] without forming it): `parts` is a
tuple of row-sharded blocks with the same N.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import rows

SHIFT_FACTOR = 11.0  # the shift's constant in Fukaya et al.'s bound
ORTH_TOL_FACTOR = 10.0  # CholeskyQR2 is accepted when ||Q^H Q - I||_F <= this * N * eps


def _pass(parts, axes, p, shift_rows=None):
    g = sum(rows.gram(b, b, axes, p) for b in parts)
    if shift_rows is not None:
        g = g + shift_rows
    r, status = rows.cholesky(g, axes, p)
    return tuple(rows.right_solve_upper(b, r, axes, p) for b in parts), r, status


def _shift(parts, m_global: int, axes, p):
    """s I in rows, s = 11 (m n + n (n + 1)) u ||B||_F^2."""
    n = parts[0].shape[1]
    dtype = parts[0].dtype
    u = float(jnp.finfo(dtype).eps) / 2
    norm2 = sum(rows.sum_sq(b, axes) for b in parts)
    s = SHIFT_FACTOR * (m_global * n + n * (n + 1)) * u * norm2
    return s.astype(dtype) * rows.eye_rows(n, dtype, axes, p)


def orthonormalise(parts, axes, p, *, m_global: int, shifted: bool, want_r: bool = True):
    """(Q's parts, R in rows or None, status): B = Q R with Q^H Q = I, by
    CholeskyQR2, after a shifted pass when `shifted` (CholeskyQR3)."""
    rs, statuses = [], []
    for k in range(3 if shifted else 2):
        shift = _shift(parts, m_global, axes, p) if (shifted and k == 0) else None
        parts, r, st = _pass(parts, axes, p, shift)
        rs.append(r)
        statuses.append(st)
    r = rs[0] if want_r else None
    for nxt in rs[1:] if want_r else ():
        r = rows.matmul(nxt, r, axes)
    return parts, r, rows.worst(*statuses)


def orthogonality_loss(q, axes, p):
    """||Q^H Q - I||_F, replicated."""
    n = q.shape[1]
    return jnp.sqrt(rows.sum_sq(rows.gram(q, q, axes, p) - rows.eye_rows(n, q.dtype, axes, p),
                                 axes))


def orth_tol(n: int, dtype) -> float:
    return ORTH_TOL_FACTOR * n * float(jnp.finfo(dtype).eps)


def qr_body(a, *, axes, p, m_global, shift):
    n = a.shape[1]
    ok = rows.all_finite(a, axes)
    a = jnp.where(ok, a, 0)
    # scaled so that the Gram matrix neither overflows nor underflows
    alpha = jnp.sqrt(rows.sum_sq(a, axes))
    alpha = jnp.where(alpha > 0, alpha, 1).astype(a.dtype)
    b = a / alpha

    def run(shifted):
        (q,), r, st = orthonormalise((b,), axes, p, m_global=m_global, shifted=shifted)
        return q, r, st

    if shift == "auto":
        q, r, st = run(False)
        redo = (st != 0) | ~(orthogonality_loss(q, axes, p) <= orth_tol(n, a.dtype))
        q, r, st = jax.lax.cond(redo, lambda: run(True), lambda: (q, r, st))
    else:
        q, r, st = run(bool(shift))
    r = r * alpha
    status = rows.worst(jnp.where(ok, 0, rows.STATUS_NONFINITE), st)
    q, r = rows.nan_where(status != 0, q, r)
    return q, r, status


SHIFTS = ("auto", True, False)


def qr_cholesky(A, mesh, axes, *, shift="auto"):
    """Reduced QR of a tall A (M x N, M >= N) in rows over `axes`:
    (Q (M, N) in rows, R (N, N) upper triangular in rows, status).

    shift: "auto" (CholeskyQR2, and shifted CholeskyQR3 where CholeskyQR2's
    Cholesky fails or ||Q^H Q - I||_F exceeds 10 N eps), True (always
    shifted CholeskyQR3), False (CholeskyQR2 only). R's diagonal is real
    and positive. status: 0; -1 and NaN results for non-finite A; k > 0
    where a Cholesky factorization broke down (A numerically rank
    deficient beyond what the shift covers), Q and R then NaN."""
    if not any(shift is s or (isinstance(shift, str) and shift == s) for s in SHIFTS):
        raise ValueError(f"jaxmg.composed.qr_cholesky: shift must be 'auto', True or False, "
                         f"got {shift!r}")
    axes = rows.solve_axes(mesh, axes)
    rows.check_tall(A, mesh, axes, "qr_cholesky")
    return rows.program(qr_body, mesh, axes, 2, 1, m_global=int(np.shape(A)[0]),
                         shift=shift)(A)

