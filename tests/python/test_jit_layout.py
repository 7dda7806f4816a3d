"""Under the caller's jit on Auto mesh axes (where jax.typeof shows no
sharding), results come back in the same layout as eagerly: x in b's layout
for every op with a b (potrs, lu_solve, least_squares and their global ctx
forms), matrix results in A's. JAXMg 1.4.1 does the same; jaxmg returned x
replicated under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmg
from helpers import randn, spd

GRID = P("pr", "pc")
N, M = 8, 12


@pytest.fixture(scope="module")
def grid():
    return Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("pr", "pc"))


def _put(x, m, spec):
    return jax.device_put(x, NamedSharding(m, spec))


def _solves(m):
    """op -> (fn(A, b) -> x, A's shape)."""
    kw = dict(mesh=m, matrix_specs=GRID)
    return {
        "potrs": (lambda A, b: jaxmg.potrs(A, b, 64, **kw), (N, N)),
        "lu_solve": (lambda A, b: jaxmg.lu_solve(A, b, 64, **kw), (N, N)),
        "least_squares": (lambda A, b: jaxmg.least_squares(A, b, 64, **kw), (M, N)),
        "potrs_ctx": (lambda A, b: jaxmg.potrs_shardmap_ctx(A, b, 64, **kw)[1], (N, N)),
        "lu_solve_ctx": (lambda A, b: jaxmg.lu_solve_shardmap_ctx(A, b, 64, **kw)[1], (N, N)),
        "least_squares_ctx": (lambda A, b: jaxmg.least_squares_shardmap_ctx(A, b, 64, **kw)[2],
                              (M, N)),
        # no spec at all: the mesh and A's spec from A (P("pr", "pc") is also the default)
        "lu_solve_inferred": (lambda A, b: jaxmg.lu_solve(A, b, 64), (N, N)),
    }


def _matrix(op, rng, shape):
    if op.startswith("potrs"):
        return spd(rng, shape[0], np.float64)
    return randn(rng, shape, np.float64) + 3 * np.eye(*shape)


B_SPECS = {"rows": P("pr", None), "both_axes": P(("pr", "pc"), None), "cols_axis": P("pc", None),
           "replicated": P(None, None), "vector_rows": P("pr"), "vector_replicated": P(None)}


def _same_layout(got, want, ndim):
    assert got.sharding.is_equivalent_to(want.sharding, ndim), (got.sharding, want.sharding)


@pytest.mark.parametrize("b_layout", list(B_SPECS))
@pytest.mark.parametrize("op", ["potrs", "lu_solve", "least_squares", "potrs_ctx",
                                "lu_solve_ctx", "least_squares_ctx", "lu_solve_inferred"])
def test_x_in_b_layout_under_jit_as_eagerly(rng, grid, op, b_layout):
    fn, shape = _solves(grid)[op]
    spec = B_SPECS[b_layout]
    A = _matrix(op, rng, shape)
    b = randn(rng, (shape[0],) + ((3,) if len(spec) == 2 else ()), np.float64)
    Aj, bj = _put(A, grid, GRID), _put(b, grid, spec)
    eager, jitted = fn(Aj, bj), jax.jit(fn)(Aj, bj)
    _same_layout(jitted, eager, b.ndim)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12, atol=1e-12)
    # eagerly x is in b's layout wherever that can hold x's N rows (all of these can)
    _same_layout(eager, bj, b.ndim)


def test_the_issue_example_is_not_replicated(rng, grid):
    A = randn(rng, (N, N), np.float64) + 3 * np.eye(N)
    b = randn(rng, (N, 2), np.float64)
    Aj, bj = _put(A, grid, GRID), _put(b, grid, P("pr", None))
    x = jax.jit(lambda a, b: jaxmg.lu_solve(a, b, 64, mesh=grid, matrix_specs=GRID))(Aj, bj)
    assert not x.sharding.is_fully_replicated
    assert x.sharding.is_equivalent_to(NamedSharding(grid, P("pr", None)), 2)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, b), rtol=1e-10)


def test_least_squares_x_that_b_layout_cannot_hold(rng, grid):
    """N = 5 rows do not split over "pr" (2): replicated, eagerly and under jit."""
    A = randn(rng, (M, 5), np.float64) + np.eye(M, 5)
    b = randn(rng, (M, 2), np.float64)
    Aj, bj = _put(A, grid, P("pr", None)), _put(b, grid, P("pr", None))
    fn = lambda a, b: jaxmg.least_squares(a, b, 4, mesh=grid, matrix_specs=P("pr", None))  # noqa: E731
    eager, jitted = fn(Aj, bj), jax.jit(fn)(Aj, bj)
    assert eager.sharding.is_fully_replicated and jitted.sharding.is_fully_replicated
    np.testing.assert_allclose(np.asarray(jitted), np.linalg.lstsq(A, b, rcond=None)[0],
                               rtol=1e-10)


def test_grad_and_vmap_under_jit_keep_b_layout(rng, grid):
    A = randn(rng, (N, N), np.float64) + 3 * np.eye(N)
    b = randn(rng, (N, 3), np.float64)
    Aj, bj = _put(A, grid, GRID), _put(b, grid, P("pr", None))
    solve = lambda a, b: jaxmg.lu_solve(a, b, 64, mesh=grid, matrix_specs=GRID)  # noqa: E731
    gb = jax.jit(jax.grad(lambda a, b: jnp.sum(solve(a, b) ** 2), 1))(Aj, bj)
    ref = jax.grad(lambda b: jnp.sum(jnp.linalg.solve(A, b) ** 2))(b)
    np.testing.assert_allclose(np.asarray(gb), ref, rtol=1e-9)
    cols = jax.vmap(solve, in_axes=(None, 1), out_axes=1)
    _same_layout(jax.jit(cols)(Aj, bj), cols(Aj, bj), 2)


def _matrix_results(m):
    """op -> (fn(A) -> a matrix result with A's rows, A's shape)."""
    kw = dict(mesh=m, matrix_specs=GRID)
    return {
        "potri": (lambda A: jaxmg.potri(A, 64, **kw), (N, N)),
        "syevd": (lambda A: jaxmg.syevd(A, 64, **kw)[1], (N, N)),
        "qr": (lambda A: jaxmg.qr(A, 64, **kw)[0], (M, N)),
        "gesvd": (lambda A: jaxmg.gesvd(A, 64, **kw)[0], (M, N)),
        "polar": (lambda A: jaxmg.polar(A, 64, **kw)[0], (M, N)),
        "qr_ctx": (lambda A: jaxmg.qr_shardmap_ctx(A, 64, **kw)[0], (M, N)),
        "polar_ctx": (lambda A: jaxmg.polar_shardmap_ctx(A, 64, **kw)[0], (M, N)),
    }


@pytest.mark.parametrize("op", ["potri", "syevd", "qr", "gesvd", "polar", "qr_ctx", "polar_ctx"])
def test_matrix_results_in_a_layout_under_jit_as_eagerly(rng, grid, op):
    fn, shape = _matrix_results(grid)[op]
    A = spd(rng, N, np.float64) if op in ("potri", "syevd") else _matrix(op, rng, shape)
    Aj = _put(A, grid, GRID)
    eager, jitted = fn(Aj), jax.jit(fn)(Aj)
    _same_layout(jitted, eager, 2)
    _same_layout(eager, Aj, 2)
