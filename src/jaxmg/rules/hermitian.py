"""Derivative rules for the Hermitian ops (potrs, potri, syevd, the
generalized eigenproblem) and the general linear solve, written with jaxmg's own solves
and sharded products so that derivatives stay distributed.

Every rule takes the op's non-differentiable core as a callable (statics
closed over) and returns a differentiable function of the same arguments:

    potrs(core, layout)           core(A, b) -> (x, status)
    potrs_logdet(core, potri_core, layout)
                                  core(A, b) -> (x, logdet, status)
    potri(core, layout)           core(A) -> (A^-1, status)
    syevd(core, layout)           core(A) -> (w, V, status)
    eigvalsh(core_w, core_wv, layout)
                                  core_w(A) -> (w, status), core_wv as syevd's
    linear_solve(core, layout, transpose_core=None)
                                  core(A, b) -> (x, status), any square A

Forward and reverse mode, and higher orders, come from one JVP per op: the
tangent solves go through jax.lax.custom_linear_solve with jaxmg's own
solve as solve and (on conjugated right-hand sides for complex A) as
transpose solve, so JAX transposes them into more jaxmg solves with the
same matrix; everything else is linear algebra on
row-sharded matrices (sharded matrix-vector products, a ring matrix product
that never holds more than two row blocks per device, and a distributed
transpose by all_to_all).

Convention for the symmetric / Hermitian inputs of potrs, potri, syevd:
the engines read one triangle of A, and the rules differentiate
f(sym(A)) with sym(A) = (A + A^H) / 2, as jnp.linalg.cholesky and
jnp.linalg.eigh do (symmetrize_input=True): a tangent dA acts as
sym(dA), and a cotangent comes back Hermitian. Along Hermitian directions
this is the derivative of the op itself.

Batching (vmap) is in rules/batching.py: every rule wraps its core there
first. The sharded products are rules/products.py; the general ops' rules
are rules/general.py; each op module (jaxmg/ops/) picks its rule.
docs/derivatives.md has the conventions and the cost of each derivative.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import batching as _batching
from .products import (Layout, conj, ctranspose, hermitian_part, is_complex, keep, matmul,
                       matvec, mean_over_parties, my_rows, rule, symmul)


# ---------------------------------------------------------------------------
# solves


def _solve_fns(core, A, lay: Layout, transpose_core=None):
    """solve / transpose_solve for custom_linear_solve. JAX's transpose is
    not conjugating: for Hermitian A it needs conj(A)^-1 r = conj(A^-1
    conj(r)), one more solve with the same matrix."""

    def solve(_, r):
        return core(A, r)

    def transpose_solve(_, r):
        r = mean_over_parties(r, lay)
        if transpose_core is not None:
            return transpose_core(A, r)
        if not is_complex(r):
            return core(A, r)
        x, *aux = core(A, jnp.conj(r))
        return (jnp.conj(x), *aux)

    return solve, transpose_solve


def _with_aux(core):
    """core(A, b) -> (x, *rest) as custom_linear_solve's has_aux form."""

    def f(A, b):
        x, *rest = core(A, b)
        return x, tuple(rest)

    return f


def _hpd_solve(core, A, b, lay: Layout):
    """x = sym(A)^-1 b with implicit derivatives in A and b; returns
    (x, aux), aux the rest of core's outputs (not differentiated)."""
    core = _with_aux(core)
    solve, tsolve = _solve_fns(core, A, lay)
    return jax.lax.custom_linear_solve(
        lambda v: symmul(A, v, lay), b, solve, tsolve, has_aux=True
    )


def potrs(core, lay: Layout, factored=None):
    """Differentiable x, status = potrs(A, b). Costs: forward mode one more
    solve with A per tangent; reverse mode one solve with A (for complex A
    on conjugated right-hand sides, see _solve_fns) and the rank-K product
    -(y x^H + x y^H) / 2 for A's cotangent, computed in A's layout.
    factored (a Factored): the derivative factors A once and every solve
    of the JVP and its transpose reuses that factor (_potrs_factored);
    without it, each solve is the core again (a factorization each)."""
    core = _batching.potrs(core)
    if factored is not None:
        return _potrs_factored(core, lay, factored)

    def f(A, b):
        x, (status,) = _hpd_solve(core, A, b, lay)
        return x, status

    return f


def potri(core, lay: Layout):
    """Differentiable A^-1, status = potri(A): d(A^-1) = -A^-1 sym(dA) A^-1,
    two ring products and one distributed transpose per tangent (reverse
    mode alike); no factorization beyond the primal's."""
    core = _batching.matrix_op(core)

    def tangents(A, dA):
        inv, status = f(A)
        s = hermitian_part(keep(dA, lay), lay)
        d_inv = -matmul(inv, matmul(s, inv, lay), lay)
        return (inv, status), (keep(d_inv, lay),)

    f = rule(core, tangents)
    return f


# ---------------------------------------------------------------------------
# factor reuse: one Cholesky factorization shared by the primal and every
# solve of its derivatives


class Factored(NamedTuple):
    """The engine's factor ops for one matrix, statics closed over (a
    factor is valid only with the statics it was made with):

        factor(A) -> (F, fstatus, logdet)     F opaque, A's rows
        solve(F, fstatus, b) -> (x, status)   x = sym(A)^-1 b, b's layout
        inverse(F, fstatus) -> (inv, status)  sym(A)^-1 in A's layout

    A failed factor (fstatus != 0) gives NaN solves and inverse with that
    status; a non-finite b gives status -1."""

    factor: Callable
    solve: Callable
    inverse: Callable


def _factor_solve(fac: Factored, F, fstatus, A, b, lay: Layout):
    """x = sym(A)^-1 b by solves with A's factor F, differentiable in A and
    b as _hpd_solve: F is a constant of custom_linear_solve's solve, which
    JAX never differentiates; the derivative goes through sym(A) (matvec).
    Returns (x, (status,))."""
    solve = _batching.factored_solve(fac.solve)
    solve_fn, tsolve = _solve_fns(_with_aux(lambda _, r: solve(F, fstatus, r)), A, lay)
    return jax.lax.custom_linear_solve(
        lambda v: symmul(A, v, lay), b, solve_fn, tsolve, has_aux=True
    )


def _factor_of(fac: Factored, A):
    """A's factor, made from A's value only: its solves are constants of
    the derivative (no rule is needed for, or given to, the factor op)."""
    return fac.factor(jax.lax.stop_gradient(A))


def _factored_jvp(fac: Factored, F, fstatus, A, b, dA, db, lay: Layout):
    """x = sym(A)^-1 b and its tangent dx = sym(A)^-1 (db - sym(dA) x),
    both by solves with A's factor F; dA already in A's layout. Returns
    (x, status, dx)."""
    x, (status,) = _factor_solve(fac, F, fstatus, A, b, lay)
    dx, _ = _factor_solve(fac, F, fstatus, A, db - symmul(dA, x, lay), lay)
    return x, status, dx


def _potrs_factored(core, lay: Layout, fac: Factored):
    """potrs's rule with one factorization: the primal alone is core (the
    fused potrs, one rendezvous); its JVP factors A once, solves the primal
    and the tangent with that factor, and its transpose (reverse mode) is
    one more solve with it. grad costs N^3/3 + O(N^2 K) instead of twice
    N^3/3. Higher orders differentiate the solves through sym(A)."""

    def tangents(A, b, dA, db):
        F, fstatus, _ = _factor_of(fac, A)
        x, status, dx = _factored_jvp(fac, F, fstatus, A, b, keep(dA, lay), db, lay)
        return (x, status), (dx,)

    f = rule(core, tangents)
    return f


def _inverse_from(fac: Factored, lay: Layout):
    """inv(A, F, fstatus) = sym(A)^-1 from A's factor F, differentiable in
    A as potri's rule (-inv sym(dA) inv; F, made from A's value, is not
    differentiated)."""

    @jax.custom_jvp
    def inv(A, F, fstatus):
        return fac.inverse(F, fstatus)[0]

    @inv.defjvp
    def inv_jvp(primals, tangents):
        A, F, fstatus = primals
        X = inv(A, F, fstatus)
        s = hermitian_part(keep(tangents[0], lay), lay)
        return X, keep(-matmul(X, matmul(s, X, lay), lay), lay)

    return inv


def _tr_inv(inv, dA, lay: Layout, like_logdet):
    """d logdet = Re tr(A^-1 dA) = Re sum(conj(A^-1) * dA) (A^-1 Hermitian):
    an elementwise product of row-sharded matrices, one scalar all-reduce."""
    d = jnp.real(jnp.sum(conj(inv) * dA))
    if lay.per_shard:
        d = jax.lax.psum(d, lay.axes)
    return jnp.reshape(d, jnp.shape(like_logdet)).astype(like_logdet.dtype)


def _logdet_factored(core, lay: Layout, fac: Factored):
    """potrs_logdet's rule with one factorization: the JVP factors A once
    (which gives logdet too), solves with that factor as _potrs_factored,
    and takes logdet's derivative from the inverse computed from the same
    factor (one chol_inverse instead of a potri: no second potrf)."""
    inverse = _inverse_from(fac, lay)

    @jax.custom_jvp
    def logdet_of(A, F, fstatus, logdet):
        return logdet

    @logdet_of.defjvp
    def logdet_jvp(primals, tangents):
        A, F, fstatus, logdet = primals
        return logdet, _tr_inv(inverse(A, F, fstatus), keep(tangents[0], lay), lay, logdet)

    def tangents(A, b, dA, db):
        F, fstatus, logdet = _factor_of(fac, A)
        dA = keep(dA, lay)
        x, status, dx = _factored_jvp(fac, F, fstatus, A, b, dA, db, lay)
        # logdet as a function of A (for higher orders); its tangent from the inverse
        logdet = logdet_of(A, F, fstatus, logdet)
        d_logdet = _tr_inv(inverse(A, F, fstatus), dA, lay, logdet)
        return (x, logdet, status), (dx, d_logdet)

    f = rule(core, tangents)
    return f


def potrs_logdet(core, potri_core, lay: Layout, factored=None):
    """Differentiable x, logdet, status = potrs(A, b, return_logdet=True).
    d logdet = Re tr(A^-1 dA) = Re sum(conj(A^-1) * dA) (A^-1 Hermitian),
    an elementwise product of two row-sharded matrices and one all-reduce
    of a scalar. factored (a Factored): A^-1 comes from the factor that
    the derivative's solves use (_logdet_factored); without it, from one
    potri (another factorization)."""
    core = _batching.potrs(core)
    if factored is not None:
        return _logdet_factored(core, lay, factored)
    inverse = potri(potri_core, lay)

    def tangents(A, b, dA, db):
        x, logdet, status = f(A, b)
        dA = keep(dA, lay)
        rhs = db - symmul(dA, x, lay)
        dx, _ = _hpd_solve(core, A, rhs, lay)
        d_logdet = _tr_inv(inverse(A)[0], dA, lay, logdet)
        return (x, logdet, status), (dx, d_logdet)

    f = rule(core, tangents)
    return f


def linear_solve(core, lay: Layout, transpose_core=None):
    """Differentiable x, status = solve(A, b) for a general square A (LU):
    dx = A^-1 (db - dA x); the transposed solve A^T y = r through
    transpose_core(A, r) -> (y, status) when the engine offers it, else
    by the same core on A^T (a distributed transpose and a second
    factorization)."""
    core = _batching.potrs(core)

    def tcore(A, r):
        if transpose_core is not None:
            return transpose_core(A, r)
        At = ctranspose(A, lay)
        return core(conj(At), r)

    def f(A, b):
        solve, tsolve = _solve_fns(_with_aux(core), A, lay,
                                   transpose_core=_with_aux(tcore))
        x, (status,) = jax.lax.custom_linear_solve(
            lambda v: matvec(A, v, lay), b, solve, tsolve, has_aux=True
        )
        return x, status

    return f


# ---------------------------------------------------------------------------
# eigendecomposition


def _eig_gaps(w, lay: Layout, dtype):
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it (infinite for
    equal eigenvalues, as jnp.linalg.eigh), in rows like V."""
    n = w.shape[0]
    rows = my_rows(w, lay) if lay.per_shard else w
    first = jax.lax.axis_index(lay.axes) * rows.shape[0] if lay.per_shard else 0
    diff = w[None, :] - rows[:, None]
    eye = (jnp.arange(rows.shape[0])[:, None] + first) == jnp.arange(n)[None, :]
    F = jnp.where(eye, 0, 1 / jnp.where(eye, 1, diff)).astype(dtype)
    return keep(F, lay, lay.row_spec)


def _col_sums(M, lay: Layout):
    s = jnp.sum(M, axis=0)
    return jax.lax.psum(s, lay.axes) if lay.per_shard else s


def _cols_to_rows(V, lay: Layout):
    """Per shard: this device's columns of V (N, N/P) -> its rows (N/P, N),
    one all_to_all (linear: it transposes to the inverse all_to_all)."""
    return jax.lax.all_to_all(V, lay.axes, split_axis=0, concat_axis=1, tiled=True)


def _rows_to_cols(V, lay: Layout):
    return jax.lax.all_to_all(V, lay.axes, split_axis=1, concat_axis=0, tiled=True)


def syevd(core, lay: Layout, v_cols: bool = False):
    """Differentiable w, V, status = syevd(A) (eigenvectors in columns):
    dw = Re diag(V^H sym(dA) V), dV = V (F o V^H sym(dA) V), as
    jnp.linalg.eigh (defined for distinct eigenvalues). Three ring products
    and two distributed transposes per tangent; no second solve.
    v_cols (per shard only): core's V block is this device's columns
    (N, N/P) (v_layout="cols"); the rule works in rows, one all_to_all
    each way per tangent."""
    core = _batching.matrix_op(core)
    if v_cols and not lay.per_shard:
        raise ValueError("jaxmg: syevd's v_cols layout exists only per shard")

    def tangents(A, dA):
        w, V, status = f(A)
        Vr = _cols_to_rows(V, lay) if v_cols else V
        s = hermitian_part(keep(dA, lay), lay)
        sv = matmul(s, Vr, lay)
        g = matmul(ctranspose(Vr, lay), sv, lay)
        dw = jnp.real(_col_sums(conj(Vr) * sv, lay)).astype(w.dtype)
        dV = matmul(Vr, _eig_gaps(w, lay, Vr.dtype) * g, lay)
        dV = _rows_to_cols(dV, lay) if v_cols else keep(dV, lay)
        return (w, V, status), (dw, dV)

    f = rule(core, tangents)
    return f


def eigvalsh(core_w, core_wv, lay: Layout, v_cols: bool = False):
    """Differentiable w, status = syevd(A, return_eigenvectors=False): the
    primal computes eigenvalues only; a derivative needs V, so its JVP runs
    the eigenvector solver once (then one ring product per tangent).
    v_cols: core_wv's V in columns per shard, as for syevd."""
    core_w = _batching.matrix_op(core_w)
    full = syevd(core_wv, lay, v_cols)

    def tangents(A, dA):
        w, V, status = full(A)
        V = _cols_to_rows(V, lay) if v_cols else V
        # Re diag(V^H dA^H V) = Re diag(V^H dA V): no transpose of dA needed.
        dw = jnp.real(_col_sums(conj(V) * matmul(keep(dA, lay), V, lay), lay)).astype(w.dtype)
        return (w, status), (dw,)

    f = rule(core_w, tangents)
    return f


def _pencil_products(V, dA, dB, lay: Layout, sym: bool):
    """(dA V, dB V) (with sym: sym(dA) V, sym(dB) V) in rows, and the real
    diagonals of V^H dA V and V^H dB V, for the generalized rules."""
    keep_or_sym = (lambda M: hermitian_part(keep(M, lay), lay)) if sym else (lambda M: keep(M, lay))
    sa, sb = matmul(keep_or_sym(dA), V, lay), matmul(keep_or_sym(dB), V, lay)
    da = jnp.real(_col_sums(conj(V) * sa, lay))
    db = jnp.real(_col_sums(conj(V) * sb, lay))
    return sa, sb, da, db


def _rows_of(V, lay: Layout, v_cols: bool):
    return _cols_to_rows(V, lay) if v_cols else V


def generalized_eigh(core, lay: Layout, v_cols: bool = False):
    """Differentiable w, V, status = core(A, B) for A V = B V diag(w),
    V^H B V = I (eigenvectors in columns). With At = V^H sym(dA) V and
    Bt = V^H sym(dB) V: dw = Re diag(At) - w Re diag(Bt), and dV = V C
    with C = F o (At - Bt diag(w)) off the diagonal (F as for syevd) and
    C_jj = -Bt_jj / 2, the real gauge that keeps V^H B V = I (for B = I
    this is syevd's rule). Four ring products and one distributed
    transpose per tangent. v_cols as for syevd."""
    if v_cols and not lay.per_shard:
        raise ValueError("jaxmg: the v_cols layout exists only per shard")

    def tangents(A, B, dA, dB):
        w, V, status = f(A, B)
        Vr = _rows_of(V, lay, v_cols)
        sa, sb, da, db = _pencil_products(Vr, dA, dB, lay, sym=True)
        g = matmul(ctranspose(Vr, lay), sa - sb * w.astype(Vr.dtype)[None, :], lay)
        dV = matmul(Vr, _eig_gaps(w, lay, Vr.dtype) * g, lay) - Vr * (db / 2).astype(Vr.dtype)
        dV = _rows_to_cols(dV, lay) if v_cols else keep(dV, lay)
        return (w, V, status), ((da - w * db).astype(w.dtype), dV)

    f = rule(_batching.matrix_op(core), tangents)
    return f


def generalized_eigvalsh(core_w, core_wv, lay: Layout, v_cols: bool = False):
    """Differentiable w, status = core_w(A, B), eigenvalues only: the JVP
    runs core_wv (w, V, status) once, then dw = Re diag(V^H dA V) -
    w Re diag(V^H dB V) (the diagonal needs no symmetrization): two ring
    products per tangent."""
    full = generalized_eigh(core_wv, lay, v_cols)

    def tangents(A, B, dA, dB):
        w, V, status = full(A, B)
        _, _, da, db = _pencil_products(_rows_of(V, lay, v_cols), dA, dB, lay, sym=False)
        return (w, status), ((da - w * db).astype(w.dtype),)

    return rule(_batching.matrix_op(core_w), tangents)
