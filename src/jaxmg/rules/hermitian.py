"""Derivative rules for jaxmg's operations, written with jaxmg's own solves
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

Batching (vmap) is in _batching.py: every rule wraps its core there first.
`differentiable` / `differentiable_local` (at the end) put the rules in
_ops's core convention; the general ops' rules are in _autodiff_general.py.
docs/derivatives.md has the conventions and the cost of each derivative.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import batching as _batching
from ..pipeline import shard as _shard


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where A lives.

    axes: the mesh axes A's rows are split over (the solve axes, in rank
    order). mesh: the mesh of a mesh-level call (A global, N x N), or None
    inside the caller's shard_map (A is this device's (N/P, N) row block).
    spec: A's own layout at mesh level, which tangents and cotangents of A
    are kept in (default: rows over `axes`)."""

    axes: tuple[str, ...]
    mesh: object = None
    spec: P | None = None

    @property
    def per_shard(self) -> bool:
        return self.mesh is None

    @property
    def row_spec(self) -> P:
        return P(self.axes if len(self.axes) > 1 else self.axes[0], None)

    @property
    def a_spec(self) -> P:
        return self.spec if self.spec is not None else self.row_spec

    @property
    def nparties(self) -> int:
        if self.per_shard:
            sizes = _shard.axis_sizes()
        else:
            sizes = dict(zip(self.mesh.axis_names, self.mesh.axis_sizes))
        return int(np.prod([sizes[ax] for ax in self.axes]))


def layout_of(req, per_shard: bool = False) -> Layout:
    """The Layout of a normalised request (anything with mesh, axes and
    a_spec attributes, as _request.Request)."""
    if per_shard:
        return Layout(tuple(req.axes))
    return Layout(tuple(req.axes), req.mesh, getattr(req, "a_spec", None))


# ---------------------------------------------------------------------------
# sharded products. Mesh level: A global with a sharding constraint (XLA's
# partitioner keeps matrix-vector products on the row shards); per shard:
# explicit collectives over the solve axes.


def _is_complex(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.complexfloating)


def _conj(x):
    return jnp.conj(x) if _is_complex(x) else x


def _fits(shape, lay: Layout, spec: P) -> bool:
    """Whether JAX can hold an array of `shape` in `spec` (every sharded
    dimension divisible by its axes' size)."""
    sizes = dict(zip(lay.mesh.axis_names, lay.mesh.axis_sizes))
    for dim, part in zip(shape, spec):
        names = () if part is None else (part if isinstance(part, tuple) else (part,))
        if dim % int(np.prod([sizes[a] for a in names] or [1])):
            return False
    return True


def keep(M, lay: Layout, spec: P | None = None):
    """M (a matrix, mesh level) constrained to `spec` (default A's layout),
    where JAX can hold it so; per shard, M unchanged. Under differentiation
    the constraint transposes to itself, so cotangents keep the layout."""
    if lay.per_shard:
        return M
    spec = lay.a_spec if spec is None else spec
    return _shard.constrain(M, lay.mesh, spec) if _fits(M.shape, lay, spec) else M


def _explicit(lay: Layout) -> bool:
    types = getattr(lay.mesh, "axis_types", ()) or ()
    explicit = getattr(jax.sharding.AxisType, "Explicit", None)
    return explicit is not None and any(t == explicit for t in types)


def like(out, v, lay: Layout):
    """out in v's sharding at mesh level on Explicit axes, where types
    carry shardings and a solve's tangent must have its right-hand side's
    (a no-op on Auto axes, where XLA propagates)."""
    if lay.per_shard or not _explicit(lay):
        return out
    return _shard.constrain(out, lay.mesh, jax.typeof(v).sharding.spec)


def _replicated(v, lay: Layout):
    """v replicated, on Explicit axes (Auto: left to XLA)."""
    if lay.per_shard or not _explicit(lay):
        return v
    return _shard.constrain(v, lay.mesh, P(*((None,) * v.ndim)))


def _my_rows(v, lay: Layout):
    """Per shard: this device's rows of a replicated (N, ...) array."""
    nloc = v.shape[0] // lay.nparties
    start = jax.lax.axis_index(lay.axes) * nloc
    return jax.lax.dynamic_slice_in_dim(v, start, nloc, axis=0)


def matvec(M, v, lay: Layout):
    """M v for M (N x N, or a row block per shard) and v (N,) or (N, K)
    replicated; the result replicated."""
    if not lay.per_shard:
        return like(keep(M, lay, lay.row_spec) @ _replicated(v, lay), v, lay)
    return jax.lax.all_gather(M @ v, lay.axes, axis=0, tiled=True)


def rmatvec(M, v, lay: Layout):
    """M^H v, a contraction over the sharded rows: per-device partial sums
    and one all-reduce of the (N, K) result; M is never transposed."""
    if not lay.per_shard:
        out = jnp.einsum("ij,i...->j...", _conj(keep(M, lay, lay.row_spec)), _replicated(v, lay))
        return like(out, v, lay)
    return jax.lax.psum(jnp.einsum("ij,i...->j...", _conj(M), _my_rows(v, lay)), lay.axes)


def symmul(M, v, lay: Layout):
    """sym(M) v = (M v + M^H v) / 2: the operator the engines invert. M
    is first kept in A's layout, so that its cotangent comes back there."""
    M = keep(M, lay)
    return (matvec(M, v, lay) + rmatvec(M, v, lay)) / 2


def mean_over_parties(r, lay: Layout):
    """Per shard, the mean of a replicated value over the solve axes. With
    shard_map(check_vma=False) each device's copy of a replicated cotangent
    is its own term of a sum; averaging them before one collective solve
    keeps the transposed solve linear per device (no-op at mesh level)."""
    return jax.lax.pmean(r, lay.axes) if lay.per_shard else r


def _ring_matmul_shard(x, y, axes, nparties):
    """Per shard: rows of X @ Y from row blocks x (M/P, K) and y (K/P, N).
    The row blocks of Y travel round the ring (ppermute), so each device
    holds at most two blocks at any time and never Y whole."""
    nloc = y.shape[0]  # rows of Y per device = the width of X's column blocks
    me = jax.lax.axis_index(axes)
    perm = [(j, (j - 1) % nparties) for j in range(nparties)]
    blk, acc = y, None
    for s in range(nparties):
        k = (me + s) % nparties  # blk holds Y's rows of device k
        part = jax.lax.dynamic_slice_in_dim(x, k * nloc, nloc, axis=1) @ blk
        acc = part if acc is None else acc + part
        if s + 1 < nparties:
            blk = jax.lax.ppermute(blk, axes, perm)
    return acc


def matmul(X, Y, lay: Layout):
    """X @ Y for X (M, K) and Y (K, N) in rows over the solve axes, the
    result in rows too. Mesh level through a shard_map of the ring product;
    where the device count does not divide M and K (jaxmg's results are
    then replicated anyway) a plain product."""
    if lay.per_shard:
        return _ring_matmul_shard(X, Y, lay.axes, lay.nparties)
    if X.shape[0] % lay.nparties or Y.shape[0] % lay.nparties:
        return X @ Y
    rows = lay.row_spec
    body = functools.partial(_ring_matmul_shard, axes=lay.axes, nparties=lay.nparties)
    return jax.shard_map(body, mesh=lay.mesh, in_specs=(rows, rows), out_specs=rows,
                         check_vma=False)(keep(X, lay, rows), keep(Y, lay, rows))


def ctranspose(M, lay: Layout):
    """M^H, in rows as M: per shard an all_to_all of (nloc x nloc) blocks."""
    if not lay.per_shard:
        return keep(_conj(M).T, lay, lay.row_spec)
    cols = jax.lax.all_to_all(M, lay.axes, split_axis=1, concat_axis=0, tiled=True)
    return _conj(cols.T)


def hermitian_part(M, lay: Layout):
    return (M + ctranspose(M, lay)) / 2


def _float0_zeros(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


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
        if not _is_complex(r):
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

    @jax.custom_jvp
    def f(A):
        return core(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        inv, status = f(A)
        s = hermitian_part(keep(dA, lay), lay)
        d_inv = -matmul(inv, matmul(s, inv, lay), lay)
        return (inv, status), (keep(d_inv, lay), _float0_zeros(status))

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

    @jax.custom_jvp
    def f(A, b):
        return core(A, b)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A, b), (dA, db) = primals, tangents
        F, fstatus, _ = _factor_of(fac, A)
        x, status, dx = _factored_jvp(fac, F, fstatus, A, b, keep(dA, lay), db, lay)
        return (x, status), (dx, _float0_zeros(status))

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
    d = jnp.real(jnp.sum(_conj(inv) * dA))
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

    @jax.custom_jvp
    def f(A, b):
        return core(A, b)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A, b), (dA, db) = primals, tangents
        F, fstatus, logdet = _factor_of(fac, A)
        dA = keep(dA, lay)
        x, status, dx = _factored_jvp(fac, F, fstatus, A, b, dA, db, lay)
        # logdet as a function of A (for higher orders); its tangent from the inverse
        logdet = logdet_of(A, F, fstatus, logdet)
        d_logdet = _tr_inv(inverse(A, F, fstatus), dA, lay, logdet)
        return (x, logdet, status), (dx, d_logdet, _float0_zeros(status))

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

    @jax.custom_jvp
    def f(A, b):
        return core(A, b)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A, b), (dA, db) = primals, tangents
        x, logdet, status = f(A, b)
        dA = keep(dA, lay)
        rhs = db - symmul(dA, x, lay)
        dx, _ = _hpd_solve(core, A, rhs, lay)
        d_logdet = _tr_inv(inverse(A)[0], dA, lay, logdet)
        return (x, logdet, status), (dx, d_logdet, _float0_zeros(status))

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
        return core(_conj(At), r)

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
    rows = _my_rows(w, lay) if lay.per_shard else w
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

    @jax.custom_jvp
    def f(A):
        return core(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        w, V, status = f(A)
        Vr = _cols_to_rows(V, lay) if v_cols else V
        s = hermitian_part(keep(dA, lay), lay)
        sv = matmul(s, Vr, lay)
        g = matmul(ctranspose(Vr, lay), sv, lay)
        dw = jnp.real(_col_sums(_conj(Vr) * sv, lay)).astype(w.dtype)
        dV = matmul(Vr, _eig_gaps(w, lay, Vr.dtype) * g, lay)
        dV = _rows_to_cols(dV, lay) if v_cols else keep(dV, lay)
        return (w, V, status), (dw, dV, _float0_zeros(status))

    return f


def eigvalsh(core_w, core_wv, lay: Layout, v_cols: bool = False):
    """Differentiable w, status = syevd(A, return_eigenvectors=False): the
    primal computes eigenvalues only; a derivative needs V, so its JVP runs
    the eigenvector solver once (then one ring product per tangent).
    v_cols: core_wv's V in columns per shard, as for syevd."""
    core_w = _batching.matrix_op(core_w)
    full = syevd(core_wv, lay, v_cols)

    @jax.custom_jvp
    def f(A):
        return core_w(A)

    @f.defjvp
    def f_jvp(primals, tangents):
        (A,), (dA,) = primals, tangents
        w, V, status = full(A)
        V = _cols_to_rows(V, lay) if v_cols else V
        # Re diag(V^H dA^H V) = Re diag(V^H dA V): no transpose of dA needed.
        dw = jnp.real(_col_sums(_conj(V) * matmul(keep(dA, lay), V, lay), lay)).astype(w.dtype)
        return (w, status), (dw, _float0_zeros(status))

    return f


def _pencil_products(V, dA, dB, lay: Layout, sym: bool):
    """(dA V, dB V) (with sym: sym(dA) V, sym(dB) V) in rows, and the real
    diagonals of V^H dA V and V^H dB V, for the generalized rules."""
    keep_or_sym = (lambda M: hermitian_part(keep(M, lay), lay)) if sym else (lambda M: keep(M, lay))
    sa, sb = matmul(keep_or_sym(dA), V, lay), matmul(keep_or_sym(dB), V, lay)
    da = jnp.real(_col_sums(_conj(V) * sa, lay))
    db = jnp.real(_col_sums(_conj(V) * sb, lay))
    return sa, sb, da, db


def _pencil_rule(primal, jvp):
    """primal(A, B) with jvp(A, B, dA, dB) -> (outputs, tangents) as its JVP."""
    f = jax.custom_jvp(primal)
    f.defjvp(lambda primals, tangents: jvp(*primals, *tangents))
    return f


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

    def jvp(A, B, dA, dB):
        w, V, status = f(A, B)
        Vr = _rows_of(V, lay, v_cols)
        sa, sb, da, db = _pencil_products(Vr, dA, dB, lay, sym=True)
        g = matmul(ctranspose(Vr, lay), sa - sb * w.astype(Vr.dtype)[None, :], lay)
        dV = matmul(Vr, _eig_gaps(w, lay, Vr.dtype) * g, lay) - Vr * (db / 2).astype(Vr.dtype)
        dV = _rows_to_cols(dV, lay) if v_cols else keep(dV, lay)
        return (w, V, status), ((da - w * db).astype(w.dtype), dV, _float0_zeros(status))

    f = _pencil_rule(_batching.matrix_op(core), jvp)
    return f


def generalized_eigvalsh(core_w, core_wv, lay: Layout, v_cols: bool = False):
    """Differentiable w, status = core_w(A, B), eigenvalues only: the JVP
    runs core_wv (w, V, status) once, then dw = Re diag(V^H dA V) -
    w Re diag(V^H dB V) (the diagonal needs no symmetrization): two ring
    products per tangent."""
    full = generalized_eigh(core_wv, lay, v_cols)

    def jvp(A, B, dA, dB):
        w, V, status = full(A, B)
        _, _, da, db = _pencil_products(_rows_of(V, lay, v_cols), dA, dB, lay, sym=False)
        return (w, status), ((da - w * db).astype(w.dtype), _float0_zeros(status))

    return _pencil_rule(_batching.matrix_op(core_w), jvp)


def syevd_local(body, axes, v_layout="rows", values_body=None):
    """The per-shard syevd forms (syevd_shardmap_ctx inside the caller's
    shard_map): body(a) -> (w, V block, status) with V in `v_layout`
    ("rows": (N/P, N); "cols": (N, N/P)); with values_body(a) -> (w,
    status) (return_eigenvectors=False) the eigenvalues alone, whose
    derivative runs body once."""
    lay = Layout(tuple(axes))
    cols = v_layout == "cols"
    if values_body is not None:
        return eigvalsh(values_body, body, lay, cols)
    return syevd(body, lay, cols)


# ---------------------------------------------------------------------------
# wiring into _ops: the cores there take a static request last and return
# (x, status, logdet or None), (inv, status), (w, V or None, status).


def _replace(req, **fields):
    return dataclasses.replace(req, **{k: v for k, v in fields.items() if hasattr(req, k)})


def _with_opt(req, name, value):
    opts = tuple((k, v) for k, v in req.opts if k != name) + ((name, value),)
    return _replace(req, opts=opts)


def differentiable(op: str, core, potri_core=None, factored=None):
    """A core of _ops (`core(*arrays, req)`) with the same signature and
    outputs, differentiable and batchable. potrs with the request option
    logdet needs potri_core (the potri core, same convention) for logdet's
    derivative. factored(req) -> Factored or None: potrs's factor ops for
    the request (None: the rules that refactor)."""
    if op == "potrs":
        def f(A, b, req):
            lay = layout_of(req)
            fac = factored(req) if factored is not None else None
            if not req.opt("logdet", False):
                x, status = potrs(lambda A, b: core(A, b, req)[:2], lay, fac)(A, b)
                return x, status, None
            inv_req = _replace(req, op="potri", b_spec=None, b_vector=False, opts=())

            def reordered(A, b):
                x, status, logdet = core(A, b, req)
                return x, logdet, status

            x, logdet, status = potrs_logdet(
                reordered, lambda A: potri_core(A, inv_req), lay, fac)(A, b)
            return x, status, logdet
    elif op == "potri":
        def f(A, req):
            return potri(lambda A: core(A, req), layout_of(req))(A)
    elif op == "syevd":
        def f(A, req):
            lay = layout_of(req)
            if req.opt("jobz", True):
                return syevd(lambda A: core(A, req), lay)(A)
            full = _with_opt(req, "jobz", True)
            w, status = eigvalsh(lambda A: core(A, req)[::2], lambda A: core(A, full), lay)(A)
            return w, None, status
    else:
        raise ValueError(f"jaxmg: no derivative rule for {op!r}")
    f.__name__ = f"differentiable_{op}"
    return f


def differentiable_local(op: str, body, axes, potri_body=None, factored=None):
    """The per-shard form (inside the caller's shard_map), for the bodies of
    the *_shardmap_ctx functions with their statics closed over:
    potrs: body(a, b) -> (x, status, logdet or None) [potri_body(a) ->
    (inv, status), given exactly when logdet is wanted; factored: the
    per-shard Factored, or None to refactor]; potri: body(a)
    -> (inv, status), this device's rows; syevd: body(a) -> (w, V,
    status) with V in rows (N/P, N). axes: the resolved solve axes."""
    lay = Layout(tuple(axes))
    if op == "potrs":
        if potri_body is None:
            def f(a, b):
                x, status = potrs(lambda a, b: body(a, b)[:2], lay, factored)(a, b)
                return x, status, None
            return f

        def reordered(a, b):
            x, status, logdet = body(a, b)
            return x, logdet, status

        g = potrs_logdet(reordered, potri_body, lay, factored)
        return lambda a, b: (lambda x, ld, st: (x, st, ld))(*g(a, b))
    if op == "potri":
        return potri(body, lay)
    if op == "syevd":  # body(a) -> (w, V rows (N/P, N), status): the "rows" layout of V
        return syevd(body, lay)
    raise ValueError(f"jaxmg: no per-shard derivative rule for {op!r}")
