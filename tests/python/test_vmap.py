"""vmap through the differentiable ops (jaxmg.rules.batching): batches over A, b
or both against a Python loop; a batch over b alone is one solve (one FFI
call, no loop); a batched A is one FFI call whose buffers carry the batch
(no loop in the program) for every op; nested and empty batches; vmap of
grad and grad of vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmg
from jaxmg.rules import hermitian as ad
from helpers import REP, ROW, check_solve, eps, hermitian, mesh, randn, spd, up

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
    assert _ffi_calls_and_loops(jax.vmap(f), As, bs) == (1, 0)


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


def test_jacobians_fold_into_one_solve(rng):
    """jax.jacfwd / jacrev of x(b) vmap N tangents / cotangents: they fold
    into one solve with N right-hand sides (no loop); the Hessian of a loss
    works too."""
    m, n = mesh(4), 8
    A, b = spd(rng, n, np.float64), randn(rng, (n,), np.float64)
    f = lambda b: jaxmg.potrs(A, b, None, m, (ROW, REP))  # noqa: E731
    inv = np.linalg.inv(A)
    for jac in (jax.jacfwd(f), jax.jacrev(f)):
        np.testing.assert_allclose(np.asarray(jax.jit(jac)(b)), inv, atol=1e-13)
        # one factorization (issue 16's factor reuse), the primal's solve and one batched solve
        assert _ffi_calls_and_loops(jac, b, target="jaxmg_chol_factor") == (1, 0)
        assert _ffi_calls_and_loops(jac, b, target="jaxmg_chol_solve") == (2, 0)
        assert _ffi_calls_and_loops(jac, b) == (0, 0)
    hess = jax.jit(jax.hessian(lambda b: jnp.sum(f(b) ** 2)))(b)
    np.testing.assert_allclose(np.asarray(hess), 2 * inv @ inv, atol=1e-12)


# ---- a batched A: one FFI call for the whole batch, every op ----------------

NB = 3  # batch size of the tests below


def _custom_call_shapes(fn, *args, target):
    """The operand shapes of every custom call to `target` in the lowered
    program, e.g. ["3x2x8xf64", "3x8x2xf64", "3x2xi32"]."""
    import re

    text = jax.jit(fn).lower(*args).as_text()
    calls = [line for line in text.splitlines() if f"@{target}" in line or f'"{target}"' in line]
    sig = [line[line.rindex("} : (") :] for line in calls]  # the operand and result types
    return [re.findall(r"tensor<([0-9x]*(?:f|i|complex)[^>]*)>", t) for t in sig], text


def _general(op, m):
    g = jaxmg
    if op == "lu_solve":
        return lambda A, b: g.lu_solve(A, b, 2, m, (ROW, REP), return_status=True)
    if op == "least_squares":
        return lambda A, b: g.least_squares(A, b, 2, m, (ROW, REP), return_status=True)
    if op == "qr":
        return lambda A: g.qr(A, 2, m, (ROW,), return_status=True)
    if op == "gesvd":
        return lambda A: g.gesvd(A, 2, m, (ROW,), return_status=True)
    if op == "polar":
        return lambda A: g.polar(A, 2, m, (ROW,), return_status=True)
    if op == "potri":
        return lambda A: g.potri(A, 2, m, (ROW,), return_status=True)
    if op == "syevd":
        return lambda A: g.syevd(A, 2, m, (ROW,), return_status=True)
    return lambda A, b: g.potrs(A, b, 2, m, (ROW, REP), return_status=True)


def _inputs(rng, op, shape, n, dtype):
    """A batch of inputs of `shape` (leading dims) for op, and b where it takes one."""
    count = int(np.prod(shape))
    if op in ("potrs", "potri"):
        A = np.stack([spd(rng, n, dtype) for _ in range(count)])
    elif op == "syevd":
        A = np.stack([hermitian(rng, n, dtype) for _ in range(count)])
    elif op in ("least_squares", "qr", "gesvd", "polar"):
        A = randn(rng, (count, n + 4, n), dtype)
    else:
        A = randn(rng, (count, n, n), dtype) + 4 * np.eye(n, dtype=dtype)
    A = A.reshape(tuple(shape) + A.shape[1:])
    if op in ("potrs", "lu_solve", "least_squares"):
        return A, randn(rng, tuple(shape) + (A.shape[-2], 2), dtype)
    return A, None


OPS = ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar")


@pytest.mark.parametrize("op", OPS)
def test_batched_a_is_one_call_for_every_op(rng, op):
    """vmap over A: one custom call per op, whose every operand carries the
    batch in front, no loop in the program, and the results of a Python loop
    over the unbatched op."""
    m, n, dtype = mesh(2), 8, np.float64
    f = _general(op, m)
    A, b = _inputs(rng, op, (NB,), n, dtype)
    args = (A,) if b is None else (A, b)
    shapes, text = _custom_call_shapes(jax.vmap(f), *args, target=f"jaxmg_{op}")
    assert len(shapes) == 1, f"{len(shapes)} calls to jaxmg_{op}"
    assert "stablehlo.while" not in text
    assert shapes[0] and all(s.startswith(f"{NB}x") for s in shapes[0]), shapes[0]
    got = jax.jit(jax.vmap(f))(*args)
    ref = _loop(jax.jit(f), (0,) * len(args), *args)
    for x, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(x), r, rtol=1e-11, atol=1e-11 * max(1, np.abs(r).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128],
                         ids=lambda d: np.dtype(d).name)
def test_batched_potrs_and_syevd_every_dtype(rng, dtype):
    """Each element of a batch solved as its own system (the defining
    equations, complex Hermitian included), 4 devices, an off-tile size."""
    m, n = mesh(4), 12
    A, b = _inputs(rng, "potrs", (NB,), n, dtype)
    x, st = jax.jit(jax.vmap(_general("potrs", m)))(A, b)
    st = np.asarray(st)
    assert st.shape == (NB,) and np.all(st == 0)
    for i in range(NB):
        check_solve(A[i], np.asarray(x)[i], b[i], dtype)
    H, _ = _inputs(rng, "syevd", (NB,), n, dtype)
    w, V, st = jax.jit(jax.vmap(_general("syevd", m)))(H)
    assert np.all(np.asarray(st) == 0)
    w, V = up(w), up(V)
    tol = 200 * n * eps(dtype) * np.abs(up(H)).max()
    for i in range(NB):
        np.testing.assert_allclose(w[i], np.linalg.eigvalsh(up(H[i])), atol=tol)
        np.testing.assert_allclose(up(H[i]) @ V[i], V[i] * w[i], atol=10 * tol)


def test_nested_vmap_over_a_is_one_call(rng):
    """Two vmaps over A: one call, its two batch dimensions folded into one."""
    m, n = mesh(4), 8
    f = _general("potrs", m)
    A, b = _inputs(rng, "potrs", (2, NB), n, np.float64)
    g = jax.vmap(jax.vmap(f))
    shapes, text = _custom_call_shapes(g, A, b, target="jaxmg_potrs")
    assert len(shapes) == 1 and all(s.startswith(f"{2 * NB}x") for s in shapes[0])
    x, st = jax.jit(g)(A, b)
    x = np.asarray(x)
    assert st.shape == (2, NB)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-11, atol=1e-12)


def test_batch_of_failing_and_non_finite_elements(rng):
    """In one batched call: a matrix that is not positive definite (its own
    status and NaN), one with a NaN (status -1, NaN), and good ones solved."""
    m, n = mesh(2), 6
    A, b = _inputs(rng, "potrs", (4,), n, np.float64)
    A[1, 2, 2] = -10.0
    A[2, 0, 1] = A[2, 1, 0] = np.nan
    x, st = jax.jit(jax.vmap(_general("potrs", m)))(A, b)
    x, st = np.asarray(x), np.asarray(st)
    assert st[1] > 0 and st[2] == -1 and st[0] == 0 and st[3] == 0
    assert np.all(np.isnan(x[[1, 2]]))
    for i in (0, 3):
        check_solve(A[i], x[i], b[i], np.float64)


def test_empty_batch(rng):
    """A batch of no matrices: empty results, no meeting, no hang."""
    m, n = mesh(2), 6
    A = np.zeros((0, n, n))
    b = np.zeros((0, n, 2))
    x, st = jax.jit(jax.vmap(_general("potrs", m)))(A, b)
    assert x.shape == (0, n, 2) and st.shape == (0,)
    inv = jax.jit(jax.vmap(_general("potri", m)))(A)[0]
    assert inv.shape == (0, n, n)


def test_batched_call_leaves_inputs_unchanged(rng):
    m, n = mesh(2), 8
    A, b = _inputs(rng, "lu_solve", (NB,), n, np.float64)
    A0, b0 = A.copy(), b.copy()
    Aj, bj = jnp.asarray(A), jnp.asarray(b)
    jax.block_until_ready(jax.jit(jax.vmap(_general("lu_solve", m)))(Aj, bj))
    np.testing.assert_array_equal(np.asarray(Aj), A0)
    np.testing.assert_array_equal(np.asarray(bj), b0)


def test_vmap_inside_the_callers_shard_map(rng):
    """potrs_shardmap_ctx / potri_shardmap_ctx vmapped inside a shard_map
    body: a batch of row shards is one FFI call there too."""
    from jax.sharding import PartitionSpec as P

    m, n = mesh(4), 8
    A, b = _inputs(rng, "potrs", (NB,), n, np.float64)

    def body(a, b):
        x, st = jax.vmap(lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, 2))(a, b)
        inv, st2 = jax.vmap(lambda a: jaxmg.potri_shardmap_ctx(a, 2))(a)
        return x, inv, st, st2

    BROW, BREP = P(None, "x", None), P(None, None, None)
    f = jax.shard_map(body, mesh=m, in_specs=(BROW, BREP),
                      out_specs=(BREP, BROW, P(None, "x"), P(None, "x")), check_vma=False)
    shapes, text = _custom_call_shapes(f, A, b, target="jaxmg_potrs")
    assert len(shapes) == 1 and "stablehlo.while" not in text
    x, inv, st, st2 = jax.jit(f)(A, b)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, b), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(A), rtol=1e-11, atol=1e-12)
    assert np.all(np.asarray(st) == 0) and np.all(np.asarray(st2) == 0)


def test_ops_inside_loops(rng):
    """jaxmg calls inside lax.map and lax.fori_loop (one call per step)."""
    m, n = mesh(2), 8
    A, b = _inputs(rng, "potrs", (NB,), n, np.float64)
    f = _general("potrs", m)
    x, st = jax.jit(lambda A, b: jax.lax.map(lambda ab: f(*ab), (A, b)))(A, b)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, b), rtol=1e-11, atol=1e-12)
    g = lambda A, b: _general("lu_solve", m)(A, b)[0]  # noqa: E731
    y = jax.jit(lambda A, b: jax.lax.fori_loop(0, 3, lambda i, x: g(A, x), b))(A[0], b[0])
    ref = np.linalg.solve(A[0], np.linalg.solve(A[0], np.linalg.solve(A[0], b[0])))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-10, atol=1e-13)
