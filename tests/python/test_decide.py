"""The one engine decision (src/jaxmg/_decide.py): its rules on every kind
of problem, the facts it reads from a mesh (stand-in GPU meshes across
nodes), and that a forced engine that cannot run is a ValueError before
anything runs."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmg
from jaxmg import ops
from jaxmg.pipeline import decide as _decide
from jaxmg.engines import library as _library
from jaxmg.engines import multiproc as _multiproc

F64 = np.float64
GIB = 2**30


def gpu(op, n, nparties=4, dispatch="auto", dtype=F64, **kw):
    kw.setdefault("device_bytes", 140 * GIB)
    kw.setdefault("mp_available", True)
    kw.setdefault("routes", ops.by_row(op).routes)  # as request.normalise passes them
    return _decide.decide(_decide.Problem(op=op, dtype=dtype, n=n, nparties=nparties,
                                          platform="gpu", dispatch=dispatch, **kw))


def test_auto_within_a_node_follows_the_crossovers():
    assert gpu("potrs", 4096) == "single"
    assert gpu("potrs", 16384) == "single" and gpu("potrs", 16385) == "mg"
    assert gpu("syevd", 24576) == "single" and gpu("syevd", 24577) == "mg"
    assert gpu("potri", 32768) == "single"  # no crossover: one GPU while it fits
    assert gpu("lu_solve", 40000) == "mg"
    assert gpu("potrs", 32768, nparties=1) == "single"  # one device: no cuSolverMg
    # Ops cuSolverMg lacks: one GPU while it fits (where the one-device JAX
    # algorithm measured faster than cuSOLVER, that: "local"), then cuSOLVERMp,
    # else the route composed from jaxmg's distributed ops (it never gathers A).
    assert gpu("qr", 40000) == "local" and gpu("qr", 40000, mesh_level=False) == "single"
    assert gpu("gesvd", 40000, device_bytes=8 * GIB) == "mp"
    assert gpu("gesvd", 40000, device_bytes=8 * GIB, mp_available=False) == "composed"
    assert gpu("gesvd", 40000, device_bytes=8 * GIB, mesh_level=False) == "single"


def test_local_where_measured():
    for op in ("qr", "gesvd", "polar"):
        assert gpu(op, 8192) == "local" and gpu(op, 8192, dispatch="single") == "single"
        assert gpu(op, 8192, dispatch="local") == "local"
        with pytest.raises(ValueError, match="shard_map"):
            gpu(op, 8192, dispatch="local", mesh_level=False)
    assert gpu("potrs", 8192) == "single"  # no one-device win measured for potrs
    with pytest.raises(ValueError, match="local engine has no potrs"):
        gpu("potrs", 8192, dispatch="local")
    for (platform, op), wins in _decide.WINS.items():
        assert all((op in _decide.ENGINE_OPS.get(w.engine, ()) or w.engine in
                    ops.by_row(op).routes) and w.measured for w in wins)


def test_routes_are_the_declarations():
    """local and composed are where an op declares them, nowhere else."""
    assert {op for op in _decide.OPS if "local" in ops.by_row(op).routes} == \
        {"qr", "gesvd", "polar", "lu_solve"}
    assert {op for op in _decide.OPS if "composed" in ops.by_row(op).routes} == \
        {"qr", "gesvd", "polar", "least_squares"}
    assert gpu("qr", 8192, routes=frozenset()) == "single"  # no route declared: no win


def test_an_engine_the_call_rules_out():
    """The full SVD of a non-square matrix: cuSOLVERMp and the composed
    route compute the thin one only; auto goes on to the next route, a
    forced one is refused with the declaration's reason, before anything
    runs."""
    unable = tuple(ops.by_row("gesvd").unable(ops.by_row("gesvd").options(full_matrices=True),
                                              8192, 4096).items())
    assert {e for e, _ in unable} == {"mp", "composed"}
    assert gpu("gesvd", 8192, nparties=1, unable=unable) == "local"
    # below N = 4096 jnp's SVD on a GPU is not accurate enough (f32): cuSOLVER's
    assert gpu("gesvd", 1024, nparties=1, unable=unable) == "single"
    assert gpu("gesvd", 40000, device_bytes=8 * GIB, unable=unable) == "local"  # gathers: last resort
    with pytest.raises(ValueError, match="thin SVD only"):
        gpu("gesvd", 8192, nparties=1, unable=unable, dispatch="mp")
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
    A = jax.device_put(np.ones((8, 4)), NamedSharding(mesh, P("x", None)))
    with pytest.raises(ValueError, match="thin SVD only"):
        jaxmg.gesvd(A, None, mesh, P("x", None), full_matrices=True, dispatch="mp")
    assert not ops.by_row("gesvd").unable(ops.by_row("gesvd").options(full_matrices=True), 8, 8)
    for op in ("gesvd", "polar"):  # M < N: neither route takes a wide A
        wide = ops.by_row(op).unable(ops.by_row(op).options(), 300, 700)
        assert set(wide) == {"mp", "composed"} and "at least as many rows" in wide["mp"]
        assert not ops.by_row(op).unable(ops.by_row(op).options(), 700, 300)
    # without U, the full SVD's Vh is the thin one's: cuSOLVERMp can run it
    no_u = ops.by_row("gesvd").options(full_matrices=True, compute_u=False)
    assert not ops.by_row("gesvd").unable(no_u, 8192, 4096)


def test_cusolvermp_wins_gesvd_on_one_gpu_where_installed():
    """cuSOLVERMp's gesvd on a 1 x 1 grid beat cuSOLVER and jnp on one GPU:
    taken where it is installed and the group is one GPU (as measured);
    otherwise the next win, jnp's SVD."""
    assert gpu("gesvd", 8192, nparties=1, mp_available=True) == "mp"
    assert gpu("gesvd", 8192, nparties=1, mp_available=False) == "local"
    assert gpu("gesvd", 8192, nparties=4, mp_available=True) == "local"
    assert gpu("polar", 8192, nparties=1, mp_available=True) == "local"


def test_auto_when_one_gpu_cannot_hold_the_gather():
    assert gpu("potri", 98304) == "mg"
    assert gpu("potrs", 196608, nparties=1, dtype=np.float32) == "mg"
    assert gpu("potrs", 4096, device_bytes=None) == "single"  # unknown memory: the size rule


def test_every_crossover_names_its_measurement():
    for op, c in _decide.CROSSOVERS.items():
        assert op in _decide.ENGINE_OPS["mg"] and c.measured


def test_forced_engines():
    assert gpu("potrs", 1000, dispatch="multi") == "mg" == gpu("potrs", 1000, dispatch="mg")
    assert gpu("syevd", 10**5, dispatch="single") == "single"
    assert gpu("potrs", 64, dispatch="mp") == "mp"
    with pytest.raises(ValueError, match="multi-GPU engine .* has no qr"):
        gpu("qr", 10, dispatch="multi")
    with pytest.raises(ValueError, match="not available"):
        gpu("potrs", 10, dispatch="mp", mp_available=False)
    with pytest.raises(ValueError, match="shard_map"):
        gpu("potrs", 10, dispatch="mp", mesh_level=False)
    with pytest.raises(ValueError, match="CPU devices only"):
        gpu("potrs", 10, dispatch="host")
    for bad in ("multi-node", "Auto", None, 1):
        with pytest.raises(ValueError, match="dispatch must be"):
            gpu("potrs", 10, dispatch=bad)


def test_cpu_is_the_host_engine():
    cpu = lambda **kw: _decide.decide(_decide.Problem(  # noqa: E731
        op="potrs", dtype=F64, n=64, nparties=4, platform="cpu", **kw))
    for d in ("auto", "single", "multi", "host"):
        assert cpu(dispatch=d) == "host"
    with pytest.raises(ValueError, match="GPUs only"):
        cpu(dispatch="mp")
    with pytest.raises(ValueError, match="2 hosts"):
        cpu(across_nodes=("a", "b"), axes=("x",))
    with pytest.raises(ValueError, match="multi-GPU"):
        _decide.decide(_decide.Problem(op="qr", dtype=F64, n=64, nparties=4, platform="cpu",
                                       dispatch="multi"))


def test_across_nodes_only_mp():
    nodes = ("node0", "node1")
    assert gpu("potrs", 100, across_nodes=nodes) == "mp"
    assert gpu("syevd", 1 << 16, across_nodes=nodes) == "mp"
    for forced in ("multi", "single"):
        with pytest.raises(ValueError, match="only the cuSOLVERMp engine"):
            gpu("potrs", 64, dispatch=forced, across_nodes=nodes)
    with pytest.raises(ValueError, match="nvidia-cusolvermp"):
        gpu("syevd", 64, across_nodes=nodes, mp_available=False)


def test_c_codes_match_the_c_enum():
    # csrc/engines/engine.h: JMG_DISPATCH_AUTO 0, MULTI 1, SINGLE 2
    assert (_decide.c_code("host"), _decide.c_code("mg"), _decide.c_code("single")) == (0, 1, 2)


# ---------------------------------------------------------------------------
# the facts of a mesh: stand-in GPU devices, processes on nodes


def fake_mesh(shape, names, procs_per_node, platform="gpu"):
    """A mesh of stand-in devices, one per process, procs_per_node processes
    per node, in id order."""
    n = int(np.prod(shape))
    devs = np.array([types.SimpleNamespace(id=i, process_index=i, platform=platform)
                     for i in range(n)], dtype=object).reshape(shape)
    nodes = tuple(f"node{i // procs_per_node}" for i in range(n))
    return types.SimpleNamespace(axis_names=names, shape=dict(zip(names, shape)),
                                 devices=devs), nodes


@pytest.fixture
def two_nodes(monkeypatch):
    """4 processes on 2 nodes, mesh ("S", "T") with "T" inside a node; the
    cuSOLVERMp library present."""
    mesh, nodes = fake_mesh((2, 2), ("S", "T"), 2)
    monkeypatch.setattr(_multiproc, "active", lambda: True)
    monkeypatch.setattr(_multiproc, "job", lambda: ("nonce", nodes))
    monkeypatch.setattr(_library, "has_library", lambda stem: True)
    monkeypatch.setattr(_decide, "_device_bytes", lambda: 140 * GIB)
    return mesh


def test_group_nodes(two_nodes):
    assert _multiproc.group_nodes(two_nodes, ("S",)) == ("node0", "node1")
    assert _multiproc.group_nodes(two_nodes, ("S", "T")) == ("node0", "node1")
    assert _multiproc.group_nodes(two_nodes, ("T",)) == ()


def test_for_mesh_across_nodes(two_nodes, monkeypatch):
    for op in _decide.ENGINE_OPS["mp"]:
        assert _decide.for_mesh(op, two_nodes, ("S", "T"), "auto", 64, F64) == "mp"
        assert _decide.for_mesh(op, two_nodes, ("S",), "auto", 1 << 16, F64) == "mp"
    for n in (64, 1 << 15):
        assert _decide.for_mesh("potrs", two_nodes, ("T",), "auto", n, F64) != "mp"
    assert _decide.for_mesh("potrs", two_nodes, ("T",), "mp", 64, F64) == "mp"
    assert _decide.for_mesh("potrs", two_nodes, ("T",), "multi", 1 << 16, F64) == "mg"
    monkeypatch.setattr(_library, "has_library", lambda stem: False)
    with pytest.raises(ValueError, match="nvidia-cusolvermp"):
        _decide.for_mesh("syevd", two_nodes, ("S",), "auto", 64, F64)
    with pytest.raises(ValueError, match="not available"):
        _decide.for_mesh("syevd", two_nodes, ("T",), "mp", 64, F64)


def test_single_process_gpu_never_spans_nodes(monkeypatch):
    mesh, _ = fake_mesh((4,), ("x",), 4)
    monkeypatch.setattr(_multiproc, "active", lambda: False)
    monkeypatch.setattr(_library, "has_library", lambda stem: True)
    monkeypatch.setattr(_decide, "_device_bytes", lambda: 140 * GIB)
    assert _multiproc.group_nodes(mesh, ("x",)) == ()
    assert _decide.for_mesh("potrs", mesh, ("x",), "auto", 1 << 16, F64) == "mg"
    assert _decide.for_mesh("potrs", mesh, ("x",), "mp", 64, F64) == "mp"


def test_cpu_mesh(two_nodes):
    mesh, _ = fake_mesh((2, 2), ("S", "T"), 2, platform="cpu")
    assert _decide.for_mesh("potrs", mesh, ("T",), "auto", 64, F64) == "host"
    with pytest.raises(ValueError, match="2 hosts"):
        _decide.for_mesh("potrs", mesh, ("S", "T"), "auto", 64, F64)
    with pytest.raises(ValueError, match="runs on GPUs only"):
        _decide.for_mesh("potrs", mesh, ("T",), "mp", 64, F64)


@pytest.mark.parametrize("call", [
    lambda A, b, m: jaxmg.potrs(A, b, 2, m, P("x", None), dispatch="mp"),
    lambda A, b, m: jaxmg.potri(A, 2, m, P("x", None), dispatch="mp"),
    lambda A, b, m: jaxmg.syevd(A, 2, m, P("x", None), dispatch="mp"),
    lambda A, b, m: jaxmg.qr(A, 2, m, P("x", None), dispatch="multi"),
])
def test_public_forced_engine_that_cannot_run_is_a_clear_error(call):
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    A = jax.device_put(np.eye(8) * 2, NamedSharding(mesh, P("x", None)))
    with pytest.raises(ValueError, match="cannot run this"):
        call(A, jnp.ones(8), mesh)


def test_the_request_carries_the_engine():
    from helpers import request

    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    A = jax.device_put(np.eye(8) * 2, NamedSharding(mesh, P("x", None)))
    req = request("potrs", A, jnp.ones(8), T_A=2, mesh=mesh, specs=None, dispatch="single")
    assert req.engine == "host" and req.dispatch == "single"
