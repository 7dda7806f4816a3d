"""The *_shardmap_ctx variants inside the user's own jax.shard_map, and
import hygiene (in fresh processes)."""

import functools
import os
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxmg
from helpers import (REP, ROW, check_eigh, check_inverse, check_solve, hermitian, mesh, put, randn,
                     run_fresh, spd)

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_fresh(code):
    return run_fresh(["-c", textwrap.dedent(code)], cwd=HERE).stdout


def test_import_changes_no_global_setting():
    out = _run_fresh(
        """
        import os
        import jax
        before = dict(os.environ)
        x64 = jax.config.jax_enable_x64
        import jaxmg
        assert x64 is False
        assert jax.config.jax_enable_x64 is False, "import jaxmg enabled x64"
        assert dict(os.environ) == before, "import jaxmg changed os.environ"
        # and neither does a first call (which loads the C library)
        import numpy as np
        from jax.sharding import Mesh, PartitionSpec as P
        m = Mesh(np.array(jax.devices()[:2]), ("x",))
        A = np.diag(np.arange(1.0, 7.0)).astype(np.float32)
        b = np.ones((6, 1), np.float32)
        x = jaxmg.potrs(A, b, 2, m, (P("x", None), P(None, None)))
        assert x.dtype == np.float32
        np.testing.assert_allclose(np.asarray(x)[:, 0], 1 / np.arange(1.0, 7.0), rtol=1e-6)
        assert jax.config.jax_enable_x64 is False, "a jaxmg call enabled x64"
        assert dict(os.environ) == before, "a jaxmg call changed os.environ"
        print("OK")
        """
    )
    assert "OK" in out


def test_ctx_first_call_in_fresh_process():
    """A program that only ever uses potrs_shardmap_ctx (the tutorial's 4.3
    pattern) must work without a prior mesh-level call."""
    out = _run_fresh(
        """
        import jax, numpy as np
        from jax.sharding import Mesh, PartitionSpec as P
        import jaxmg
        m = Mesh(np.array(jax.devices()[:2]), ("x",))
        A = np.diag(np.arange(1.0, 5.0)).astype(np.float32)
        b = np.ones((4, 1), np.float32)
        x, status = jax.shard_map(
            lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, T_A=2),
            mesh=m, in_specs=(P("x", None), P(None, None)),
            out_specs=(P(None, None), P(None)), check_vma=False,
        )(A, b)
        assert int(status[0]) == 0
        np.testing.assert_allclose(np.asarray(x)[:, 0], 1 / np.arange(1.0, 5.0), rtol=1e-6)
        print("OK")
        """
    )
    assert "OK" in out


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """The in-process tests below check the ctx functions themselves; a
    first mesh-level call loads the handlers so that they do not depend on
    test order (test_ctx_first_call_in_fresh_process checks that case)."""
    m = mesh(1)
    jaxmg.potrs(np.eye(2), np.ones((2, 1)), 1, m, (ROW, REP))


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
@pytest.mark.parametrize("ndev,n,T_A", [(4, 24, 5), (2, 10, 2), (1, 5, 2)], ids=str)
@pytest.mark.parametrize("explicit_axis", [True, False], ids=["axis", "default"])
def test_potrs_ctx(rng, dtype, ndev, n, T_A, explicit_axis):
    m = mesh(ndev)
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 2), dtype)
    kw = {"axis_name": "x"} if explicit_axis else {}

    def body(local_A, b):
        assert local_A.shape == (n // ndev, n)
        local_A = local_A * 2  # pre-processing
        x, status = jaxmg.potrs_shardmap_ctx(local_A, b, T_A=T_A, **kw)
        return x + 1, status  # post-processing

    x, status = jax.jit(
        jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=(REP, P(None)), check_vma=False)
    )(put(A, m, ROW), put(b, m, REP))
    assert int(status[0]) == 0
    x = np.asarray(x) - 1
    check_solve(A, 2 * x, b, dtype)


def test_potrs_ctx_tutorial_4_3(rng):
    """Tutorial section 4.3, verbatim in shape: functools.partial binds the
    replicated b, out_specs=(P(None, None), P(None)), eager shard_map."""
    m, n = mesh(4), 16
    A = spd(rng, n, np.float64)
    b_replicated = put(randn(rng, (n, 1), np.float64), m, REP)
    some_scaling_factor = 4.0

    def custom_solve(local_A, b):
        local_A = local_A * some_scaling_factor
        x, status = jaxmg.potrs_shardmap_ctx(local_A, b, T_A=256)
        return x, status

    x, status = jax.shard_map(
        functools.partial(custom_solve, b=b_replicated),
        mesh=m,
        in_specs=P("x", None),
        out_specs=(P(None, None), P(None)),
        check_vma=False,
    )(put(A, m, ROW))
    assert np.all(np.asarray(status) == 0)
    check_solve(A, np.asarray(x) * some_scaling_factor, np.asarray(b_replicated), np.float64)


def test_potrs_ctx_vector_rhs_and_partial(rng):
    m, n = mesh(4), 16
    A = spd(rng, n, np.complex128)
    b = put(randn(rng, (n,), np.complex128), m, P(None))

    def custom_solve(local_A, b):
        return jaxmg.potrs_shardmap_ctx(local_A * 0.5, b, T_A=3)

    x, status = jax.jit(jax.shard_map(
        functools.partial(custom_solve, b=b), mesh=m, in_specs=ROW,
        out_specs=(P(None), P(None)), check_vma=False,
    ))(put(A, m, ROW))
    assert x.shape == (n,)
    assert int(status[0]) == 0
    check_solve(A, np.asarray(x)[:, None] * 0.5, np.asarray(b)[:, None], np.complex128)


def test_potrs_ctx_status_per_shard(rng):
    """Every shard returns the same status; out_specs P(x) exposes them."""
    m, n = mesh(4), 8
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 1), np.float64)

    def body(a, b):
        x, s = jaxmg.potrs_shardmap_ctx(a, b, T_A=1)
        return x, s  # shape (1,) per shard

    x, s = jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=(REP, P("x")), check_vma=False)(
        put(A, m, ROW), put(b, m, REP)
    )
    assert s.shape == (4,) and np.all(np.asarray(s) == 0)
    check_solve(A, x, b, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("explicit_axis", [True, False], ids=["axis", "default"])
def test_potri_ctx(rng, dtype, explicit_axis):
    m, n, T_A = mesh(3), 15, 2
    A = spd(rng, n, dtype)
    kw = {"axis_name": "x"} if explicit_axis else {}

    def body(local_A):
        inv, status = jaxmg.potri_shardmap_ctx(local_A * 2, T_A, **kw)
        assert inv.shape == local_A.shape
        return inv * 2, status

    inv, status = jax.jit(jax.shard_map(body, mesh=m, in_specs=(ROW,), out_specs=(ROW, P(None)), check_vma=False))(
        put(A, m, ROW)
    )
    assert int(status[0]) == 0
    check_inverse(A, inv, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
@pytest.mark.parametrize("explicit_axis", [True, False], ids=["axis", "default"])
@pytest.mark.parametrize("n,T_A", [(20, 2), (16, 4)], ids=["padded", "unpadded"])
@pytest.mark.parametrize("v_layout", [None, "rows"], ids=["cols-default", "rows"])
def test_syevd_ctx(rng, dtype, explicit_axis, n, T_A, v_layout):
    """V's block: (N, N/P) columns by default (JAXMg 0.0.x's layout, out_specs
    P(None, ax); changed from jaxmg 0.1.0's rows on purpose, issue 20), or
    (N/P, N) rows with v_layout="rows"."""
    m = mesh(4)
    A = hermitian(rng, n, dtype)
    kw = {"axis_name": "x"} if explicit_axis else {}
    if v_layout:
        kw["v_layout"] = v_layout
    block, vspec = ((n // 4, n), ROW) if v_layout == "rows" else ((n, n // 4), P(None, "x"))

    def body(local_A):
        w, V, status = jaxmg.syevd_shardmap_ctx(local_A * 1, T_A, **kw)
        assert V.shape == block and w.shape == (n,)
        return w + 1, V, status

    w, V, status = jax.jit(jax.shard_map(
        body, mesh=m, in_specs=(ROW,), out_specs=(P(None), vspec, P(None)), check_vma=False
    ))(put(A, m, ROW))
    assert int(status[0]) == 0
    check_eigh(A, np.asarray(w) - 1, V, dtype)


def test_syevd_ctx_values_only(rng):
    m, n = mesh(2), 12
    A = hermitian(rng, n, np.complex128)

    def body(local_A):
        return jaxmg.syevd_shardmap_ctx(local_A, 4, return_eigenvectors=False)

    out = jax.jit(jax.shard_map(body, mesh=m, in_specs=(ROW,), out_specs=(P(None), P(None)), check_vma=False))(
        put(A, m, ROW)
    )
    assert len(out) == 2
    w, status = out
    assert int(status[0]) == 0
    check_eigh(A, w, None, np.complex128)


def test_ctx_2d_mesh_axis_defaults_to_all_manual_axes(rng):
    """On a (2, 4) mesh with A sharded over ("S", "T"), axis_name=None
    solves over both axes (8 shards)."""
    m = Mesh(np.array(jax.devices()).reshape(2, 4), ("S", "T"))
    spec = P(("S", "T"), None)
    n = 24
    A = spd(rng, n, np.float64)
    b = randn(rng, (n, 2), np.float64)
    for kw in ({}, {"axis_name": ("S", "T")}):
        x, status = jax.jit(jax.shard_map(
            lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, T_A=2, **kw),
            mesh=m, in_specs=(spec, REP), out_specs=(REP, P(None)), check_vma=False,
        ))(put(A, m, spec), put(b, m, REP))
        assert int(status[0]) == 0
        check_solve(A, x, b, np.float64)


def test_ctx_2d_mesh_one_axis(rng):
    """axis_name="T" on a (2, 4) mesh: each S group solves its own matrix
    (different per group), side by side."""
    m = Mesh(np.array(jax.devices()).reshape(2, 4), ("S", "T"))
    n = 12
    As = np.stack([spd(rng, n, np.float64) for _ in range(2)])  # (2, n, n)
    b = randn(rng, (n, 1), np.float64)

    def body(a, b):
        x, status = jaxmg.potrs_shardmap_ctx(a[0], b, T_A=2, axis_name="T")
        return x[None], status[None]

    x, status = jax.jit(jax.shard_map(
        body, mesh=m, in_specs=(P("S", "T", None), REP), out_specs=(P("S", None, None), P("S")),
        check_vma=False,
    ))(put(As, m, P("S", "T", None)), put(b, m, REP))
    assert np.all(np.asarray(status) == 0)
    for g in range(2):
        check_solve(As[g], np.asarray(x)[g], b, np.float64)
