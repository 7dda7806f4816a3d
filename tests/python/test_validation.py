"""Bad input raises ValueError / TypeError naming the problem, before
anything runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxmg
from helpers import REP, ROW, mesh, put

N = 8


@pytest.fixture(scope="module")
def m():
    return mesh(4)


@pytest.fixture
def A(m):
    return put(np.eye(N) * 2, m, ROW)


@pytest.fixture
def b(m):
    return put(np.ones((N, 1)), m, REP)


def _all_ops(A, b, m, specs1, specs2, **kw):
    """The three mesh-level ops with the given in_specs."""
    return [
        lambda: jaxmg.potrs(A, b, 2, m, specs2, **kw),
        lambda: jaxmg.potri(A, 2, m, specs1, **kw),
        lambda: jaxmg.syevd(A, 2, m, specs1, **kw),
    ]


# Forms that changed on purpose (issue 20): a bare P and a 1-tuple are accepted
# for potrs, P(None, "x") and P(None, None) are accepted layouts, and b may be
# sharded (tests/python/test_forms.py checks those); what stays an error is here.
@pytest.mark.parametrize(
    "specs1,specs2,match",
    [
        ((), (), "in_specs"),                                # empty
        ((ROW, ROW), (ROW, REP, REP), "in_specs"),           # too long
        ((P("x", "x"),), (P("x", "x"), REP), "repeated"),
        ((P("y", None),), (P("y", None), REP), "'y'.*not in the mesh"),
        ((P(("x", "x"), None),), (P(("x", "x"), None), REP), "repeated"),
        (("x",), ("x", REP), "PartitionSpec"),
        ((P("x", None, "x"),), (P("x", None, "x"),), "more entries"),
    ],
    ids=["len0", "len-extra", "xx", "axis-not-in-mesh", "axis-twice", "str-spec", "rank3"],
)
def test_bad_in_specs(A, b, m, specs1, specs2, match):
    for op in _all_ops(A, b, m, specs1, specs2):
        with pytest.raises((ValueError, TypeError), match=match):
            op()


def test_in_specs_errors_are_value_errors(A, b, m):
    with pytest.raises(ValueError, match="in_specs"):
        jaxmg.potri(A, 2, m, (ROW, REP))          # a 2-tuple is potrs's form only
    with pytest.raises(ValueError, match="either in_specs or matrix_specs"):
        jaxmg.syevd(A, 2, m, ROW, matrix_specs=P(None, "x"))
    with pytest.raises(ValueError, match="not in the mesh"):
        jaxmg.syevd(A, 2, m, (P("y", None),))
    with pytest.raises(ValueError, match="b's spec.*not in the mesh"):
        jaxmg.potrs(A, b, 2, m, (ROW, P("y", None)))


def test_non_square_A(m):
    A = np.ones((N, N + 4))
    with pytest.raises(ValueError, match="square"):
        jaxmg.potrs(A, np.ones((N, 1)), 2, m, (ROW, REP))
    with pytest.raises(ValueError, match="square"):
        jaxmg.potri(A, 2, m, (ROW,))
    with pytest.raises(ValueError, match="square"):
        jaxmg.syevd(A, 2, m, (ROW,))


@pytest.mark.parametrize("shape", [(N, N, 1), (2, N, N), (N,)])
def test_A_not_2d(m, shape):
    A = np.ones(shape)
    with pytest.raises(ValueError, match="2-D"):
        jaxmg.potrs(A, np.ones((N, 1)), 2, m, (ROW, REP))
    with pytest.raises(ValueError, match="2-D"):
        jaxmg.syevd(A, 2, m, (ROW,))


def test_A_not_an_array(m):
    with pytest.raises(TypeError, match="A must be an array"):
        jaxmg.potri([[1.0, 0.0], [0.0, 1.0]], 1, m, (ROW,))


@pytest.mark.parametrize("shape", [(N, 1, 1), ()])
def test_b_wrong_rank(A, m, shape):
    with pytest.raises(ValueError, match=r"b must be \(N,\) or \(N, K\)"):
        jaxmg.potrs(A, np.ones(shape), 2, m, (ROW, REP))


@pytest.mark.parametrize("shape", [(N + 1, 1), (N - 1,), (4, N)])
def test_b_rows_mismatch(A, m, shape):
    with pytest.raises(ValueError, match="rows"):
        jaxmg.potrs(A, np.ones(shape), 2, m, (ROW, REP))


def test_b_no_columns(A, m):
    with pytest.raises(ValueError, match="no columns"):
        jaxmg.potrs(A, np.ones((N, 0)), 2, m, (ROW, REP))


@pytest.mark.parametrize("adt,bdt", [(np.float64, np.float32), (np.complex64, np.float32),
                                     (np.float32, np.complex64)])
def test_dtype_mismatch(m, adt, bdt):
    with pytest.raises(TypeError, match="dtype"):
        jaxmg.potrs(np.eye(N, dtype=adt), np.ones((N, 1), bdt), 2, m, (ROW, REP))


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.float16, jnp.bfloat16, np.bool_])
def test_unsupported_dtype(m, dt):
    A = jnp.eye(N, dtype=dt)
    with pytest.raises(TypeError, match="dtype"):
        jaxmg.potrs(A, jnp.ones((N, 1), dt), 2, m, (ROW, REP))
    with pytest.raises(TypeError, match="dtype"):
        jaxmg.potri(A, 2, m, (ROW,))
    with pytest.raises(TypeError, match="dtype"):
        jaxmg.syevd(A, 2, m, (ROW,))


def test_integer_b_with_float_A(A, m):
    with pytest.raises(TypeError, match="dtype"):
        jaxmg.potrs(A, np.ones((N, 1), np.int32), 2, m, (ROW, REP))


@pytest.mark.parametrize(
    "T_A,exc,match",
    [(0, ValueError, "T_A"), (-1, ValueError, "T_A"), (2.5, TypeError, "T_A"), (2.0, TypeError, "T_A"),
     (True, TypeError, "T_A"), ("4", TypeError, "T_A")],
    ids=["0", "-1", "2.5", "2.0", "True", "str"],
)
def test_bad_T_A(A, b, m, T_A, exc, match):
    with pytest.raises(exc, match=match):
        jaxmg.potrs(A, b, T_A, m, (ROW, REP))
    with pytest.raises(exc, match=match):
        jaxmg.potri(A, T_A, m, (ROW,))
    with pytest.raises(exc, match=match):
        jaxmg.syevd(A, T_A, m, (ROW,))


@pytest.mark.parametrize("dispatch", ["Auto", "gpu", None, 1])
def test_bad_dispatch(A, b, m, dispatch):
    with pytest.raises(ValueError, match="dispatch"):
        jaxmg.potrs(A, b, 2, m, (ROW, REP), dispatch=dispatch)
    with pytest.raises(ValueError, match="dispatch"):
        jaxmg.potri(A, 2, m, (ROW,), dispatch=dispatch)
    with pytest.raises(ValueError, match="dispatch"):
        jaxmg.syevd(A, 2, m, (ROW,), dispatch=dispatch)


def test_numpy_integer_T_A_accepted(A, b, m):
    x = jaxmg.potrs(A, b, np.int64(2), m, (ROW, REP))
    np.testing.assert_allclose(np.asarray(x), 0.5)


@pytest.mark.parametrize("bad_mesh", ["x", jax.devices()[:4]], ids=["str", "list"])  # None: inferred
def test_mesh_not_a_mesh(A, b, bad_mesh):
    with pytest.raises(TypeError, match="mesh"):
        jaxmg.potrs(A, b, 2, bad_mesh, (ROW, REP))
    with pytest.raises(TypeError, match="mesh"):
        jaxmg.potri(A, 2, bad_mesh, (ROW,))
    with pytest.raises(TypeError, match="mesh"):
        jaxmg.syevd(A, 2, bad_mesh, (ROW,))


@pytest.mark.parametrize("flag", [1, 0, "yes", None], ids=str)
def test_flags_not_bool(A, b, m, flag):
    with pytest.raises(TypeError, match="return_status"):
        jaxmg.potrs(A, b, 2, m, (ROW, REP), return_status=flag)
    with pytest.raises(TypeError, match="return_status"):
        jaxmg.potri(A, 2, m, (ROW,), return_status=flag)
    with pytest.raises(TypeError, match="return_status"):
        jaxmg.syevd(A, 2, m, (ROW,), return_status=flag)
    with pytest.raises(TypeError, match="return_eigenvectors"):
        jaxmg.syevd(A, 2, m, (ROW,), return_eigenvectors=flag)
    with pytest.raises(TypeError, match="pad"):
        jaxmg.potrs(A, b, 2, m, (ROW, REP), pad=flag)


def test_pad_false_tile_not_dividing(m):
    A = put(np.eye(24) * 2, m, ROW)  # shard height 6
    b = put(np.ones((24, 1)), m, REP)
    with pytest.raises(ValueError, match=r"T_A=4.*pad=True|pad=True.*T_A"):
        jaxmg.potrs(A, b, 4, m, (ROW, REP), pad=False)
    with pytest.raises(ValueError, match="T_A"):
        jaxmg.potri(A, 4, m, (ROW,), pad=False)
    with pytest.raises(ValueError, match="T_A"):
        jaxmg.syevd(A, 5, m, (ROW,), pad=False)
    # a dividing tile, or one at least the shard height, is fine without padding
    np.testing.assert_allclose(np.asarray(jaxmg.potrs(A, b, 3, m, (ROW, REP), pad=False)), 0.5)
    np.testing.assert_allclose(np.asarray(jaxmg.potrs(A, b, 64, m, (ROW, REP), pad=False)), 0.5)


def test_ctx_outside_shard_map_needs_a_mesh():
    """Outside a shard_map the ctx functions take 1.4's global form; with no
    mesh anywhere (argument, A's sharding, context) that is a ValueError, and
    a keyword of the in-shard_map form only is a TypeError naming both."""
    a = jnp.eye(4)
    b = jnp.ones((4, 1))
    with pytest.raises(ValueError, match="no mesh"):
        jaxmg.potrs_shardmap_ctx(a, b, 2)
    with pytest.raises(ValueError, match="no mesh"):
        jaxmg.potri_shardmap_ctx(a, 2)
    with pytest.raises(ValueError, match="no mesh"):
        jaxmg.syevd_shardmap_ctx(a, 2)
    with pytest.raises(ValueError, match="no mesh"):
        jax.jit(lambda a: jaxmg.potri_shardmap_ctx(a, 2))(a)
    with pytest.raises(TypeError, match="outside jax.shard_map.*axis_name"):
        jaxmg.potrs_shardmap_ctx(a, b, 2, axis_name="x")


def _in_shard_map(m, body, n_out=2):
    outs = (P(), P()) if n_out == 2 else (P(), P(), P())
    return jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=outs, check_vma=False)(
        put(np.eye(N), m, ROW), put(np.ones((N, 1)), m, REP)
    )


def test_ctx_axis_name_not_in_mesh(m):
    with pytest.raises(ValueError, match="'y'.*not a manual axis"):
        _in_shard_map(m, lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, 2, axis_name="y"))
    with pytest.raises(ValueError, match="'y'"):
        _in_shard_map(m, lambda a, b: jaxmg.potri_shardmap_ctx(a, 2, axis_name="y"))
    with pytest.raises(ValueError, match="'y'"):
        _in_shard_map(m, lambda a, b: jaxmg.syevd_shardmap_ctx(a, 2, axis_name=("x", "y")), 3)


def test_ctx_bad_arguments(m):
    with pytest.raises(ValueError, match="T_A"):
        _in_shard_map(m, lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, 0))
    with pytest.raises(TypeError, match="dtype"):
        _in_shard_map(m, lambda a, b: jaxmg.potrs_shardmap_ctx(a, b.astype(jnp.float32), 2))
    with pytest.raises(ValueError, match="rows"):
        _in_shard_map(m, lambda a, b: jaxmg.potrs_shardmap_ctx(a, b[:-1], 2))
    # A replicated instead of row-sharded: the local block is N x N
    with pytest.raises(ValueError, match="row shard"):
        jax.shard_map(lambda a: jaxmg.potri_shardmap_ctx(a, 2), mesh=m, in_specs=(REP,),
                      out_specs=(REP, P(None)), check_vma=False)(np.eye(N))
    with pytest.raises(ValueError, match="T_A"):
        # shard height 4 on 2 devices, tile 3
        _in_shard_map(mesh(2), lambda a, b: jaxmg.potri_shardmap_ctx(a, 3, pad=False))


def test_valid_call_after_failures(A, b, m):
    """After all the failures above, a valid call works."""
    x = jaxmg.potrs(A, b, 2, m, (ROW, REP))
    np.testing.assert_allclose(np.asarray(x), 0.5)
