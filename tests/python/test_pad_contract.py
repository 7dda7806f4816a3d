"""What padding and batching promise the caller (issue 26 item 7 and its
donation and in_specs bullets): any depth of nested vmaps, donate=True
deleting A with tile or global padding, and a spec with more entries than
A has dimensions refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROW, mesh, put, spd

import jaxmg


@pytest.mark.parametrize("depth", [5, 6])
def test_nested_vmaps_any_depth(rng, depth):
    """Five and six nested vmaps over A (the C core used to refuse more
    than four batch dimensions when the result was read): the batch
    dimensions fold into one before the FFI call."""
    m, n = mesh(4), 8
    shape = (2,) + (1,) * (depth - 2) + (2,)
    A = np.stack([spd(rng, n, np.float64) for _ in range(4)]).reshape(shape + (n, n))
    f = lambda a: jaxmg.potri(a, None, mesh=m, in_specs=ROW)  # noqa: E731
    for _ in range(depth):
        f = jax.vmap(f)
    inv = np.asarray(jax.jit(f)(jnp.asarray(A)))
    np.testing.assert_allclose(inv, np.linalg.inv(A), rtol=1e-10, atol=1e-12)
    w, _ = (lambda g: g(jnp.asarray(A)))(
        _nest(lambda a: jaxmg.syevd(a, None, mesh=m, in_specs=ROW), depth))
    np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(A), rtol=1e-10, atol=1e-10)


def _nest(f, depth):
    for _ in range(depth):
        f = jax.vmap(f)
    return f


@pytest.mark.parametrize("n,T", [(12, 2), (12, None), (13, 2)])
@pytest.mark.parametrize("op", ["potrs", "potri", "syevd", "lu_solve"])
def test_donate_deletes_a(rng, op, n, T):
    """donate=True deletes A, with tile padding (T = 2 does not divide the
    3 rows a shard) and with global padding (4 does not divide 13)."""
    m = mesh(4)
    a = spd(rng, n, np.float64)
    A = put(a, m, ROW)
    kw = dict(mesh=m, in_specs=ROW, donate=True)
    if op in ("potrs", "lu_solve"):
        x = getattr(jaxmg, op)(A, jnp.ones((n, 1)), T, **kw)
        np.testing.assert_allclose(np.asarray(x), np.linalg.solve(a, np.ones((n, 1))), rtol=1e-10)
    elif op == "potri":
        np.testing.assert_allclose(np.asarray(jaxmg.potri(A, T, **kw)), np.linalg.inv(a),
                                   rtol=1e-10, atol=1e-12)
    else:
        w, _ = jaxmg.syevd(A, T, **kw)
        np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(a), rtol=1e-10)
    assert A.is_deleted()


@pytest.mark.parametrize("spec", [jax.sharding.PartitionSpec("x", None, None),
                                  jax.sharding.PartitionSpec(None, None, None)])
def test_three_entry_spec_for_a_is_refused(spec):
    m = mesh(4)
    with pytest.raises(ValueError, match="more entries than the array has dimensions"):
        jaxmg.potri(jnp.eye(8), None, mesh=m, in_specs=spec)
    with pytest.raises(ValueError, match="more entries than the array has dimensions"):
        jaxmg.potrs(jnp.eye(8), jnp.ones(8), None, mesh=m,
                    in_specs=(spec, jax.sharding.PartitionSpec(None, None)))
