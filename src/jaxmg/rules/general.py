"""Derivative rules for the general operations of issue 15 (qr, gesvd,
polar, least_squares; lu_solve's rule is rules/hermitian.linear_solve).

As in rules/hermitian.py, each rule takes the op's non-differentiable core as a
callable (statics closed over) and a Layout, and returns a differentiable,
vmappable function with the core's arguments and outputs:

    qr(core, lay)                    core(A) -> (Q, R, status)
    gesvd(core, lay)                 core(A) -> (U, s, Vh, status), reduced
    singular_values(core_s, core_usv, lay)
                                     core_s(A) -> (s, status)
    svd_parts(core, core_usv, lay, compute_u, compute_vh, full_matrices)
                                     U or Vh alone; full_matrices where
                                     that is the reduced SVD
    polar(core, lay, svd_core)       core(A) -> (Up, H, status), tall or wide
    least_squares(core, lay, hpd_solve=None)
                                     core(A, b) -> (x, status), M >= N

A is M x N in rows over the solve axes: at mesh level the global matrix,
per shard (Layout(axes), mesh None, inside the caller's shard_map) this
device's row block, with collectives over the solve axes. The small
factors (R, Vh, s, H, x) are N x N or smaller and replicated, as the ops
return them. The rules multiply row-sharded by replicated matrices on each
device's rows and contract over the rows with one all-reduce of a small
(N x N or N x K) result: an M x N matrix is never gathered. The formulas
are jnp.linalg's (qr, svd) and their standard implicit forms (polar, least
squares); each holds where the op is smooth: full rank, and for the
singular vectors distinct singular values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from . import batching as _batching
from .products import Layout, conj, explicit, is_complex, keep, my_rows, rule

_REP = P(None, None)


def _H(x):
    return conj(x).T


def global_rows(X, lay: Layout) -> int:
    """The row count of the matrix X is a block of (per shard: its rows on
    every device of the solve axes)."""
    return X.shape[0] * (lay.nparties if lay.per_shard else 1)


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
    X, Y = conj(keep(X, lay, lay.row_spec)), keep(Y, lay, lay.row_spec)
    if explicit(lay):  # the all-reduced result, replicated, stated for the typed shardings
        return jnp.einsum("ij,ik->jk", X, Y,
                          out_sharding=jax.sharding.NamedSharding(lay.mesh, _REP))
    return jnp.einsum("ij,ik->jk", X, Y)


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

    def tangents(A, dA):
        Q, R, status = f(A)
        dx_rinv = _right_solve_upper(keep(dA, lay), R, lay)
        qt = gram(Q, dx_rinv, lay)
        low = jnp.tril(qt, -1)
        do = low - _H(low)
        if is_complex(qt):  # the diagonal's imaginary part (jnp's correction)
            do = do + jnp.eye(qt.shape[0], dtype=qt.dtype) * (qt - jnp.real(qt).astype(qt.dtype))
        dQ = rows_times(Q, do - qt, lay) + dx_rinv
        dR = (qt - do) @ R
        return (Q, R, status), (keep(dQ, lay), dR)

    f = rule(core, tangents)
    return f


def _svd_tangents(A, dA, U, s, Vh, lay: Layout):
    """(ds, dU, dVh) as jnp.linalg.svd's JVP, reduced SVD."""
    m, n = global_rows(A, lay), A.shape[1]
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

    def tangents(A, dA):
        U, s, Vh, status = f(A)
        ds, dU, dVh = _svd_tangents(A, keep(dA, lay), U, s, Vh, lay)
        return (U, s, Vh, status), (dU, ds, dVh)

    f = rule(core, tangents)
    return f


def check_full_matrices(m: int, n: int, compute_u: bool, compute_vh: bool, full: bool):
    """full_matrices=True differs from the reduced SVD only where M != N, in
    the factor on the longer side (U for M > N, Vh for M < N): its extra
    |M - N| vectors are any orthonormal basis of the complement of A's
    range (row space), not a function of A, so they have no derivative."""
    extra = (m > n and compute_u) or (n > m and compute_vh)
    if full and extra:
        side = "U" if m > n else "Vh"
        raise NotImplementedError(
            f"jaxmg: gesvd's derivative with full_matrices=True is defined only where it equals "
            f"the reduced SVD: for A of shape {(m, n)} the last {abs(m - n)} columns of the full "
            f"{side} are an arbitrary orthonormal basis of a complement (not unique), so they "
            f"have no derivative (jnp.linalg.svd refuses it too). Differentiate "
            f"full_matrices=False, or compute {'Vh' if side == 'U' else 'U'} and s only.")


def svd_parts(core, core_usv, lay: Layout, compute_u: bool, compute_vh: bool,
              full_matrices: bool = False):
    """Differentiable U, s, Vh, status = gesvd(A) for the forms that
    jnp.linalg.svd's rule does not cover directly: only one of U / Vh
    (core(A) -> (U or (M, 0), s, Vh or (0, N), status)), or
    full_matrices=True where that is the reduced SVD (square A, or the
    longer side's factor not computed; elsewhere check_full_matrices
    raises). The derivative runs the reduced SVD (core_usv) once and takes
    its parts: the primal and tangent outputs come from that one run."""
    core = _batching.matrix_op(core)
    full = gesvd(core_usv, lay)

    def tangents(A, dA):
        check_full_matrices(global_rows(A, lay), A.shape[1], compute_u, compute_vh,
                            full_matrices)
        (U, s, Vh, status), (dU, ds, dVh, _) = jax.jvp(full, (A,), (dA,))
        if not compute_u:  # the core's empty (M, 0) / (0, N) factors
            U = dU = jnp.zeros((A.shape[0], 0), A.dtype)
        if not compute_vh:
            Vh = dVh = jnp.zeros((0, A.shape[1]), A.dtype)
        return (U, s, Vh, status), (dU, ds, dVh)

    f = rule(core, tangents)
    return f


def singular_values(core_s, core_usv, lay: Layout):
    """Differentiable s, status = gesvd(A, compute_u=False,
    compute_vh=False): ds = Re diag(U^H dA V); the derivative runs the
    full SVD once."""
    core_s = _batching.matrix_op(core_s)
    full = gesvd(core_usv, lay)

    def tangents(A, dA):
        U, s, Vh, status = full(A)
        dS = gram(U, rows_times(keep(dA, lay), _H(Vh), lay), lay)
        return (s, status), (jnp.real(jnp.diagonal(dS)).astype(s.dtype),)

    f = rule(core_s, tangents)
    return f


def _polar_tall_tangents(A, dA, Up, s, Vh, lay: Layout):
    """(dUp, dH) for M >= N. With X = Up^H dA and H = V diag(s) V^H:
    Up^H dUp = W, skew-Hermitian, solves W H + H W = X - X^H, so
    V^H W V = V^H (X - X^H) V / (s_i + s_j); dH = X - W H;
    dUp = Up W + (dA - Up X) H^-1."""
    V = _H(Vh)
    X = gram(Up, dA, lay)
    C = Vh @ (X - _H(X)) @ V
    W = V @ (C / (s[:, None] + s[None, :]).astype(C.dtype)) @ Vh
    dH = X - W @ ((V * s[None, :].astype(V.dtype)) @ Vh)
    h_inv = (V / s[None, :].astype(V.dtype)) @ Vh
    dUp = rows_times(Up, W, lay) + rows_times(dA - rows_times(Up, X, lay), h_inv, lay)
    return dUp, dH


def _polar_wide_tangents(A, dA, Up, U, s, Vh, lay: Layout):
    """(dUp, dH) for M < N, from the tall case applied to A^H (N x M, whose
    polar factors are Up^H and H' = (A A^H)^(1/2) = U diag(s) U^H) without
    forming A^H: with K = U^H dA Vh^H (M x M, as in the SVD's rule) and
    C = K^H - K, W' = U (C / (s_i + s_j)) U^H and
    dUp = -W' Up + H'^-1 dA (I - Vh^H Vh)
        = U (-(C / (s_i + s_j)) Vh + diag(1/s) (U^H dA - K Vh));
    dH = d(A^H Up) = dA^H Up + A^H dUp."""
    K = gram(U, rows_times(dA, _H(Vh), lay), lay)
    C = _H(K) - K
    Ct = C / (s[:, None] + s[None, :]).astype(C.dtype)
    inv_s = (1 / s)[:, None].astype(C.dtype)
    dUp = rows_times(U, -Ct @ Vh + inv_s * (gram(U, dA, lay) - K @ Vh), lay)
    dH = gram(dA, Up, lay) + gram(A, dUp, lay)
    return dUp, dH


def polar(core, lay: Layout, svd_core):
    """Differentiable Up, H, status = polar(A), A of full rank (column rank
    for M >= N, row rank for M < N): _polar_tall_tangents /
    _polar_wide_tangents. U, s, Vh come from one reduced gesvd
    (svd_core(A) -> (U, s, Vh, status)), which the engine runs anyway to
    form the polar factors; products as in gesvd's rule: row-block times
    replicated, contractions over the rows (all-reduces of M x M, M x N
    and N x N results; H itself is N x N and replicated)."""
    core = _batching.matrix_op(core)
    # differentiable, so that second derivatives go through the SVD's rule
    # (they then need distinct singular values, as the SVD's do)
    svd_core = gesvd(svd_core, lay)

    def tangents(A, dA):
        Up, H, status = f(A)
        U, s, Vh, _ = svd_core(A)
        dA = keep(dA, lay)
        if global_rows(A, lay) >= A.shape[1]:
            dUp, dH = _polar_tall_tangents(A, dA, Up, s, Vh, lay)
        else:
            dUp, dH = _polar_wide_tangents(A, dA, Up, U, s, Vh, lay)
        dH = (dH + _H(dH)) / 2
        if H.shape[0] == 0:  # compute_h=False: H is (0, N)
            dH = jnp.zeros_like(H)
        return (Up, H, status), (keep(dUp, lay), dH)

    f = rule(core, tangents)
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

    def tangents(A, b, dA, db):
        x0, status = f(A, b)
        # the products below are of matrices: a vector b is one column
        vector = b.ndim == 1
        b, db, x = (b[:, None], db[:, None], x0[:, None]) if vector else (b, db, x0)
        dA = keep(dA, lay)
        if lay.per_shard:  # b is replicated; A's rows are this device's
            b, db = my_rows(b, lay), my_rows(db, lay)
        r = b - rows_times(A, x, lay)
        G = gram(A, A, lay)
        rhs = gram(A, db - rows_times(dA, x, lay), lay) + gram(dA, r, lay)

        def solve(_, w):
            return hpd_solve(G, w)

        def tsolve(_, w):
            return conj(hpd_solve(G, conj(w)))

        dx = jax.lax.custom_linear_solve(
            lambda v: gram(A, rows_times(A, v, lay), lay), rhs, solve, tsolve)
        return (x0, status), (dx[:, 0] if vector else dx,)

    f = rule(core, tangents)
    return f


