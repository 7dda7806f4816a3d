"""Routing to the cuSOLVERMp engine (_mp_route; the decision itself is in
test_decide.py): nothing routes on CPU, and the routed results in the cores' convention, with
_mp_route.call replaced by the numpy engine of test_mp_solve (the rows'
conventions), on sizes that need padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmg
from jaxmg.pipeline import ffi as _calls
from jaxmg.pipeline import decide as _decide
from jaxmg.engines import mp_route as _mp_route
from jaxmg.pipeline import mesh as _mesh
from jaxmg.pipeline import request as _request

from helpers import declared, request

from test_mp_solve import engine, hpd, rand


def test_route_is_none_on_cpu(rng):
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    a = np.eye(8) * 2
    A = jax.device_put(a, NamedSharding(mesh, P("x", None)))
    req = request("potrs", A, jnp.ones(8), T_A=2, mesh=mesh, specs=None)
    assert req.engine == "host" and req.engine not in _mesh.ROUTED


# ---------------------------------------------------------------------------
# routed results, eager, with the numpy engine


@pytest.fixture
def routed(monkeypatch):
    monkeypatch.setattr(_mp_route, "call", engine)
    monkeypatch.setattr(_decide, "for_mesh", lambda *a, **k: "mp")


def _input(op, rng, n, m, dtype):
    if op in ("potrs", "potri", "syevd", "sygvd"):
        return hpd(rng, n, dtype)
    if op == "lu_solve":
        return (rand(rng, (n, n), dtype) + 4 * np.eye(n)).astype(dtype)
    return rand(rng, (m, n), dtype).astype(dtype)


TALL = ("least_squares", "qr", "gesvd", "polar")
WITH_B = ("potrs", "lu_solve", "least_squares")
LAYOUTS = [(("r", "c"), P("r", "c")), (("r", "c"), P(("r", "c"), None)), (("x",), P("x", None)),
           (("x",), P(None, "x"))]


@pytest.mark.parametrize("axes,spec", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("op", _mp_route.OPS)
def test_routed_results_in_the_cores_convention(routed, rng, op, dtype, axes, spec):
    devs = np.array(jax.devices()[:4])
    mesh = Mesh(devs.reshape(2, 2) if len(axes) == 2 else devs, axes)
    n = 6 if op in TALL else 7  # 7 is split by no grid here: padded
    m = 10
    if op in TALL and tuple(spec)[1] is not None:
        n = 8  # the engine cannot pad columns of a tall matrix
    a = _input(op, rng, n, m, dtype)
    rows = a.shape[0]
    b = hpd(rng, n, dtype) if op == "sygvd" else rand(rng, (rows, 2), dtype).astype(dtype)
    # JAX cannot hold 7 rows in 2 shards: A comes replicated, the spec names the layout
    put = spec if _request.fits(a.shape[0], mesh, spec) and _request.fits(a.shape[1], mesh, spec) else P()
    A = jax.device_put(a, NamedSharding(mesh, put))
    opts = declared(op).options(**({"logdet": True} if op == "potrs" else {}))
    B = jnp.asarray(b[:, 0]) if op in WITH_B else None  # a vector b
    if op == "sygvd":  # B in another layout than A's: the route moves it
        B = jax.device_put(b, NamedSharding(mesh, P()))
    req = request(op, *((A, B) if B is not None else (A,)), opts=opts, T_A=2, mesh=mesh,
                  specs=spec)
    out = _mesh.run_core(req, *((A, B) if B is not None else (A,)))
    out = [np.asarray(o) for o in out]
    assert out[-1] == 0
    tol = 1e-9 * max(1.0, np.linalg.cond(a))
    bv = b[:, 0]
    if op == "potrs":
        x, ld, _ = out
        assert x.shape == (n,)
        np.testing.assert_allclose(a @ x, bv, atol=tol)
        np.testing.assert_allclose(ld, np.linalg.slogdet(a)[1], atol=1e-9)
    elif op == "potri":
        np.testing.assert_allclose(out[0] @ a, np.eye(n), atol=tol)
    elif op == "syevd":
        w, V, _ = out
        np.testing.assert_allclose(a @ V, V * w, atol=tol)
        np.testing.assert_allclose(w, np.linalg.eigvalsh(a), atol=tol)
    elif op == "sygvd":
        w, V, _ = out
        assert w.shape == (n,) and V.shape == (n, n)
        tol *= np.linalg.cond(b)
        np.testing.assert_allclose(a @ V, b @ V * w, atol=tol)
        np.testing.assert_allclose(V.conj().T @ b @ V, np.eye(n), atol=tol)
        L = np.linalg.cholesky(b)
        np.testing.assert_allclose(
            w, np.linalg.eigvalsh(np.linalg.solve(L, np.linalg.solve(L, a).conj().T)), atol=tol)
    elif op == "lu_solve":
        np.testing.assert_allclose(a @ out[0], bv, atol=tol)
    elif op == "least_squares":
        np.testing.assert_allclose(out[0], np.linalg.lstsq(a, bv, rcond=None)[0], atol=tol)
    elif op == "qr":
        Q, R, _ = out
        assert Q.shape == (m, n) and R.shape == (n, n)
        np.testing.assert_allclose(Q @ R, a, atol=tol)
        np.testing.assert_allclose(R, np.triu(R))
    elif op == "gesvd":
        U, s, Vh, _ = out
        np.testing.assert_allclose((U * s) @ Vh, a, atol=tol)
    else:
        U, H, _ = out
        np.testing.assert_allclose(U @ H, a, atol=tol)
        np.testing.assert_allclose(U.conj().T @ U, np.eye(n), atol=tol)


def test_routed_non_finite_input_gives_status_minus_one(routed, rng):
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))
    a = np.eye(8) * 2
    a[3, 5] = np.nan
    A = jax.device_put(a, NamedSharding(mesh, P("r", "c")))
    b = jnp.ones((8, 2))
    req = request("potrs", A, b, T_A=2, mesh=mesh, specs=P("r", "c"))
    x, status = _mesh.run_core(req, A, b)
    assert int(status) == -1 and np.isnan(np.asarray(x)).all()


def jnp_engine(op, grid, mesh, args, *, spec, tile, attrs):
    """The numpy engine's conventions in jnp, so that route runs under jit."""
    from jaxmg.pipeline import shard as _shard

    a = _shard.constrain(args[0], mesh, P(None, None))  # Explicit axes: jnp.linalg takes no sharded input
    M = a.T if _mp_route.KIND in _calls.table()[op].sees_at else a
    st = jnp.zeros(grid.p * grid.q, jnp.int32)
    back = lambda x: _shard.constrain(x, mesh, spec)  # noqa: E731 - matrix results in A's spec
    if op == "potrs":
        return back(a), jnp.linalg.solve(M, args[1]), st, jnp.linalg.slogdet(M)[1].astype(jnp.finfo(a.dtype).dtype)
    if op == "syevd":
        w, Q = jnp.linalg.eigh(M)
        return back(Q.T), w, st
    if op == "sygvd":  # the leading nvalid pencil, padding zero
        nv, n = attrs["nvalid"], M.shape[0]
        MB = _shard.constrain(args[1], mesh, P(None, None)).T[:nv, :nv]
        Li = jnp.linalg.inv(jnp.linalg.cholesky(MB))
        w, Y = jnp.linalg.eigh(Li @ M[:nv, :nv] @ Li.conj().T)
        Z = jnp.pad(Li.conj().T @ Y, ((0, n - nv), (0, n - nv)))
        return back(Z.T), jnp.pad(w, (0, n - nv)), st
    if op == "qr":
        Q, R = jnp.linalg.qr(M)
        return back(Q), R, st
    if op == "lu_solve":
        return back(a), jnp.linalg.solve(M, args[1]), st
    raise NotImplementedError(op)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("op", ["potrs", "syevd", "qr"])
def test_routed_under_jit(monkeypatch, rng, op, explicit):
    """Inside a jit (where an Auto mesh hides A's sharding), on Auto and
    Explicit mesh axes, with padding (N = 7 on a 2 x 2 grid)."""
    monkeypatch.setattr(_mp_route, "call", jnp_engine)
    monkeypatch.setattr(_decide, "for_mesh", lambda *a, **k: "mp")
    types_ = (jax.sharding.AxisType.Explicit,) * 2 if explicit else (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((2, 2), ("r", "c"), axis_types=types_, devices=jax.devices()[:4])
    n, m = 7, 10
    a = _input(op, rng, 6 if op == "qr" else n, m, np.float64)
    A = jax.device_put(a, NamedSharding(mesh, P()))
    b = jnp.asarray(rand(rng, (a.shape[0],), np.float64)) if op == "potrs" else None
    args = (A, b) if b is not None else (A,)
    req = request(op, *args, T_A=2, mesh=mesh, specs=P(("r", "c"), None))
    out = jax.jit(lambda *xs: _mesh.run_core(req, *xs))(*args)
    out = [np.asarray(o) for o in out]
    if op == "potrs":
        np.testing.assert_allclose(a @ out[0], np.asarray(b), atol=1e-10)
        assert len(out) == 2  # no logdet asked
    elif op == "syevd":
        np.testing.assert_allclose(a @ out[1], out[1] * out[0], atol=1e-10)
    else:
        np.testing.assert_allclose(out[0] @ out[1], a, atol=1e-10)


def _routed_to_jnp(monkeypatch):
    """Every call routed (the decision forced) to jnp_engine, on a 2 x 2
    mesh; returns the ops the engine saw (a list that grows) and the mesh."""
    seen = []

    def engine(*a, **k):
        seen.append(a[0])
        return jnp_engine(*a, **k)

    monkeypatch.setattr(_mp_route, "call", engine)
    monkeypatch.setattr(_decide, "for_mesh", lambda *a, **k: "mp")
    return seen, Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))


@pytest.mark.parametrize("op", ["potrs", "syevd", "sygvd"])
def test_public_functions_route(monkeypatch, rng, op):
    """jaxmg.potrs / syevd / eigh_generalized reach _mp_route through the
    cores' hook: with the decision forced and a jnp engine, the public
    result is the engine's."""
    seen, mesh = _routed_to_jnp(monkeypatch)
    a = _input(op, rng, 8, 8, np.float64)
    A = jax.device_put(a, NamedSharding(mesh, P("r", "c")))
    if op == "potrs":
        b = rand(rng, (8, 2), np.float64)
        x, ld, st = jaxmg.potrs(A, jnp.asarray(b), 2, mesh, P("r", "c"), return_logdet=True,
                                return_status=True, dispatch="mp")
        np.testing.assert_allclose(a @ np.asarray(x), b, atol=1e-10)
        np.testing.assert_allclose(float(ld), np.linalg.slogdet(a)[1], atol=1e-10)
    elif op == "syevd":
        w, V, st = jaxmg.syevd(A, 2, mesh, P("r", "c"), return_status=True, dispatch="mp")
        np.testing.assert_allclose(a @ np.asarray(V), np.asarray(V) * np.asarray(w), atol=1e-10)
        assert V.sharding.spec == P("r", "c")  # back in A's layout
    else:
        bm = hpd(rng, 8, np.float64)
        w, V, st = jaxmg.eigh_generalized(A, jnp.asarray(bm), 2, mesh, P("r", "c"),
                                          return_status=True, dispatch="mp")
        V, w = np.asarray(V), np.asarray(w)
        np.testing.assert_allclose(a @ V, bm @ V * w, atol=1e-10)
        np.testing.assert_allclose(V.T @ bm @ V, np.eye(8), atol=1e-10)
        assert jaxmg.eigh_generalized(A, jnp.asarray(bm), 2, mesh, P("r", "c"),
                                      return_eigenvectors=False, dispatch="mp").shape == (8,)
    assert int(st) == 0 and seen == [op] * (2 if op == "sygvd" else 1)  # sygvd: called twice


@pytest.mark.parametrize("op", ["lu_solve", "qr"])
def test_public_general_ops_route(monkeypatch, rng, op):
    """jaxmg.lu_solve / qr (issue 15's cores) reach _mp_route through their hook."""
    seen, mesh = _routed_to_jnp(monkeypatch)
    a = _input(op, rng, 8, 12, np.float64)
    A = jax.device_put(a, NamedSharding(mesh, P("r", "c")))
    if op == "lu_solve":
        b = rand(rng, (8,), np.float64)
        x, st = jaxmg.lu_solve(A, jnp.asarray(b), 2, mesh, P("r", "c"), return_status=True,
                               dispatch="mp")
        np.testing.assert_allclose(a @ np.asarray(x), b, atol=1e-10)
    else:
        Q, R, st = jaxmg.qr(A, 2, mesh, P("r", "c"), return_status=True, dispatch="mp")
        np.testing.assert_allclose(np.asarray(Q) @ np.asarray(R), a, atol=1e-10)
    assert int(st) == 0 and seen and set(seen) == {op}  # lu_solve's rule traces its solve twice


def test_sygvd_asks_the_engine_for_the_whole_padded_pencil(monkeypatch, rng):
    """cuSOLVERMp's sygvd is wrong on a leading sub-pencil (nvalid below the
    order; bench/mp_smoke.py): the route pads A with a zero block and B with
    identity, asks for the whole pencil with vectors, and drops the pad
    eigenpairs after the call."""
    seen = []

    def spy(op, grid, mesh, args, **kw):
        seen.append((np.asarray(args[0]), np.asarray(args[1]), kw["attrs"]))
        return engine(op, grid, mesh, args, **kw)

    monkeypatch.setattr(_mp_route, "call", spy)
    monkeypatch.setattr(_decide, "for_mesh", lambda *a, **k: "mp")
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))
    n = 7
    a, b = hpd(rng, n, np.float64), hpd(rng, n, np.float64)
    A = jax.device_put(a, NamedSharding(mesh, P()))
    opts = declared("sygvd").options(jobz=False)
    req = request("sygvd", A, jnp.asarray(b), opts=opts, T_A=2, mesh=mesh, specs=P("r", "c"))
    w, st = (np.asarray(o) for o in _mesh.run_core(req, A, jnp.asarray(b)))
    (pa, pb, attrs), = seen
    assert pa.shape == (8, 8) and attrs == {"jobz": 1, "nvalid": 8}
    assert not pa[n:].any() and not pa[:, n:].any()  # a zero block: A's pad eigenvalue is 0
    np.testing.assert_array_equal(pb[n:, n:], np.eye(1))
    L = np.linalg.cholesky(b)
    ref = np.linalg.eigvalsh(np.linalg.solve(L, np.linalg.solve(L, a).conj().T))
    assert int(st) == 0
    np.testing.assert_allclose(w, ref, atol=1e-9 * np.linalg.cond(b) * np.linalg.cond(a))


def test_padded_sygvd_status_counts_in_the_pencils_order(routed, rng):
    """B's leading minor k not positive definite is status k whatever the
    padding (the engine's info is for the padded order; the pencil's
    failure sits in its leading block)."""
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"))
    n, k = 7, 3
    a = hpd(rng, n, np.float64)
    b = np.eye(n)
    b[k - 1, k - 1] = -1.0  # minors 1 .. k-1 positive, minor k not
    A = jax.device_put(a, NamedSharding(mesh, P()))
    req = request("sygvd", A, jnp.asarray(b), T_A=2, mesh=mesh, specs=P("r", "c"))
    w, V, st = (np.asarray(o) for o in _mesh.run_core(req, A, jnp.asarray(b)))
    assert int(st) == k and np.isnan(w).all()
