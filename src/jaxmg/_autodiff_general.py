"""Derivative rules for the general operations of issue 15 (qr, gesvd,
polar, least_squares; lu_solve's rule is _autodiff.linear_solve).

As in _autodiff, each rule takes the op's non-differentiable core as a
callable (statics closed over) and a Layout, and returns a differentiable,
vmappable function with the core's arguments and outputs:

    qr(core, lay)                    core(A) -> (Q, R, status)
    gesvd(core, lay)                 core(A) -> (U, s, Vh, status), reduced
    singular_values(core_s, core_usv, lay)
                                     core_s(A) -> (s, status)
    polar(core, lay, svd_core)       core(A) -> (Up, H, status), M >= N
    least_squares(core, lay, hpd_solve=None)
                                     core(A, b) -> (x, status), M >= N

A is M x N in rows over the solve axes; the small factors (R, Vh, s, H,
x) are N x N or smaller and replicated, as the ops return them. The
rules multiply row-sharded by replicated matrices on each device's rows
and contract over the rows with one all-reduce of a small (N x N or
N x K) result: an M x N matrix is never gathered. The formulas are
jnp.linalg's (qr, svd) and their standard implicit forms (polar, least
squares); each holds where the op is smooth: full column rank, and for the
singular vectors distinct singular values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from . import _batching
from ._autodiff import Layout, _conj, _float0_zeros, _is_complex, keep

_REP = P(None, None)


def _H(x):
    return _conj(x).T


def rows_times(X, S, lay: Layout):
    """X S for X (M, N) in rows and S (N, K) replicated: each device
    multiplies its own rows; the result in rows."""
    if lay.per_shard:
        return X @ S
    return keep(keep(X, lay, lay.row_spec) @ S, lay, lay.row_spec)


def gram(X, Y, lay: Layout):
    """X^H Y for X (M, N), Y (M, K) in rows: local products and one
    all-reduce of the (N, K) result, replicated."""
    if lay.per_shard:
        return jax.lax.psum(_H(X) @ Y, lay.axes)
    return jnp.einsum("ij,ik->jk", _conj(keep(X, lay, lay.row_spec)), keep(Y, lay, lay.row_spec))


def _right_solve_upper(X, R, lay: Layout):
    """X R^-1 for X (M, N) in rows and R (N, N) upper triangular,
    replicated: a triangular solve on each device's rows."""

    def local(x, r):
        return jax.lax.linalg.triangular_solve(r, x, left_side=False, lower=False)

    if lay.per_shard or X.shape[0] % lay.nparties:
        return local(X, R)
    rows = lay.row_spec
    return jax.shard_map(local, mesh=lay.mesh, in_specs=(rows, _REP), out_specs=rows,
                         check_vma=False)(keep(X, lay, rows), R)


def qr(core, lay: Layout):
    """Differentiable Q, R, status = qr(A), reduced, M >= N (jnp.linalg.qr's
    rule): one triangular solve on the rows, two contractions over the
    rows (N x N all-reduces), one row-times-replicated product."""
    core = _batching.matrix_op(core)

    @jax.custom_jvp
    def f(A):
        return core(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        Q, R, status = f(A)
        dx_rinv = _right_solve_upper(keep(dA, lay), R, lay)
        qt = gram(Q, dx_rinv, lay)
        low = jnp.tril(qt, -1)
        do = low - _H(low)
        if _is_complex(qt):  # the diagonal's imaginary part (jnp's correction)
            do = do + jnp.eye(qt.shape[0], dtype=qt.dtype) * (qt - jnp.real(qt).astype(qt.dtype))
        dQ = rows_times(Q, do - qt, lay) + dx_rinv
        dR = (qt - do) @ R
        return (Q, R, status), (keep(dQ, lay), dR, _float0_zeros(status))

    return f


def _svd_tangents(A, dA, U, s, Vh, lay: Layout):
    """(ds, dU, dVh) as jnp.linalg.svd's JVP, reduced SVD."""
    m, n = A.shape
    V = _H(Vh)
    dAV = rows_times(dA, V, lay)
    dS = gram(U, dAV, lay)
    ds = jnp.real(jnp.diagonal(dS)).astype(s.dtype)
    sr = s[None, :]
    eye = jnp.eye(s.shape[0], dtype=s.dtype)
    F = 1 / ((sr + sr.T) * (sr - sr.T) + eye) - eye
    dSS = sr.astype(A.dtype) * dS
    SdS = sr.T.astype(A.dtype) * dS
    s_inv = jnp.where(s == 0, 0, 1 / jnp.where(s == 0, 1, s))
    diag_part = 0.5 * (dS - _H(dS)) * jnp.diag(s_inv).astype(A.dtype)
    dU = rows_times(U, F.astype(A.dtype) * (dSS + _H(dSS)) + diag_part, lay)
    dV = V @ (F.astype(A.dtype) * (SdS + _H(SdS)))
    if m > n:
        dU = dU + (dAV - rows_times(U, gram(U, dAV, lay), lay)) / sr.astype(A.dtype)
    if n > m:
        dAHU = gram(dA, U, lay)
        dV = dV + (dAHU - V @ (Vh @ dAHU)) / sr.astype(A.dtype)
    return ds, keep(dU, lay), _H(dV)


def gesvd(core, lay: Layout):
    """Differentiable U, s, Vh, status = gesvd(A) (compute_u, compute_vh,
    full_matrices=False), jnp.linalg.svd's rule: two row products and two
    contractions over the rows; U's tangent in rows like U."""
    core = _batching.matrix_op(core)

    @jax.custom_jvp
    def f(A):
        return core(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        U, s, Vh, status = f(A)
        ds, dU, dVh = _svd_tangents(A, keep(dA, lay), U, s, Vh, lay)
        return (U, s, Vh, status), (dU, ds, dVh, _float0_zeros(status))

    return f


def singular_values(core_s, core_usv, lay: Layout):
    """Differentiable s, status = gesvd(A, compute_u=False,
    compute_vh=False): ds = Re diag(U^H dA V); the derivative runs the
    full SVD once."""
    core_s = _batching.matrix_op(core_s)
    full = gesvd(core_usv, lay)

    @jax.custom_jvp
    def f(A):
        return core_s(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        U, s, Vh, status = full(A)
        dS = gram(U, rows_times(keep(dA, lay), _H(Vh), lay), lay)
        return (s, status), (jnp.real(jnp.diagonal(dS)).astype(s.dtype), _float0_zeros(status))

    return f


def polar(core, lay: Layout, svd_core):
    """Differentiable Up, H, status = polar(A) for M >= N, full rank. With
    X = Up^H dA and H = V diag(s) V^H: Up^H dUp = W, skew-Hermitian, solves
    W H + H W = X - X^H, so V^H W V = V^H (X - X^H) V / (s_i + s_j);
    dH = X - W H; dUp = Up W + (dA - Up X) H^-1. V and s come from one
    gesvd (svd_core(A) -> (U, s, Vh, status)), which the engine runs
    anyway to form the polar factors; products as in gesvd's rule."""
    core = _batching.matrix_op(core)
    svd_core = _batching.matrix_op(svd_core)

    @jax.custom_jvp
    def f(A):
        return core(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        if A.shape[0] < A.shape[1]:
            raise NotImplementedError("jaxmg: polar's derivative needs M >= N")
        Up, H, status = f(A)
        _, s, Vh, _ = svd_core(A)
        V = _H(Vh)
        dA = keep(dA, lay)
        X = gram(Up, dA, lay)
        C = Vh @ (X - _H(X)) @ V
        W = V @ (C / (s[:, None] + s[None, :]).astype(C.dtype)) @ Vh
        dH = X - W @ ((V * s[None, :].astype(V.dtype)) @ Vh)
        dH = (dH + _H(dH)) / 2
        if H.shape[0] == 0:  # compute_h=False: H is (0, N)
            dH = jnp.zeros_like(H)
        h_inv = (V / s[None, :].astype(V.dtype)) @ Vh
        dUp = rows_times(Up, W, lay) + rows_times(dA - rows_times(Up, X, lay), h_inv, lay)
        return (Up, H, status), (keep(dUp, lay), dH, _float0_zeros(status))

    return f


def _local_hpd_solve(G, w):
    """G^-1 w for a small replicated HPD G (N x N), on every device."""
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(G), w)


def least_squares(core, lay: Layout, hpd_solve=None):
    """Differentiable x, status = least_squares(A, b), M >= N, full column
    rank: x solves the normal equations A^H A x = A^H b, so (implicitly)
    dx = (A^H A)^-1 (A^H (db - dA x) + dA^H r), r = b - A x. The primal
    is the engine's; the tangent and adjoint solves use the Gram matrix
    A^H A (N x N, one contraction over the rows) through hpd_solve(G, w)
    (default: a Cholesky solve of the replicated G on each device; pass
    jaxmg's potrs for a large N). The derivative's conditioning is that of
    the normal equations."""
    core = _batching.potrs(core)
    hpd_solve = _local_hpd_solve if hpd_solve is None else hpd_solve

    @jax.custom_jvp
    def f(A, b):
        return core(A, b)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A, b), (dA, db) = primals, tangents
        x, status = f(A, b)
        dA = keep(dA, lay)
        r = b - rows_times(A, x, lay)
        G = gram(A, A, lay)
        rhs = gram(A, db - rows_times(dA, x, lay), lay) + gram(dA, r, lay)

        def solve(_, w):
            return hpd_solve(G, w)

        def tsolve(_, w):
            return _conj(hpd_solve(G, _conj(w)))

        dx = jax.lax.custom_linear_solve(
            lambda v: gram(A, rows_times(A, v, lay), lay), rhs, solve, tsolve)
        return (x, status), (dx, _float0_zeros(status))

    return f


def lu_solve(core, lay: Layout, transpose_core=None):
    """lu_solve's rule: _autodiff.linear_solve (kept here beside the other
    general ops)."""
    from ._autodiff import linear_solve

    return linear_solve(core, lay, transpose_core)


