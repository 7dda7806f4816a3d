"""vmap on GPUs (issue 16 item 3): a batch of matrices is one FFI call per
device, which the C core runs element by element on cuSolverMg ("multi")
or cuSOLVER ("single"); every element matches numpy in float64 /
complex128, a failing element is NaN with its own status, and a batch over
b alone stays one solve."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmg

ROW, REP, BROW = P("x", None), P(None, None), P(None, "x", None)
B, N = 3, 512


def _rand(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _hpd(rng, n, dtype):
    x = _rand(rng, (n, n), dtype)
    return (x @ x.conj().T / n + np.eye(n)).astype(dtype)


def _herm(rng, n, dtype):
    x = _rand(rng, (n, n), dtype)
    return ((x + x.conj().T) / 2).astype(dtype)


def _mesh(gpus):
    return Mesh(np.array(gpus), ("x",))


def _one_call(fn, *args, target):
    text = jax.jit(fn).lower(*args).as_text()
    return text.count(f"@{target}") + text.count(f'"{target}"'), "stablehlo.while" in text


@pytest.mark.parametrize("dispatch", ["multi", "single"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_batched_potrs_and_syevd_gpu(gpus, dtype, dispatch):
    m = _mesh(gpus)
    rng = np.random.default_rng(7)
    As = np.stack([_hpd(rng, N, dtype) for _ in range(B)])
    As[1] = -As[1]  # not positive definite: its own status, NaN
    bs = _rand(rng, (B, N, 4), dtype)
    kw = dict(T_A=256, mesh=m, dispatch=dispatch, return_status=True)
    f = lambda A, b: jaxmg.potrs(A, b, in_specs=(ROW, REP), **kw)  # noqa: E731
    Aj = jax.device_put(As, NamedSharding(m, BROW))
    calls, loops = _one_call(jax.vmap(f), Aj, bs, target="jaxmg_potrs")
    assert calls == 1 and not loops
    x, st = jax.jit(jax.vmap(f))(Aj, bs)
    x, st = np.asarray(x), np.asarray(st)
    assert st[0] == 0 and st[1] > 0 and st[2] == 0, st
    assert np.all(np.isnan(x[1]))
    for i in (0, 2):
        ref = np.linalg.solve(As[i], bs[i])
        assert np.abs(x[i] - ref).max() <= 1e-9 * np.abs(ref).max()
    Hs = np.stack([_herm(rng, N, dtype) for _ in range(B)])
    g = lambda A: jaxmg.syevd(A, in_specs=(ROW,), **kw)  # noqa: E731
    w, V, st = jax.jit(jax.vmap(g))(jax.device_put(Hs, NamedSharding(m, BROW)))
    w, V = np.asarray(w), np.asarray(V)
    assert np.all(np.asarray(st) == 0)
    for i in range(B):
        np.testing.assert_allclose(w[i], np.linalg.eigvalsh(Hs[i]), atol=1e-10 * N)
        assert np.abs(Hs[i] @ V[i] - V[i] * w[i]).max() <= 1e-9 * N


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_batched_lu_solve_and_qr_gpu(gpus, dispatch):
    m = _mesh(gpus)
    rng = np.random.default_rng(8)
    As = _rand(rng, (B, N, N), np.float64) + 8 * np.eye(N)
    bs = _rand(rng, (B, N, 2), np.float64)
    kw = dict(T_A=256, mesh=m, dispatch=dispatch)
    x = jax.jit(jax.vmap(lambda A, b: jaxmg.lu_solve(A, b, in_specs=(ROW, REP), **kw)))(As, bs)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(As, bs), rtol=1e-9, atol=1e-12)
    if dispatch == "single":
        Ts = _rand(rng, (B, N + 256, N), np.float64)
        Q, R = jax.jit(jax.vmap(lambda A: jaxmg.qr(A, in_specs=(ROW,), **kw)))(Ts)
        Q, R = np.asarray(Q), np.asarray(R)
        assert np.abs(Q @ R - Ts).max() <= 1e-10 * np.abs(Ts).max() * N


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_ops_inside_loops_gpu(gpus, dispatch):
    """potrs and lu_solve inside lax.map and lax.fori_loop: XLA on GPUs can
    leave a result unaliased to its argument inside a loop; the C core then
    copies the argument into the result and works there (decode.c)."""
    m = _mesh(gpus)
    rng = np.random.default_rng(9)
    As = np.stack([_hpd(rng, N, np.float64) for _ in range(B)])
    bs = _rand(rng, (B, N, 2), np.float64)
    kw = dict(T_A=256, mesh=m, dispatch=dispatch)
    f = lambda A, b: jaxmg.potrs(A, b, in_specs=(ROW, REP), **kw)  # noqa: E731
    x = jax.jit(lambda A, b: jax.lax.map(lambda ab: f(*ab), (A, b)))(As, bs)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(As, bs), rtol=1e-9, atol=1e-12)
    g = lambda A, b: jaxmg.lu_solve(A, b, in_specs=(ROW, REP), **kw)  # noqa: E731
    # x_{k+1} = A^-1 x_k, three times
    y = jax.jit(lambda A, b: jax.lax.fori_loop(0, 3, lambda i, x: g(A, x), b))(As[0], bs[0])
    ref = np.linalg.solve(As[0], np.linalg.solve(As[0], np.linalg.solve(As[0], bs[0])))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-8, atol=1e-14)
