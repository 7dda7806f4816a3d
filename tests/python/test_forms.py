"""Every call form of JAXMg 0.0.2-0.0.9 and 1.4.1 that jaxmg accepts (issue
20), on Explicit and Auto mesh axes: spec forms, mesh forms (Mesh,
AbstractMesh eager and under jit, inferred), A's layouts, b's layouts, both
*_shardmap_ctx forms, donate, return_logdet, non-finite input and N = 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

import jaxmg
from helpers import REP, check_eigh, check_inverse, check_solve, hermitian, randn, spd

N = 16
KINDS = [AxisType.Explicit, AxisType.Auto]


def line(kind, name="x", k=4):
    return Mesh(np.array(jax.devices()[:k]), (name,), axis_types=(kind,))


def grid(kind):
    return Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("r", "c"), axis_types=(kind, kind))


def put(x, m, spec):
    return jax.device_put(jnp.asarray(x), NamedSharding(m, spec))


def spec_of(x):
    s = x.sharding
    parts = tuple(s.spec) + (None,) * (x.ndim - len(tuple(s.spec)))
    return P(*parts)


@pytest.fixture(params=KINDS, ids=["explicit", "auto"])
def kind(request):
    return request.param


# ---------------------------------------------------------------------------
# spec forms


@pytest.mark.parametrize("form", ["bare", "tuple1", "list1", "tuple2", "matrix_specs_pos",
                                  "matrix_specs_kw", "in_specs_kw", "omitted"])
def test_potrs_spec_forms(rng, kind, form):
    m = line(kind)
    A, b = spd(rng, N, np.float64), randn(rng, (N, 2), np.float64)
    As, bs = put(A, m, P("x", None)), put(b, m, REP)
    row = P("x", None)
    calls = {
        "bare": lambda: jaxmg.potrs(As, bs, 4, m, row),
        "tuple1": lambda: jaxmg.potrs(As, bs, 4, m, (row,)),
        "list1": lambda: jaxmg.potrs(As, bs, 4, m, [row]),
        "tuple2": lambda: jaxmg.potrs(As, bs, 4, m, (row, REP)),
        "matrix_specs_pos": lambda: jaxmg.potrs(As, bs, 4, None, row),
        "matrix_specs_kw": lambda: jaxmg.potrs(As, bs, 4, matrix_specs=row),
        "in_specs_kw": lambda: jaxmg.potrs(As, bs, T_A=4, mesh=m, in_specs=row),
        "omitted": lambda: jaxmg.potrs(As, bs, 4),
    }
    x = calls[form]()
    check_solve(A, x, b, np.float64)
    assert x.shape == b.shape


@pytest.mark.parametrize("form", ["bare", "tuple1", "matrix_specs_kw", "omitted"])
def test_potri_syevd_spec_forms(rng, kind, form):
    m = line(kind)
    A, H = spd(rng, N, np.complex128), hermitian(rng, N, np.complex128)
    row = P("x", None)
    kw = {"bare": dict(mesh=m, in_specs=row), "tuple1": dict(mesh=m, in_specs=(row,)),
          "matrix_specs_kw": dict(matrix_specs=row), "omitted": {}}[form]
    inv = jaxmg.potri(put(A, m, row), 4, **kw)
    check_inverse(A, inv, np.complex128)
    w, V = jaxmg.syevd(put(H, m, row), 4, **kw)
    check_eigh(H, w, V, np.complex128)
    assert spec_of(inv) == row and spec_of(V) == row


# ---------------------------------------------------------------------------
# mesh forms


def test_abstract_mesh_eager_and_jit(rng, kind):
    """NetKet 3.22's call: mesh=get_abstract_mesh() inside jax.set_mesh."""
    m = line(kind, "S")
    A, b = spd(rng, N, np.float64), randn(rng, (N,), np.float64)
    H = hermitian(rng, N, np.float64)
    As, Hs = put(A, m, P("S", None)), put(H, m, P("S", None))
    with jax.set_mesh(m):
        am = jax.sharding.get_abstract_mesh()
        x = jaxmg.potrs(As, b[:, None], 4, am, P("S", None))
        check_solve(A, x, b[:, None], np.float64)
        w, V = jaxmg.syevd(Hs, 4, am, (P("S", None),))
        check_eigh(H, w, V, np.float64)

        @jax.jit
        def f(A, b, H):
            am = jax.sharding.get_abstract_mesh()
            x = jaxmg.potrs(A, b, 4, mesh=am, in_specs=P("S", None))
            return x, jaxmg.syevd(H, 4, am, (P("S", None),)), jaxmg.potri(A, 4)

        x, (w, V), inv = f(As, jnp.asarray(b), Hs)
    assert x.shape == (N,)
    check_solve(A, x[:, None], b[:, None], np.float64)
    check_eigh(H, w, V, np.float64)
    check_inverse(A, inv, np.float64)


def test_mesh_inferred_under_jit_and_from_context(rng, kind):
    """Mesh and spec omitted: A's sharding (eager), jax.typeof(A) or the
    context mesh under jit (Auto axes: P(*mesh.axis_names)), the context
    mesh for a NumPy A."""
    m = line(kind, "S")
    A, b = spd(rng, N, np.float64), randn(rng, (N, 1), np.float64)
    with jax.set_mesh(m):
        x = jax.jit(lambda A, b: jaxmg.potrs(A, b, 4))(put(A, m, P("S", None)), jnp.asarray(b))
        check_solve(A, x, b, np.float64)
        x = jaxmg.potrs(A, b, 4)       # NumPy A: the context mesh, P("S", None)
        check_solve(A, x, b, np.float64)


def test_bad_mesh_forms():
    with pytest.raises(TypeError, match="Mesh or AbstractMesh"):
        jaxmg.potrs(np.eye(4), np.ones(4), 2, mesh="x")
    with pytest.raises(ValueError, match="no mesh"):
        jaxmg.syevd(np.eye(4), 2)


# ---------------------------------------------------------------------------
# A's layouts and b's layouts


LAYOUTS = {
    "grid-rc": (grid, P("r", "c")),
    "cols": (lambda k: line(k), P(None, "x")),
    "rows": (lambda k: line(k), P("x", None)),
    "replicated": (lambda k: line(k), P(None, None)),
    "grid-rows-tuple": (grid, P(("r", "c"), None)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("n", [N, 18], ids=["even", "uneven"])
def test_layouts(rng, kind, layout, n):
    make, spec = LAYOUTS[layout]
    m = make(kind)
    A, H = spd(rng, n, np.float64), hermitian(rng, n, np.float64)
    b = randn(rng, (n, 3), np.float64)
    fits = all(n % (np.prod([m.shape[a] for a in (p if isinstance(p, tuple) else (p,))])) == 0
               for p in spec if p is not None)
    place = (lambda x: put(x, m, spec)) if fits else jnp.asarray
    x = jaxmg.potrs(place(A), b, 3, m, spec)
    check_solve(A, x, b, np.float64)
    inv = jaxmg.potri(place(A), 3, m, spec)
    check_inverse(A, inv, np.float64)
    w, V = jaxmg.syevd(place(H), 3, m, spec)
    check_eigh(H, w, V, np.float64)
    if fits:  # matrix results come back in A's layout
        assert spec_of(inv) == spec and spec_of(V) == spec
        x = jax.jit(lambda A: jaxmg.potrs(A, b, 3))(place(A))   # inferred
        check_solve(A, x, b, np.float64)


@pytest.mark.parametrize("bspec", [P("x"), P(None), P("x", None), P(None, "x")])
def test_b_any_sharding_x_in_b_sharding(rng, kind, bspec):
    m = line(kind)
    A = spd(rng, N, np.complex128)
    b = randn(rng, (N,) if len(bspec) == 1 else (N, 4), np.complex128)
    bs = put(b, m, bspec)
    want = P(*(tuple(bspec) + (None,) * (b.ndim - len(bspec))))
    jitted = jax.jit(lambda A, b: jaxmg.potrs(A, b, 4, m, P("x", None)))(A, bs)
    for x in (jaxmg.potrs(put(A, m, P("x", None)), bs, 4),
              jaxmg.potrs(A, bs, 4, m, (P("x", None), bspec)), jitted):
        assert x.shape == b.shape
        # under jit, b's sharding is known on Explicit axes only (jax.typeof)
        if x is not jitted or kind == AxisType.Explicit:
            assert spec_of(x) == want
        check_solve(A, x.reshape(N, -1), b.reshape(N, -1), np.complex128)


# ---------------------------------------------------------------------------
# *_shardmap_ctx outside a shard_map: JAXMg 1.4's global form


def test_ctx_global_form(rng, kind):
    m = line(kind, "S")
    A, H = spd(rng, N, np.float64), hermitian(rng, N, np.complex128)
    b = randn(rng, (N,), np.float64)
    As, Hs, bs = put(A, m, P("S", None)), put(H, m, P("S", None)), put(b, m, P())
    a_work, x, status = jaxmg.potrs_shardmap_ctx(As, bs, T_A=4)
    assert a_work.shape == (N, N) and x.shape == (N,) and status.shape == ()
    assert int(status) == 0
    check_solve(A, x[:, None], b[:, None], np.float64)
    a_work, w, V, status = jaxmg.syevd_shardmap_ctx(Hs, 4)
    check_eigh(H, w, V, np.complex128)
    assert spec_of(V) == P("S", None)
    a_work, w, status = jaxmg.syevd_shardmap_ctx(Hs, 4, return_eigenvectors=False)
    check_eigh(H, w, None, np.complex128)
    a_work, inv, status = jaxmg.potri_shardmap_ctx(As, 4, m, P("S", None))
    check_inverse(A, inv, np.float64)
    with jax.set_mesh(m):   # NetKet 3.23: under jit, no mesh, no spec
        out = jax.jit(lambda A, b: jaxmg.potrs_shardmap_ctx(A, b, T_A=4)[1])(As, jnp.asarray(b))
        check_solve(A, out[:, None], b[:, None], np.float64)
        _, w, V, _ = jax.jit(lambda H: jaxmg.syevd_shardmap_ctx(H, T_A=4))(Hs)
        check_eigh(H, w, V, np.complex128)


def test_ctx_forms_reject_the_other_forms_arguments(rng):
    m = line(AxisType.Auto)
    A = put(np.eye(N), m, P("x", None))
    with pytest.raises(TypeError, match="inside jax.shard_map"):
        jax.shard_map(lambda a: jaxmg.potri_shardmap_ctx(a, 2, mesh=m), mesh=m,
                      in_specs=P("x", None), out_specs=(P("x", None), P(None)),
                      check_vma=False)(A)
    with pytest.raises(ValueError, match="v_layout"):
        jax.shard_map(lambda a: jaxmg.syevd_shardmap_ctx(a, 2, v_layout="diag"), mesh=m,
                      in_specs=P("x", None), out_specs=(P(None), P(None, "x"), P(None)),
                      check_vma=False)(A)
    with pytest.raises(ValueError, match="T_A <= 1024"):
        jax.shard_map(lambda a: jaxmg.syevd_shardmap_ctx(a, 2048), mesh=m,
                      in_specs=P("x", None), out_specs=(P(None), P(None, "x"), P(None)),
                      check_vma=False)(A)


def test_ctx_0_0_9_out_specs_give_the_right_shape(rng):
    """The example of issue 20: out_specs=(P(None), P(None, 'x'), P(None)) for
    a 64 x 64 problem gives a 64 x 64 V (it gave (16, 256))."""
    m, n = line(AxisType.Auto), 64
    H = hermitian(rng, n, np.float64)
    w, V, status = jax.shard_map(lambda a: jaxmg.syevd_shardmap_ctx(a, 16), mesh=m,
                                 in_specs=P("x", None), out_specs=(P(None), P(None, "x"), P(None)),
                                 check_vma=False)(put(H, m, P("x", None)))
    assert V.shape == (n, n)
    check_eigh(H, w, V, np.float64)


# ---------------------------------------------------------------------------
# donate


@pytest.mark.parametrize("op", ["potrs", "potri", "syevd"])
def test_donate(rng, op):
    m = line(AxisType.Explicit)
    A = spd(rng, N, np.float64)
    b = randn(rng, (N, 1), np.float64)
    run = {"potrs": lambda A, **kw: jaxmg.potrs(A, put(b, m, REP), 4, **kw),
           "potri": lambda A, **kw: jaxmg.potri(A, 4, **kw),
           "syevd": lambda A, **kw: jaxmg.syevd(A, 4, **kw)}[op]
    kept = put(A, m, P("x", None))
    run(kept)
    assert not kept.is_deleted()      # the default keeps the caller's A
    np.testing.assert_array_equal(np.asarray(kept), A)
    given = put(A, m, P("x", None))
    out = run(given, donate=True)
    assert given.is_deleted()
    check_solve(A, out, b, np.float64) if op == "potrs" else None
    out = run(put(A, m, P("x", None)), donate=True, return_status=True)
    assert out[-1].shape == () and int(out[-1]) == 0  # the status, not a buffer


def test_donate_in_the_global_ctx_form(rng):
    """1.4's global potrs_shardmap_ctx with donate=True: a_work is A in the
    engines' rows (its values), x solves, and the caller's A is deleted."""
    m = line(AxisType.Auto)
    A = spd(rng, N, np.float64)
    b = randn(rng, (N, 1), np.float64)
    given = put(A, m, P("x", None))
    a_work, x, status = jaxmg.potrs_shardmap_ctx(given, put(b, m, REP), 4, m, P("x", None),
                                                 donate=True)
    assert given.is_deleted() and int(status) == 0
    np.testing.assert_array_equal(np.asarray(a_work), A)
    check_solve(A, x, b, np.float64)


# ---------------------------------------------------------------------------
# return_logdet


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_potrs_logdet(rng, kind, dtype):
    m = line(kind)
    A, b = spd(rng, 18, dtype), randn(rng, (18,), dtype)
    x, logdet = jaxmg.potrs(A, b, 4, m, P("x", None), return_logdet=True)
    ref = np.linalg.slogdet(A.astype(np.complex128))[1]
    assert logdet.shape == () and not np.iscomplexobj(logdet)
    np.testing.assert_allclose(float(logdet), ref, rtol=100 * np.finfo(dtype).eps)
    x, logdet, status = jaxmg.potrs(A, b, 4, m, P("x", None), return_logdet=True,
                                    return_status=True)
    assert int(status) == 0
    a_work, x, logdet, status = jaxmg.potrs_shardmap_ctx(A, b, 4, m, P("x", None),
                                                         return_logdet=True)
    np.testing.assert_allclose(float(logdet), ref, rtol=100 * np.finfo(dtype).eps)
    bad = A.copy()
    bad[3, 3] = -1
    x, logdet, status = jaxmg.potrs(bad, b, 4, m, P("x", None), return_logdet=True,
                                    return_status=True)
    assert int(status) > 0 and np.isnan(float(logdet)) and np.all(np.isnan(np.asarray(x)))


# ---------------------------------------------------------------------------
# non-finite input and N = 0


@pytest.mark.parametrize("where", ["A-nan", "A-inf", "b-nan"])
def test_nonfinite_input(rng, kind, where):
    m = line(kind)
    A, H = spd(rng, N, np.float64), hermitian(rng, N, np.float64)
    b = randn(rng, (N, 1), np.float64)
    if where == "A-nan":
        A[5, 9] = H[5, 9] = np.nan
    elif where == "A-inf":
        A[0, 0] = H[0, 0] = np.inf
    else:
        b[7, 0] = np.nan
    x, s = jaxmg.potrs(A, b, 4, m, P("x", None), return_status=True)
    assert int(s) == -1 and np.all(np.isnan(np.asarray(x)))
    if where == "b-nan":
        return
    inv, s = jaxmg.potri(A, 4, m, P("x", None), return_status=True)
    assert int(s) == -1 and np.all(np.isnan(np.asarray(inv)))
    w, V, s = jaxmg.syevd(H, 4, m, P("x", None), return_status=True)
    assert int(s) == -1 and np.all(np.isnan(np.asarray(w))) and np.all(np.isnan(np.asarray(V)))
    x, s = jax.shard_map(lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, 4), mesh=m,
                         in_specs=(P("x", None), REP), out_specs=(REP, P("x")),
                         check_vma=False)(put(A, m, P("x", None)), put(b, m, REP))
    assert np.all(np.asarray(s) == -1) and np.all(np.isnan(np.asarray(x)))
    # a finite call afterwards is fine
    A, b = spd(rng, N, np.float64), np.ones((N, 1))
    check_solve(A, jaxmg.potrs(A, b, 4, m, P("x", None)), b, np.float64)


def test_empty_problem():
    m = line(AxisType.Auto)
    A0, b0 = np.zeros((0, 0)), np.zeros((0, 2))
    x, s = jaxmg.potrs(A0, b0, 4, m, P("x", None), return_status=True)
    assert x.shape == (0, 2) and int(s) == 0
    assert jaxmg.potrs(A0, np.zeros(0), 4, m, P("x", None)).shape == (0,)
    assert jaxmg.potri(A0, 4, m, P("x", None)).shape == (0, 0)
    w, V = jaxmg.syevd(A0, 4, m, P("x", None))
    assert w.shape == (0,) and V.shape == (0, 0)
    assert w.dtype == np.float64
    _, w, V, s = jaxmg.syevd_shardmap_ctx(A0, 4, m, P("x", None))
    assert w.shape == (0,) and V.shape == (0, 0) and int(s) == 0
