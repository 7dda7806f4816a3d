"""Row-block building blocks shared by the composed routes.

Every function below runs per shard, inside the one shard_map that
`program` opens: x is this device's (M / P, N) row block of an M x N
matrix, and an N x N matrix is held as this device's (N / P, N) rows.
Nothing here holds more than one more (N / P, N) panel (or an (N, N / P)
column panel) beside its operands, and every collective is a ring step
(ppermute), an all-gather of one panel, an all-to-all of an N x N / P
block or an all-reduce of a scalar or one panel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ..rules import products as _products

STATUS_NONFINITE = -1


# ---------------------------------------------------------------------------
# mesh level: checks and the one shard_map


def solve_axes(mesh, axes) -> tuple[str, ...]:
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    if not axes:
        raise ValueError("jaxmg.composed: axes must name at least one mesh axis")
    for ax in axes:
        if ax not in mesh.axis_names:
            raise ValueError(f"jaxmg.composed: axis {ax!r} is not an axis of the mesh "
                             f"{tuple(mesh.axis_names)}")
    return axes


def parties(mesh, axes) -> int:
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    return int(np.prod([sizes[a] for a in axes]))


def row_spec(axes) -> P:
    return P(axes if len(axes) > 1 else axes[0], None)


def check_tall(A, mesh, axes, op: str) -> int:
    """The device count P on `axes`, after checking that A is a tall
    floating matrix whose M and N both split over P devices."""
    shape = np.shape(A)
    dtype = jnp.dtype(A.dtype if hasattr(A, "dtype") else np.asarray(A).dtype)
    if len(shape) != 2:
        raise ValueError(f"jaxmg.composed.{op}: A must be a matrix (M, N), got shape {shape}")
    if not jnp.issubdtype(dtype, jnp.inexact) or dtype not in (
            jnp.float32, jnp.float64, jnp.complex64, jnp.complex128):
        raise TypeError(f"jaxmg.composed.{op}: A's dtype must be float32, float64, complex64 "
                        f"or complex128, got {dtype}")
    m, n = shape
    if m < n:
        raise ValueError(f"jaxmg.composed.{op}: A must be tall (M >= N), got {shape}; "
                         "pass A^H for a wide matrix")
    p = parties(mesh, axes)
    if m % p or n % p or n == 0:
        raise ValueError(f"jaxmg.composed.{op}: M and N must be positive multiples of the "
                         f"{p} devices on axes {axes}, got A of shape {shape}")
    return p


@functools.lru_cache(maxsize=64)
def program(body, mesh, axes, n_out_rows: int, n_out_rep: int, n_in: int = 1, **statics):
    """jit(shard_map(body)) with A (and the other n_in - 1 operands) in
    rows: body(a, ..., axes=, p=, **statics) returns n_out_rows
    row-sharded blocks, then n_out_rep replicated values. Traced with f32
    products at full precision (TF32 would break orthogonality)."""
    rows = row_spec(axes)
    out_specs = (rows,) * n_out_rows + (P(),) * n_out_rep
    fn = functools.partial(body, axes=axes, p=parties(mesh, axes), **statics)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(rows,) * n_in, out_specs=out_specs,
                           check_vma=False)

    def run(*operands):
        with jax.default_matmul_precision("highest"):
            return mapped(*operands)

    return jax.jit(run)


# ---------------------------------------------------------------------------
# per shard


def layout(axes) -> _products.Layout:
    return _products.Layout(tuple(axes))


def conj(x):
    return jnp.conj(x) if jnp.issubdtype(x.dtype, jnp.complexfloating) else x


def me(axes):
    return jax.lax.axis_index(axes)


def _ring(p):
    """Each device sends to the one before it on the ring."""
    return [(j, (j - 1) % p) for j in range(p)]


def gram(x, y, axes, p):
    """Rows of X^H Y (X (M, N), Y (M, K) in rows): this device's (N / P, K)
    block. A ring reduce-scatter fused with the products: at step s each
    device adds its rows' share of block (me + s + 1) mod P to the partial
    sum it received and passes it on, so no device holds X^H Y whole."""
    nloc = x.shape[1] // p

    def share(s):
        blk = (me(axes) + s + 1) % p
        return conj(jax.lax.dynamic_slice_in_dim(x, blk * nloc, nloc, axis=1)).T @ y

    def step(s, acc):
        return share(s) + jax.lax.ppermute(acc, axes, _ring(p))

    # a loop, not unrolled: XLA would hoist the P products and hold them all
    return jax.lax.fori_loop(1, p, step, share(0))


def matmul(x, s_rows, axes):
    """Rows of X S for X in rows and S (N, K) in rows (the ring product)."""
    return _products.matmul(x, s_rows, layout(axes))


def ctranspose(s_rows, axes):
    """Rows of S^H for S (N, N) in rows."""
    return _products.ctranspose(s_rows, layout(axes))


def hermitian_part(s_rows, axes):
    return (s_rows + ctranspose(s_rows, axes)) / 2


def eye_rows(n, dtype, axes, p):
    """This device's rows of the N x N identity."""
    nloc = n // p
    first = me(axes) * nloc
    return (jnp.arange(nloc)[:, None] + first == jnp.arange(n)[None, :]).astype(dtype)


def sum_sq(x, axes):
    """||X||_F^2 over the whole row-sharded matrix, replicated."""
    return jax.lax.psum(jnp.sum(jnp.abs(x) ** 2), axes)


def all_finite(x, axes):
    bad = jnp.sum(~jnp.isfinite(x)).astype(jnp.int32)
    return jax.lax.psum(bad, axes) == 0


def cholesky(g, axes, p):
    """(rows of R, status) with G = R^H R, R upper triangular, for G
    (N, N) Hermitian in rows: a right-looking block Cholesky over the
    P row blocks. At step j the owner of block row j factors its diagonal
    block and forms R's block row j; that (N / P, N) panel is all-reduced
    (zero elsewhere) and every later block row takes its update from it.
    status k > 0: row k - 1 of R is not finite and positive, the first
    row of the block in which the factorization broke down (the leading
    minor of order k + nloc - 1 or smaller is not positive definite);
    R is then NaN from that block on."""
    nloc, n = g.shape
    mine_idx = me(axes)
    col = jnp.arange(n)[None, :]

    def step(j, carry):
        g, r = carry
        lo = j * nloc
        low = jax.lax.linalg.cholesky(jax.lax.dynamic_slice_in_dim(g, lo, nloc, axis=1),
                                      symmetrize_input=False)
        # every column, then the ones left of the diagonal block zeroed and
        # the diagonal block set to L^H exactly (triangular, real diagonal)
        panel = jax.lax.linalg.triangular_solve(low, g, left_side=True, lower=True)
        panel = jnp.where(col >= lo + nloc, panel, 0)
        panel = jax.lax.dynamic_update_slice_in_dim(panel, conj(low).T, lo, axis=1)
        mine = mine_idx == j
        r = jnp.where(mine, panel, r)
        panel = jax.lax.psum(jnp.where(mine, panel, 0), axes)
        r_jme = jax.lax.dynamic_slice_in_dim(panel, mine_idx * nloc, nloc, axis=1)
        g = g - jnp.where(mine_idx > j, conj(r_jme).T @ panel, 0)
        return g, r

    _, r = jax.lax.fori_loop(0, p, step, (g, jnp.zeros_like(g)))
    return r, _first_bad_diagonal(r, axes, p)


def _first_bad_diagonal(r, axes, p):
    nloc, n = r.shape
    rows = jnp.arange(nloc) + me(axes) * nloc
    diag = jnp.take_along_axis(r, rows[:, None], axis=1)[:, 0]
    bad = ~(jnp.isfinite(diag) & (jnp.real(diag) > 0))
    first = jax.lax.pmin(jnp.min(jnp.where(bad, rows, n)), axes)
    return jnp.where(first < n, first + 1, 0).astype(jnp.int32)


def right_solve_upper(x, r, axes, p):
    """X R^-1 for X in rows and R (N, N) upper triangular in rows: column
    block j of the result needs R's column panel j (N x N / P, one
    all-gather) and the blocks before it (the later ones are still zero
    in the result, so the product may run over all of them)."""
    nloc = r.shape[0]

    def step(j, y):
        lo = j * nloc
        col = jax.lax.all_gather(jax.lax.dynamic_slice_in_dim(r, lo, nloc, axis=1), axes,
                                 axis=0, tiled=True)
        rhs = jax.lax.dynamic_slice_in_dim(x, lo, nloc, axis=1) - y @ col
        blk = jax.lax.linalg.triangular_solve(jax.lax.dynamic_slice_in_dim(col, lo, nloc),
                                              rhs, left_side=False, lower=False)
        return jax.lax.dynamic_update_slice_in_dim(y, blk, lo, axis=1)

    return jax.lax.fori_loop(0, p, step, jnp.zeros_like(x))


def left_solve_upper(r, y, axes, p):
    """R^-1 Y for R (N, N) upper triangular in rows and Y (N, K)
    replicated: replicated. Step j (last block first) needs block row j
    of R, its owner's, and the blocks of the result after it, which every
    device holds; before them the result is still zero, so the product
    may run over all of R's row."""
    nloc = r.shape[0]
    mine_idx = me(axes)

    def step(k, x):
        j = p - 1 - k
        lo = j * nloc
        rhs = jax.lax.dynamic_slice_in_dim(y, lo, nloc) - r @ x
        blk = jax.lax.linalg.triangular_solve(jax.lax.dynamic_slice_in_dim(r, lo, nloc, axis=1),
                                              rhs, left_side=True, lower=False)
        blk = jax.lax.psum(jnp.where(mine_idx == j, blk, 0), axes)
        return jax.lax.dynamic_update_slice_in_dim(x, blk, lo, axis=0)

    return jax.lax.fori_loop(0, p, step, jnp.zeros_like(y))


def worst(*statuses):
    """One status from several: -1 (non-finite) before any failure k > 0,
    before 0."""
    s = jnp.int32(0)
    for t in statuses:
        t = jnp.asarray(t, jnp.int32)
        s = jnp.where((s == 0) | (t == STATUS_NONFINITE), t, s)
    return s


def nan_where(bad, *xs):
    return tuple(jnp.where(bad, jnp.nan, x).astype(x.dtype) for x in xs)
