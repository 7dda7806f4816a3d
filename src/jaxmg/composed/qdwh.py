"""The polar decomposition A = Up H of a tall A in rows by QDWH
(Nakatsukasa, Bai, Gygi: the QR-based dynamically weighted Halley
iteration).

X_0 = A / ||A||_F has its singular values in [l_0, 1]; each step maps
them by sigma -> sigma (a + b sigma^2) / (1 + c sigma^2) with weights
(a, b, c) chosen from the current lower bound l_k, which then rises
towards 1 (about six steps from l_0 = eps in float64). The weights depend
only on l_0, so the whole schedule is fixed when the program is traced.

While c > 100 a step is QR-based: [sqrt(c) X; I] = [Q1; Q2] R, and
X <- (b/c) X + (a - b/c) / sqrt(c) Q1 Q2^H, with the stacked matrix
orthonormalised by shifted CholeskyQR3 (cholesky_qr; the stack is never
formed). Then cond(I + c X^H X) <= 1 + c is small and a step is
Cholesky-based: X <- (b/c) X + (a - b/c) X (I + c X^H X)^-1, the inverse
by jaxmg.potri on the row-sharded N x N matrix and the product by the ring.
Finally H = Up^H A, made Hermitian.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..ops.potri import potri_shardmap_ctx
from . import rows
from .cholesky_qr import orthonormalise

QR_STEP_ABOVE = 100.0  # c above which a step is QR-based (NBG's choice)
CONVERGED_FACTOR = 10.0  # the schedule stops when 1 - l_k <= this * eps


def _weights(l):
    """(a, b, c) for the lower bound l of the singular values, and the next
    bound."""
    l2 = l * l
    d = (4.0 * (1.0 - l2) / (l2 * l2)) ** (1.0 / 3.0)
    a = math.sqrt(1.0 + d) + 0.5 * math.sqrt(8.0 - 4.0 * d + 8.0 * (2.0 - l2) / (l2 * math.sqrt(1.0 + d)))
    b = (a - 1.0) ** 2 / 4.0
    c = a + b - 1.0
    return (a, b, c), min(1.0, l * (a + b * l2) / (1.0 + c * l2))


def schedule(l0: float, eps: float, max_steps: int = 20):
    """The (a, b, c) of every step, from l_0 until l_k is within 10 eps of 1."""
    if not 0.0 < l0 <= 1.0:
        raise ValueError(f"jaxmg.composed.polar_qdwh: l0 must be in (0, 1], got {l0}")
    steps, l = [], l0
    while 1.0 - l > CONVERGED_FACTOR * eps and len(steps) < max_steps:
        w, l = _weights(l)
        steps.append(w)
    return steps


def _qr_step(x, w, *, axes, p, m_global):
    a, b, c = w[0], w[1], w[2]
    sc = jnp.sqrt(c)
    eye = rows.eye_rows(x.shape[1], x.dtype, axes, p)
    (q1, q2), _, st = orthonormalise((sc.astype(x.dtype) * x, eye), axes, p,
                                     m_global=m_global + x.shape[1], shifted=True, want_r=False)
    prod = rows.matmul(q1, rows.ctranspose(q2, axes), axes)
    return ((b / c).astype(x.dtype) * x + ((a - b / c) / sc).astype(x.dtype) * prod), st


def _chol_step(x, w, *, axes, p):
    a, b, c = w[0], w[1], w[2]
    z = rows.eye_rows(x.shape[1], x.dtype, axes, p) + c.astype(x.dtype) * rows.gram(x, x, axes, p)
    zi, st = potri_shardmap_ctx(z, None, axis_name=axes)
    prod = rows.matmul(x, zi, axes)
    return (b / c).astype(x.dtype) * x + (a - b / c).astype(x.dtype) * prod, st[0]


def _run(step, x, weights, status):
    """x through the steps of `weights` ((k, 3) array), one compiled body."""
    if weights.shape[0] == 0:
        return x, status

    def body(carry, w):
        x, status = carry
        x, st = step(x, w)
        return (x, rows.worst(status, st)), None

    (x, status), _ = jax.lax.scan(body, (x, status), weights)
    return x, status


def polar_unitary(a, *, axes, p, m_global, l0):
    """(rows of Up, status) for this device's rows a of A (finite)."""
    real = jnp.finfo(a.dtype).dtype
    steps = schedule(l0 if l0 is not None else float(jnp.finfo(a.dtype).eps),
                     float(jnp.finfo(a.dtype).eps))
    qr_w = np.array([w for w in steps if w[2] > QR_STEP_ABOVE], np.float64).reshape(-1, 3)
    ch_w = np.array([w for w in steps if w[2] <= QR_STEP_ABOVE], np.float64).reshape(-1, 3)
    alpha = jnp.sqrt(rows.sum_sq(a, axes))
    x = a / jnp.where(alpha > 0, alpha, 1).astype(a.dtype)
    status = jnp.int32(0)
    x, status = _run(lambda x, w: _qr_step(x, w, axes=axes, p=p, m_global=m_global),
                     x, jnp.asarray(qr_w, real), status)
    x, status = _run(lambda x, w: _chol_step(x, w, axes=axes, p=p),
                     x, jnp.asarray(ch_w, real), status)
    return x, status


def hermitian_factor(up, a, axes, p):
    """Rows of H = (Up^H A + A^H Up) / 2."""
    return rows.hermitian_part(rows.gram(up, a, axes, p), axes)


def _polar_body(a, *, axes, p, m_global, l0, compute_h):
    ok = rows.all_finite(a, axes)
    a = jnp.where(ok, a, 0)
    up, st = polar_unitary(a, axes=axes, p=p, m_global=m_global, l0=l0)
    h = hermitian_factor(up, a, axes, p) if compute_h else jnp.zeros((0, a.shape[1]), a.dtype)
    status = rows.worst(jnp.where(ok, 0, rows.STATUS_NONFINITE), st)
    up, h = rows.nan_where(status != 0, up, h)
    return up, h, status


def polar_qdwh(A, mesh, axes, *, compute_h=True, l0=None):
    """Polar decomposition A = Up H of a tall A (M x N, M >= N) in rows
    over `axes`: (Up (M, N) in rows, H (N, N) Hermitian positive
    semidefinite in rows, or (0, N) without compute_h, status).

    l0: a lower bound on sigma_min(A) / ||A||_F (default: the dtype's
    eps, right for any A; a larger true bound saves steps). Singular
    values below l0 ||A||_F are not resolved. status: 0; -1 and NaN
    results for non-finite A; k > 0 where an inner Cholesky factorization
    failed (Up, H then NaN)."""
    if not isinstance(compute_h, (bool, np.bool_)):
        raise TypeError(f"jaxmg.composed.polar_qdwh: compute_h must be a bool, got {compute_h!r}")
    axes = rows.solve_axes(mesh, axes)
    rows.check_tall(A, mesh, axes, "polar_qdwh")
    l0 = None if l0 is None else float(l0)
    if l0 is not None:
        schedule(l0, 1.0)  # checks the range
    return rows.program(_polar_body, mesh, axes, 2, 1, m_global=int(np.shape(A)[0]), l0=l0,
                         compute_h=bool(compute_h))(A)
