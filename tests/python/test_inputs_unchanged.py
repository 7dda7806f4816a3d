"""The caller's A and b survive every op (the FFI works in place on an XLA
copy unless A is donated): values equal, arrays not deleted."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxmg
from helpers import REP, ROW, hermitian, mesh, put, randn, spd

# (devices, N, T_A): no padding at all (the FFI sees A's own buffer shape),
# tile padding, global padding.
CASES = [(4, 16, 4), (4, 16, 3), (4, 13, 2), (1, 6, 6)]


def _ops(m, T_A):
    return {
        "potrs": lambda A, b: jaxmg.potrs(A, b, T_A, m, (ROW, REP), return_status=True),
        "potri": lambda A, b: jaxmg.potri(A, T_A, m, (ROW,), return_status=True),
        "syevd": lambda A, b: jaxmg.syevd(A, T_A, m, (ROW,), return_status=True),
    }


def _check(A, b, A0, b0):
    assert not A.is_deleted() and not b.is_deleted()
    np.testing.assert_array_equal(np.asarray(A), A0)
    np.testing.assert_array_equal(np.asarray(b), b0)
    for s in A.addressable_shards:
        np.testing.assert_array_equal(np.asarray(s.data), A0[s.index])


@pytest.mark.parametrize("op", ["potrs", "potri", "syevd"])
@pytest.mark.parametrize("ndev,n,T_A", CASES, ids=str)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_inputs_unchanged(rng, op, ndev, n, T_A, jit):
    m = mesh(ndev)
    dtype = np.complex128 if op == "syevd" else np.float64
    A0 = (hermitian if op == "syevd" else spd)(rng, n, dtype)
    b0 = randn(rng, (n, 2), dtype)
    A, b = put(A0, m, ROW), put(b0, m, REP)
    f = _ops(m, T_A)[op]
    if jit:
        f = jax.jit(f)
    out = f(A, b)
    jax.block_until_ready(out)
    assert int(out[-1]) == 0
    _check(A, b, A0, b0)
    out = f(A, b)  # and once more, on the same arrays
    jax.block_until_ready(out)
    _check(A, b, A0, b0)


def test_inputs_unchanged_after_failure(rng):
    m, n = mesh(4), 12
    A0 = -np.eye(n)
    b0 = np.ones((n, 1))
    A, b = put(A0, m, ROW), put(b0, m, REP)
    x, status = jaxmg.potrs(A, b, 3, m, (ROW, REP), return_status=True)
    assert int(status) == 1
    _check(A, b, A0, b0)


def test_vector_rhs_unchanged(rng):
    m, n = mesh(2), 10
    A0, b0 = spd(rng, n, np.complex64), randn(rng, (n,), np.complex64)
    A, b = put(A0, m, ROW), put(b0, m, P(None))
    jax.block_until_ready(jaxmg.potrs(A, b, 5, m, (ROW, REP)))
    _check(A, b, A0, b0)


@pytest.mark.parametrize("op", ["potrs", "potri", "syevd"])
def test_ctx_inputs_unchanged(rng, op):
    m, n, T_A = mesh(4), 16, 4
    dtype = np.float64
    A0 = (hermitian if op == "syevd" else spd)(rng, n, dtype)
    b0 = randn(rng, (n, 1), dtype)
    A, b = put(A0, m, ROW), put(b0, m, REP)
    bodies = {
        "potrs": (lambda a, b: jaxmg.potrs_shardmap_ctx(a, b, T_A), (REP, P(None))),
        "potri": (lambda a, b: jaxmg.potri_shardmap_ctx(a, T_A), (ROW, P(None))),
        "syevd": (lambda a, b: jaxmg.syevd_shardmap_ctx(a, T_A), (P(None), P(None, "x"), P(None))),
    }
    body, outs = bodies[op]
    # a mesh-level call first loads the handlers (see test_ctx.py)
    jaxmg.potrs(np.eye(4), np.ones((4, 1)), 1, m, (ROW, REP))
    f = jax.jit(jax.shard_map(body, mesh=m, in_specs=(ROW, REP), out_specs=outs, check_vma=False))
    out = f(A, b)
    jax.block_until_ready(out)
    assert int(out[-1][0]) == 0
    _check(A, b, A0, b0)
