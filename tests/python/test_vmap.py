"""vmap through the differentiable ops (jaxmg._batching): batches over A, b
or both against a Python loop; a batch over b alone is one solve (one FFI
call, no loop); a batched A is one traced call in one loop; vmap of grad
and grad of vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg
from jaxmg import _autodiff as ad
from helpers import REP, ROW, hermitian, mesh, randn, spd

B = 3


def _potrs(m):
    core = lambda A, b: jaxmg.potrs(A, b, None, m, (ROW, REP), return_status=True)  # noqa: E731
    return ad.potrs(core, ad.Layout(("x",), m))


def _ffi_calls_and_loops(fn, *args, target="jaxmg_potrs"):
    text = jax.jit(fn).lower(*args).as_text()
    return text.count(target), text.count("stablehlo.while")


def _loop(fn, in_axes, *args):
    """The reference: one call per element, stacked."""
    size = next(a.shape[ax] for a, ax in zip(args, in_axes) if ax is not None)
    outs = [fn(*(a if ax is None else np.take(a, i, axis=ax) for a, ax in zip(args, in_axes)))
            for i in range(size)]
    return jax.tree.map(lambda *xs: np.stack(xs), *outs)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("in_axes", [(None, 0), (0, None), (0, 0), (None, 1)], ids=str)
def test_potrs_vmap_matches_loop(rng, dtype, in_axes):
    m, n = mesh(4), 8
    f = _potrs(m)
    As = np.stack([spd(rng, n, dtype) for _ in range(B)])
    bs = randn(rng, (B, n, 2), dtype)
    A = As if in_axes[0] == 0 else As[0]
    b = bs if in_axes[1] == 0 else (np.moveaxis(bs, 0, 1) if in_axes[1] == 1 else bs[0])
    x, status = jax.jit(jax.vmap(f, in_axes))(A, b)
    rx, rs = _loop(jax.jit(f), in_axes, A, b)
    assert x.shape == (B, n, 2) and status.shape == (B,)
    np.testing.assert_allclose(np.asarray(x), rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(status), 0)


def test_potrs_vmap_over_b_is_one_solve(rng):
    """A batch of right-hand sides for one A folds into b's columns: one FFI
    call and no loop in the program; a batched A is one call in one loop."""
    m, n = mesh(4), 8
    f = _potrs(m)
    A, bs = spd(rng, n, np.float64), randn(rng, (B, n, 2), np.float64)
    assert _ffi_calls_and_loops(jax.vmap(f, (None, 0)), A, bs) == (1, 0)
    assert _ffi_calls_and_loops(jax.vmap(jax.vmap(f, (None, 0)), (None, 0)), A, bs[None]) == (1, 0)
    As = np.stack([A] * B)
    assert _ffi_calls_and_loops(jax.vmap(f), As, bs) == (1, 1)


def test_potrs_vmap_vector_rhs_and_nested(rng):
    m, n = mesh(2), 6
    f = _potrs(m)
    As = np.stack([spd(rng, n, np.float64) for _ in range(2)])
    bs = randn(rng, (2, B, n), np.float64)
    x, status = jax.jit(jax.vmap(jax.vmap(f, (None, 0)), (0, 0)))(As, bs)
    ref = np.stack([[np.linalg.solve(As[i], bs[i, j]) for j in range(B)] for i in range(2)])
    np.testing.assert_allclose(np.asarray(x), ref, rtol=1e-12, atol=1e-12)
    assert status.shape == (2, B)


def test_potrs_failing_element_of_a_batch(rng):
    """One failing matrix in a batch: its status and NaN, the others solved."""
    m, n = mesh(2), 6
    f = _potrs(m)
    As = np.stack([spd(rng, n, np.float64) for _ in range(B)])
    As[1, 2, 2] = -10.0
    bs = randn(rng, (B, n, 1), np.float64)
    x, status = jax.jit(jax.vmap(f))(As, bs)
    status = np.asarray(status)
    assert status[1] > 0 and status[0] == 0 and status[2] == 0
    assert np.all(np.isnan(np.asarray(x)[1])) and np.all(np.isfinite(np.asarray(x)[[0, 2]]))


def test_grad_of_vmap_and_vmap_of_grad(rng):
    m, n = mesh(4), 8
    f = _potrs(m)
    As = np.stack([spd(rng, n, np.float64) for _ in range(B)])
    bs = randn(rng, (B, n, 2), np.float64)

    def loss(A, b):
        return jnp.sum(f(A, b)[0] ** 2)

    def ref(A, b):
        return jnp.sum(jnp.linalg.solve((A + A.T) / 2, b) ** 2)

    g1 = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(As, bs)
    g2 = jax.jit(jax.grad(lambda A, b: jnp.sum(jax.vmap(loss)(A, b)), argnums=(0, 1)))(As, bs)
    r = jax.vmap(jax.grad(ref, argnums=(0, 1)))(As, bs)
    for g in (g1, g2):
        for a, e in zip(g, r):
            np.testing.assert_allclose(np.asarray(a), e, rtol=1e-10, atol=1e-10 * np.abs(e).max())
    # a batch over b alone, differentiated: still one factorization per solve
    gb = jax.jit(jax.vmap(jax.grad(loss, argnums=1), (None, 0)))(As[0], bs)
    np.testing.assert_allclose(np.asarray(gb), jax.vmap(jax.grad(ref, 1), (None, 0))(As[0], bs)
                               , rtol=1e-10, atol=1e-12)


def test_potri_and_syevd_vmap_match_loop(rng):
    m, n = mesh(4), 8
    lay = ad.Layout(("x",), m)
    potri = ad.potri(lambda A: jaxmg.potri(A, None, m, (ROW,), return_status=True), lay)
    syevd = ad.syevd(lambda A: jaxmg.syevd(A, None, m, (ROW,), return_status=True), lay)
    As = np.stack([spd(rng, n, np.complex128) for _ in range(B)])
    inv, status = jax.jit(jax.vmap(potri))(As)
    np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(As), rtol=1e-10, atol=1e-12)
    assert status.shape == (B,)
    Hs = np.stack([hermitian(rng, n, np.complex128) for _ in range(B)])
    w, V, status = jax.jit(jax.vmap(syevd))(Hs)
    np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(Hs), atol=1e-12 * n)
    V = np.asarray(V)
    np.testing.assert_allclose(Hs @ V, V * np.asarray(w)[:, None, :], atol=1e-10)
    # vmap of the eigenvalue gradient
    g = jax.jit(jax.vmap(jax.grad(lambda A: syevd(A)[0][0])))(Hs)
    r = jax.vmap(jax.grad(lambda A: jnp.linalg.eigvalsh(A)[0]))(Hs)
    np.testing.assert_allclose(np.asarray(g), r, atol=1e-10)
