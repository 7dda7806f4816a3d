"""jaxmg on GPUs, through cuSolverMg ("multi") and through cuSOLVER on one
GPU ("single"): every op, dtype and mesh shape, checked by its defining
equation against float64 references."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmg

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
EPS = {np.float32: 1.2e-7, np.float64: 2.2e-16, np.complex64: 1.2e-7, np.complex128: 2.2e-16}


def randn(n, dtype, seed):
    """n x n standard normal entries in float64, complex (real and
    imaginary parts both standard normal) if dtype is."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n))
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal((n, n))
    return x


def hpd(n, dtype, seed):
    """A random, well-conditioned SPD/HPD matrix (genuinely complex if
    complex), built on the host in float64."""
    x = randn(n, dtype, seed)
    a = x @ x.conj().T / n + np.eye(n)
    return a.astype(dtype)


def mesh_of(devs, name="x"):
    return Mesh(np.array(devs), (name,))


def put(a, mesh, spec):
    """Places a on the mesh; an uneven row count stays a host array, which
    jaxmg pads and places itself."""
    if spec[0] is not None and a.shape[0] % mesh.devices.size:
        return a
    return jax.device_put(a, NamedSharding(mesh, spec))


def tol(dtype, n, factor=50.0):
    return factor * n * EPS[dtype]


@pytest.mark.parametrize("dispatch", ["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_ops_all_dtypes(gpus, dtype, dispatch):
    # n > 2048 after padding: cuSolverMg's own solves go wrong beyond 2048
    # right-hand sides, so this checks jaxmg's panels.
    n, devs = 2500, gpus
    mesh = mesh_of(devs)
    a = hpd(n, dtype, 1)
    b = np.random.default_rng(2).standard_normal((n, 3)).astype(dtype)
    A, B = put(a, mesh, P("x", None)), put(b, mesh, P(None, None))
    kw = dict(dispatch=dispatch)
    x, st = jaxmg.potrs(A, B, 256, mesh, (P("x", None), P(None, None)), return_status=True, **kw)
    x = np.asarray(x, np.complex128)
    assert int(st) == 0
    res = np.linalg.norm(a @ x - b) / (np.linalg.norm(a) * np.linalg.norm(x))
    assert res < tol(dtype, n), res

    inv, st = jaxmg.potri(A, 256, mesh, (P("x", None),), return_status=True, **kw)
    assert int(st) == 0
    inv = np.asarray(inv, np.complex128)
    cond = np.linalg.cond(a.astype(np.complex128))
    assert np.linalg.norm(a @ inv - np.eye(n)) / np.sqrt(n) < tol(dtype, n) * cond
    assert np.allclose(inv, inv.conj().T, atol=tol(dtype, n) * np.abs(inv).max())

    w, v = jaxmg.syevd(A, 256, mesh, (P("x", None),), **kw)
    w, v = np.asarray(w, np.float64), np.asarray(v, np.complex128)
    a64 = a.astype(np.complex128)
    scale = np.linalg.norm(a64, 2)
    assert np.all(np.diff(w) >= 0)
    assert np.abs(w - np.linalg.eigvalsh(a64)).max() < tol(dtype, n) * scale
    assert np.linalg.norm(a64 @ v - v * w) / np.sqrt(n) < tol(dtype, n) * scale
    assert np.linalg.norm(v.conj().T @ v - np.eye(n)) / np.sqrt(n) < tol(dtype, n)


@pytest.mark.parametrize("n,tile", [(64, 1), (1000, 300), (999, 4096), (2048, 2048), (3000, None)])
def test_tiles_and_padding(gpus, n, tile):
    mesh = mesh_of(gpus)
    a = hpd(n, np.float64, n + (tile or 0))
    b = np.random.default_rng(3).standard_normal(n)
    kw = dict(dispatch="multi")
    x = jaxmg.potrs(put(a, mesh, P("x", None)), b, tile, mesh, (P("x", None), P(None, None)), **kw)
    assert x.shape == (n,)
    assert np.abs(a @ np.asarray(x) - b).max() < 1e-10
    w, v = jaxmg.syevd(put(a, mesh, P("x", None)), tile, mesh, (P("x", None),), **kw)
    assert np.abs(a @ np.asarray(v) - np.asarray(v) * np.asarray(w)).max() < 1e-10


@pytest.mark.parametrize("dispatch", ["multi", "single"])
def test_not_positive_definite(gpus, dispatch):
    n = 512
    mesh = mesh_of(gpus)
    a = hpd(n, np.float64, 4)
    a[300, 300] = -1e6  # the leading minor of order 301 fails
    A = put(a, mesh, P("x", None))
    kw = dict(return_status=True, dispatch=dispatch)
    x, st = jaxmg.potrs(A, np.ones((n, 1)), 128, mesh, (P("x", None), P(None, None)), **kw)
    assert int(st) == 301 and np.all(np.isnan(np.asarray(x)))
    inv, st = jaxmg.potri(A, 128, mesh, (P("x", None),), **kw)
    assert int(st) == 301 and np.all(np.isnan(np.asarray(inv)))
    good = hpd(n, np.float64, 5)  # the engine still works afterwards
    x = jaxmg.potrs(put(good, mesh, P("x", None)), np.ones(n), 128, mesh, (P("x", None), P(None, None)))
    assert np.abs(good @ np.asarray(x) - 1).max() < 1e-10


def test_many_rhs_multi(gpus):
    """More than 2048 right-hand sides go to cuSolverMg in panels."""
    n, k = 3000, 2500
    mesh = mesh_of(gpus)
    a = hpd(n, np.float64, 10)
    b = np.random.default_rng(11).standard_normal((n, k))
    x = jaxmg.potrs(put(a, mesh, P("x", None)), b, 250, mesh, (P("x", None), P(None, None)),
                    dispatch="multi")
    assert np.abs(a @ np.asarray(x) - b).max() < 1e-10


def wigner_hpd(n, dtype, seed):
    """(R + Rᴴ)/(2√(2n)) + 2I, spectrum inside [1, 3]: HPD, well conditioned,
    and O(n²) to build and to check, for sizes where x xᴴ is slow."""
    r = randn(n, dtype, seed)
    if np.issubdtype(dtype, np.complexfloating):
        r = r / np.sqrt(2)  # entries of variance 1, as in the real case
    a = (r + r.conj().T) / (2 * np.sqrt(2 * n)) + 2 * np.eye(n)
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_potri_several_panels_per_device(gpus, dtype):
    """More than 2048 columns per device, padded: several identity panels go
    to each device, some split across two. Checked by A (X v) = v and
    X = Xᴴ, cheap at this size (cond(A) <= 3)."""
    n = 2048 * len(gpus) + 1000  # padded to 2560 rows per device at T_A = 512
    mesh = mesh_of(gpus)
    a = wigner_hpd(n, dtype, 12)
    inv, st = jaxmg.potri(put(a, mesh, P("x", None)), 512, mesh, (P("x", None),),
                          return_status=True, dispatch="multi")
    assert int(st) == 0
    inv = np.asarray(inv, np.complex128)
    v = np.random.default_rng(13).standard_normal((n, 3))
    res = np.linalg.norm(a @ (inv @ v) - v) / np.linalg.norm(v)
    assert res < 3 * tol(dtype, n), res
    assert np.abs(inv - inv.conj().T).max() < tol(dtype, n)


def test_two_calls_same_arrays_and_inputs_intact(gpus):
    n = 1024
    mesh = mesh_of(gpus)
    a = hpd(n, np.float64, 6)
    A = put(a, mesh, P("x", None))
    b = put(np.ones((n, 2)), mesh, P(None, None))

    @jax.jit
    def twice(A, b):
        x1 = jaxmg.potrs(A, b, 128, mesh, (P("x", None), P(None, None)))
        inv = jaxmg.potri(A, 128, mesh, (P("x", None),))
        return x1, inv @ b

    x1, x2 = twice(A, b)
    x1, x2 = twice(A, b)
    assert np.abs(np.asarray(x1) - np.asarray(x2)).max() < 1e-10
    assert np.array_equal(np.asarray(A), a) and np.array_equal(np.asarray(b), np.ones((n, 2)))


@pytest.mark.parametrize("order", ["subset", "reversed"])
def test_mesh_order(gpus, order):
    if len(gpus) < 2:
        pytest.skip("needs 2 GPUs")
    devs = gpus[:2] if order == "subset" else gpus[::-1]
    mesh = mesh_of(devs)
    n = 1000
    a = hpd(n, np.complex128, 7)
    b = np.random.default_rng(8).standard_normal((n, 1)) + 0j
    x = jaxmg.potrs(put(a, mesh, P("x", None)), b, 100, mesh, (P("x", None), P(None, None)))
    assert np.abs(a @ np.asarray(x) - b).max() < 1e-10
    w, v = jaxmg.syevd(put(a, mesh, P("x", None)), 100, mesh, (P("x", None),))
    v = np.asarray(v)
    assert np.abs(a @ v - v * np.asarray(w)).max() < 1e-9


def test_2d_mesh(gpus):
    if len(gpus) < 4:
        pytest.skip("needs 4 GPUs")
    mesh = Mesh(np.array(gpus[:4]).reshape(2, 2), ("S", "T"))
    n = 1024
    a = hpd(n, np.float64, 9)
    b = np.ones((n, 1))
    for spec in (P("T", None), P(("S", "T"), None)):
        x = jaxmg.potrs(put(a, mesh, spec), put(b, mesh, P(None, None)), 128, mesh, (spec, P(None, None)))
        assert np.abs(a @ np.asarray(x) - b).max() < 1e-10


def test_missing_peer_errors_not_hangs(gpus):
    """A group whose last member never comes: every device that did come
    gets an error after the rendezvous timeout, and the process survives."""
    code = textwrap.dedent(
        """
        import os, time
        os.environ["JAXMG_TIMEOUT_S"] = "3"
        import jax, jax.numpy as jnp, numpy as np
        from functools import partial
        from jax.sharding import Mesh, PartitionSpec as P
        from jaxmg.pipeline import ffi as _calls
        from jaxmg.engines import library as _library
        from jaxmg.pipeline import shard as _shard
        devs = jax.devices("gpu")
        mesh = Mesh(np.array(devs), ("x",))
        _library.ensure_registered("gpu")
        k = len(devs)
        def body(a):
            where = _shard.where_am_i(("x",))
            # claims one device more than the mesh has: nobody plays it
            x, st = _calls.potri(a, where, site="missing-peer", tile=a.shape[0], nparties=k + 1,
                                 dispatch=1)
            return x
        n = 64 * k
        f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("x", None), out_specs=P("x", None), check_vma=False))
        a = jax.device_put(jnp.eye(n), jax.sharding.NamedSharding(mesh, P("x", None)))
        t = time.time()
        try:
            f(a).block_until_ready()
            print("NO ERROR")
        except Exception as e:
            print("ERROR after %.1f s:" % (time.time() - t), str(e)[:300])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERROR after" in out.stdout, out.stdout + out.stderr[-2000:]


@pytest.mark.large
def test_n65536_float64(gpus):
    """N^2 > 2^32: 64-bit sizes and offsets all the way through."""
    n = 65536
    mesh = mesh_of(gpus)
    spec = NamedSharding(mesh, P("x", None))

    @jax.jit
    def make(key):
        r = jax.random.uniform(key, (n, n), jnp.float64, -1, 1)
        r = jax.lax.with_sharding_constraint(r, spec)
        return (r + r.T) / 2 + n * 0.6 * jnp.eye(n)

    a = jax.jit(make, out_shardings=spec)(jax.random.key(0))
    b = jnp.ones((n, 1))
    x, st = jaxmg.potrs(a, b, 1024, mesh, (P("x", None), P(None, None)), return_status=True)
    assert int(st) == 0
    r = jax.jit(lambda a, x: jnp.linalg.norm(a @ x - 1) / (jnp.linalg.norm(a) * jnp.linalg.norm(x)))(a, x)
    assert float(r) < 1e-13, float(r)
