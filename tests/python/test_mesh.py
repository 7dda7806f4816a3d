"""Meshes: 2-D meshes (one axis, flattened tuple), one device, permuted and
subset device orders; several calls in one program, loops, threads."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmg
from helpers import REP, ROW, check_eigh, check_inverse, check_solve, hermitian, mesh, put, randn, spd


def mesh_2d():
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("S", "T"))


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_2d_mesh_one_axis_potrs(rng, dtype):
    """P("T", None) on a (2, 4) mesh: each S group solves its own copy; every
    device's replica of x is the right answer."""
    m, n = mesh_2d(), 20  # shard 5, tile 2: padded
    spec = P("T", None)
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 2), dtype)
    x = jaxmg.potrs(put(A, m, spec), put(b, m, REP), 2, m, (spec, REP))
    shards = x.addressable_shards
    assert len(shards) == 8
    for s in shards:
        check_solve(A, s.data, b, dtype)
        np.testing.assert_array_equal(np.asarray(s.data), np.asarray(shards[0].data))


def test_2d_mesh_one_axis_potri_syevd(rng):
    m, n = mesh_2d(), 16
    spec = P("T", None)
    A = spd(rng, n, np.complex128)
    inv = jaxmg.potri(put(A, m, spec), 3, m, (spec,))
    check_inverse(A, inv, np.complex128)
    # the two S groups hold equal copies of each row block
    by_rows = {}
    for s in inv.addressable_shards:
        by_rows.setdefault(s.index[0].start, []).append(np.asarray(s.data))
    assert len(by_rows) == 4
    for copies in by_rows.values():
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
    H = hermitian(rng, n, np.complex128)
    w, V = jaxmg.syevd(put(H, m, spec), 3, m, (spec,))
    check_eigh(H, w, V, np.complex128)


def test_2d_mesh_other_axis(rng):
    """P("S", None): 2 devices solve, 4 groups side by side."""
    m, n = mesh_2d(), 10
    spec = P("S", None)
    A = spd(rng, n, np.float32)
    b = randn(rng, (n, 1), np.float32)
    x = jaxmg.potrs(put(A, m, spec), put(b, m, REP), 3, m, (spec, REP))
    for s in x.addressable_shards:
        check_solve(A, s.data, b, np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_2d_mesh_flattened(rng, dtype):
    m, n = mesh_2d(), 40  # shard 5, tile 3: padded
    spec = P(("S", "T"), None)
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 3), dtype)
    x = jaxmg.potrs(put(A, m, spec), put(b, m, REP), 3, m, (spec, REP))
    check_solve(A, x, b, dtype)
    inv = jaxmg.potri(put(A, m, spec), 3, m, (spec,))
    assert inv.sharding.is_equivalent_to(NamedSharding(m, spec), 2)
    check_inverse(A, inv, dtype)
    H = hermitian(rng, n, dtype)
    w, V = jaxmg.syevd(put(H, m, spec), 3, m, (spec,))
    check_eigh(H, w, V, dtype)


def test_2d_mesh_flattened_reversed_order(rng):
    """P(("T", "S"), None): the flattening order differs from the mesh's."""
    m, n = mesh_2d(), 16
    spec = P(("T", "S"), None)
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    x = jaxmg.potrs(put(A, m, spec), put(b, m, REP), 1, m, (spec, REP))
    check_solve(A, x, b, np.float64)
    H = hermitian(rng, n, np.float64)
    w, V = jaxmg.syevd(put(H, m, spec), 2, m, (spec,))
    check_eigh(H, w, V, np.float64)


def test_one_device_mesh(rng):
    m, n = mesh(1, start=5), 9
    A = spd(rng, n, np.complex64)
    b = randn(rng, (n, 2), np.complex64)
    check_solve(A, jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 4, m, (ROW, REP)), b, np.complex64)
    check_inverse(A, jaxmg.potri(put(A, m, ROW), 4, m, (ROW,)), np.complex64)
    H = hermitian(rng, n, np.complex64)
    w, V = jaxmg.syevd(put(H, m, ROW), 4, m, (ROW,))
    check_eigh(H, w, V, np.complex64)


@pytest.mark.parametrize("n,T_A", [(16, 4), (13, 2)])
def test_reversed_device_order(rng, n, T_A):
    m = mesh(4, reverse=True)
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    check_solve(A, jaxmg.potrs(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP)), b, np.float64)
    check_inverse(A, jaxmg.potri(put(A, m, ROW), T_A, m, (ROW,)), np.float64)
    H = hermitian(rng, n, np.float64)
    w, V = jaxmg.syevd(put(H, m, ROW), T_A, m, (ROW,))
    check_eigh(H, w, V, np.float64)


def test_permuted_device_order(rng):
    devs = jax.devices()
    m = Mesh(np.array([devs[6], devs[1], devs[7], devs[3], devs[0]]), ("x",))
    n = 25
    A = spd(rng, n, np.complex128)
    b = randn(rng, (n, 1), np.complex128)
    check_solve(A, jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 2, m, (ROW, REP)), b, np.complex128)
    H = hermitian(rng, n, np.complex128)
    w, V = jaxmg.syevd(put(H, m, ROW), 2, m, (ROW,))
    check_eigh(H, w, V, np.complex128)


def test_device_subset(rng):
    m = mesh(4, start=4)
    assert [d.id for d in m.devices.flat] == [4, 5, 6, 7]
    n = 18
    A = spd(rng, n, np.float32)
    b = randn(rng, (n, 2), np.float32)
    x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 2, m, (ROW, REP))
    assert {d.id for d in x.devices()} == {4, 5, 6, 7}
    check_solve(A, x, b, np.float32)
    check_inverse(A, jaxmg.potri(put(A, m, ROW), 2, m, (ROW,)), np.float32)


def test_disjoint_meshes_interleaved(rng):
    """Calls on devices 0..3 and 4..7 alternate; each on its own mesh."""
    m1, m2 = mesh(4), mesh(4, start=4)
    n = 12
    for _ in range(2):
        for m in (m1, m2):
            A = spd(rng, n, np.float64)
            b = randn(rng, (n, 1), np.float64)
            check_solve(A, jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 3, m, (ROW, REP)), b, np.float64)


def test_two_calls_in_one_program(rng):
    m, n = mesh(4), 22  # shard 5.5: global pad; tile 2
    A = spd(rng, n, np.complex128)
    b = randn(rng, (n, 2), np.complex128)

    @jax.jit
    def f(A, b):
        x = jaxmg.potrs(A, b, 2, m, (ROW, REP))
        inv = jaxmg.potri(A, 2, m, (ROW,))
        w, V = jaxmg.syevd(A, 2, m, (ROW,))
        x2 = jaxmg.potrs(A, x, 2, m, (ROW, REP))  # depends on the first call
        return x, inv, w, V, x2

    x, inv, w, V, x2 = f(put(A, m, ROW), put(b, m, REP))
    check_solve(A, x, b, np.complex128)
    check_inverse(A, inv, np.complex128)
    check_eigh(A, w, V, np.complex128)
    check_solve(A, x2, np.asarray(x), np.complex128)


def test_fori_loop(rng):
    """x_{k+1} = A^-1 x_k, 5 iterations of one call site."""
    m, n = mesh(3), 15
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 1), np.float64)

    @jax.jit
    def f(A, b):
        return jax.lax.fori_loop(0, 5, lambda i, x: jaxmg.potrs(A, x, 2, m, (ROW, REP)), b)

    x = np.asarray(f(put(A, m, ROW), put(b, m, REP)))
    ref = b
    for _ in range(5):
        ref = np.linalg.solve(A, ref)
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # and again: the call-site sequence carries on across executions
    x = np.asarray(f(put(A, m, ROW), put(b, m, REP)))
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_scan(rng):
    m, n, steps = mesh(4), 12, 4
    As = np.stack([spd(rng, n, np.complex64) for _ in range(steps)])
    bs = randn(rng, (steps, n, 1), np.complex64)

    @jax.jit
    def f(As, bs):
        def step(carry, ab):
            A, b = ab
            A = jax.lax.with_sharding_constraint(A, NamedSharding(m, ROW))
            x = jaxmg.potrs(A, b, 3, m, (ROW, REP))
            inv = jaxmg.potri(A, 3, m, (ROW,))
            return carry + 1, (x, inv)

        return jax.lax.scan(step, 0, (As, bs))

    count, (xs, invs) = f(jnp.asarray(As), jnp.asarray(bs))
    assert int(count) == steps
    for k in range(steps):
        check_solve(As[k], np.asarray(xs)[k], bs[k], np.complex64)
        check_inverse(As[k], np.asarray(invs)[k], np.complex64)


def run_threads(work, k, timeout=120):
    """Runs work(0) .. work(k-1) on k threads at once; fails on a hang or on
    any thread's exception."""
    errors = []

    def guarded(i):
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_threads_same_jitted_function(rng):
    """Three Python threads call one jitted function at once: all correct,
    none hangs (daemon threads, joined with a timeout)."""
    m, n = mesh(4), 20
    f = jax.jit(lambda A, b: jaxmg.potrs(A, b, 2, m, (ROW, REP)))
    problems = [(spd(rng, n, np.float64), randn(rng, (n, 2), np.float64)) for _ in range(3)]
    f(put(problems[0][0], m, ROW), put(problems[0][1], m, REP)).block_until_ready()  # compile
    results = {}

    def work(i):
        A, b = problems[i]
        for _ in range(4):
            results[i] = np.asarray(f(put(A, m, ROW), put(b, m, REP)))
            check_solve(A, results[i], b, np.float64)

    run_threads(work, 3)
    for i, (A, b) in enumerate(problems):
        check_solve(A, results[i], b, np.float64)


def test_threads_different_meshes(rng):
    """Concurrent calls on overlapping meshes (devices 0..3 and 2..5)."""
    n = 16
    meshes = [mesh(4), mesh(4, start=2), mesh(2, start=6)]
    problems = [(spd(rng, n, np.complex128), randn(rng, (n, 1), np.complex128)) for _ in meshes]

    def work(i):
        m = meshes[i]
        A, b = problems[i]
        for _ in range(3):
            x = jaxmg.potrs(put(A, m, ROW), put(b, m, REP), 2, m, (ROW, REP))
            check_solve(A, x, b, np.complex128)

    run_threads(work, 3)


def test_independent_same_shape_calls_in_one_program(rng):
    """Four independent potrs (and syevd) calls of one shape in one program:
    they share one traced call site, and must still each get their own
    answer."""
    m, n = mesh(4), 20
    As = [spd(rng, n, np.float64) for _ in range(4)]
    bs = [randn(rng, (n, 2), np.float64) for _ in range(4)]

    @jax.jit
    def f(As, bs):
        xs = [jaxmg.potrs(A, b, 3, m, (ROW, REP)) for A, b in zip(As, bs)]
        ws = [jaxmg.syevd(A, 3, m, (ROW,), return_eigenvectors=False) for A in As]
        return xs, ws

    for _ in range(2):
        xs, ws = f([put(A, m, ROW) for A in As], [put(b, m, REP) for b in bs])
        for A, b, x, w in zip(As, bs, xs, ws):
            check_solve(A, x, b, np.float64)
            check_eigh(A, w, None, np.float64)


def _explicit_mesh(k):
    return jax.make_mesh((k,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,),
                         devices=jax.devices()[:k])


@pytest.mark.parametrize("op", ["potrs", "potri", "syevd"])
@pytest.mark.parametrize("n,T_A", [(16, 3), (13, 2)], ids=str)
def test_explicit_axis_mesh(rng, op, n, T_A):
    """A mesh with an Explicit axis (jax.make_mesh(..., axis_types=Explicit)),
    A row-sharded (or, for N not divisible by 4, uncommitted); eager and jit."""
    m = _explicit_mesh(4)
    A = spd(rng, n, np.complex128)
    b = randn(rng, (n, 2), np.complex128)
    Aj = put(A, m, ROW) if n % 4 == 0 else jnp.asarray(A)
    calls = {
        "potrs": lambda A: jaxmg.potrs(A, jnp.asarray(b), T_A, m, (ROW, REP)),
        "potri": lambda A: jaxmg.potri(A, T_A, m, (ROW,)),
        "syevd": lambda A: jaxmg.syevd(A, T_A, m, (ROW,)),
    }
    for fn in (calls[op], jax.jit(calls[op])):
        out = fn(Aj)
        if op == "potrs":
            check_solve(A, out, b, np.complex128)
        elif op == "potri":
            check_inverse(A, out, np.complex128)
        else:
            check_eigh(A, out[0], out[1], np.complex128)


# a few larger problems
@pytest.mark.parametrize(
    "op,dtype,ndev,n,T_A",
    [
        ("potrs", np.float32, 8, 200, 7),
        ("potri", np.float64, 3, 199, 16),
        ("syevd", np.complex128, 4, 150, 11),
        ("syevd", np.float32, 8, 200, 12),
        ("potri", np.complex64, 8, 192, 24),
    ],
    ids=lambda v: np.dtype(v).name if isinstance(v, type) else str(v),
)
def test_larger(rng, op, dtype, ndev, n, T_A):
    m = mesh(ndev)
    if op == "syevd":
        A = hermitian(rng, n, dtype)
        w, V = jaxmg.syevd(put(A, m, ROW), T_A, m, (ROW,))
        check_eigh(A, w, V, dtype)
        return
    A = spd(rng, n, dtype)
    if op == "potrs":
        b = randn(rng, (n, 4), dtype)
        check_solve(A, jaxmg.potrs(put(A, m, ROW), put(b, m, REP), T_A, m, (ROW, REP)), b, dtype)
    else:
        check_inverse(A, jaxmg.potri(put(A, m, ROW), T_A, m, (ROW,)), dtype)
