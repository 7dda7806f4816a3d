"""potrs's log det result (_calls.potrs_with_logdet): log det of the padded
matrix from its Cholesky factor, identical on every shard, NaN on failure;
_calls.potrs keeps returning (x, status)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxmg.pipeline import ffi as _calls
from jaxmg.pipeline import decide as _decide
from jaxmg.engines import library as _library
from jaxmg.pipeline import shard as _shard
from helpers import DTYPES, REP, ROW, eps, mesh, put, randn, real_dtype, spd


def _body(a, b, *, T_A, fn):
    """One shard's potrs, padded to whole tiles like potrs_shardmap_ctx."""
    axes = ("x",)
    nparties = _shard.axis_sizes()["x"]
    nloc = a.shape[0]
    tile = min(T_A, nloc)  # cuSolverMg's padding inside A (_shard.PadPlan), on any engine
    nloc_p = -(-nloc // tile) * tile
    where = _shard.where_am_i(axes)
    a_p = _shard.pad_shard(a, nparties, where[0], nloc_p, 1)
    b_p = _shard.pad_rows(b, nparties, nloc, nloc_p)
    if _shard.is_complex(a.dtype):
        b_p = jnp.conj(b_p)
    out = fn(a_p, b_p, where, site=_shard.new_site(), tile=tile, nparties=nparties,
             dispatch=_decide.c_code("host"))
    x = _shard.unpad_rows(out[0], nparties, nloc, nloc_p)
    if _shard.is_complex(a.dtype):
        x = jnp.conj(x)
    rest = tuple(o.reshape(1) for o in out[1:])
    return (x,) + rest


def run(A, b, ndev, T_A, fn=_calls.potrs_with_logdet):
    _library.ensure_registered("cpu")
    m = mesh(ndev)
    nout = 3 if fn is _calls.potrs_with_logdet else 2
    f = jax.jit(jax.shard_map(
        functools.partial(_body, T_A=T_A, fn=fn), mesh=m, in_specs=(ROW, REP),
        out_specs=(REP,) + (P("x"),) * (nout - 1), check_vma=False))
    return f(put(A, m, ROW), put(b, m, REP))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ndev,n,T_A", [(1, 6, 4), (2, 12, 5), (4, 16, 3), (8, 24, 3)], ids=str)
def test_logdet(rng, dtype, ndev, n, T_A):
    A = spd(rng, n, dtype)
    b = randn(rng, (n, 2), dtype)
    x, status, logdet = run(A, b, ndev, T_A)
    assert logdet.dtype == real_dtype(dtype)
    assert np.all(np.asarray(status) == 0)
    ld = np.asarray(logdet)
    assert np.all(ld == ld[0]), "every shard carries the same logdet"
    sign, ref = np.linalg.slogdet(A.astype(np.complex128))
    assert abs(sign - 1) < 1e-6
    assert abs(ld[0] - ref) <= 200 * n * eps(dtype) * max(1.0, abs(ref))
    Ad = A.astype(np.complex128)
    assert np.linalg.norm(Ad @ np.asarray(x) - b) <= 1e3 * n * eps(dtype) * np.linalg.norm(b) * np.linalg.cond(Ad)


def test_logdet_failure_is_nan(rng):
    n = 12
    A = spd(rng, n, np.float64)
    A[5, 5] = -1.0
    x, status, logdet = run(A, randn(rng, (n, 1), np.float64), 3, 2)
    assert np.all(np.asarray(status) > 0)
    assert np.all(np.isnan(np.asarray(logdet))) and np.all(np.isnan(np.asarray(x)))


def test_potrs_keeps_two_results(rng):
    n = 10
    A = spd(rng, n, np.float64)
    out = run(A, randn(rng, (n, 1), np.float64), 2, 5, fn=_calls.potrs)
    assert len(out) == 2


def test_logdet_large_magnitude(rng):
    """A well conditioned matrix with a huge determinant: logdet stays exact
    where det itself would overflow."""
    n = 40
    A = spd(rng, n, np.float64) * 1e12
    _, _, logdet = run(A, randn(rng, (n, 1), np.float64), 4, 4)
    ref = np.linalg.slogdet(A)[1]
    assert ref > 1000 and abs(float(np.asarray(logdet)[0]) - ref) <= 1e-10 * ref
