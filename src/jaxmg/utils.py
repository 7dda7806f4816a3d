"""Helpers that JAXMg's users import beside the operations (jaxmg.utils in
JAXMg 0.0.9 and 1.4): test matrices, the mesh and spec of an array, the
real dtype of a complex one, the tile padding of a shard, and jaxmg's
warning class."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class JaxMgWarning(UserWarning):
    """Warnings that jaxmg itself issues."""


def maybe_real_dtype_from_complex(dtype):
    """float32 for complex64, float64 for complex128; real dtypes unchanged."""
    return np.finfo(np.dtype(dtype)).dtype


def calculate_padding(shard_size, T_A):
    """The rows to add to a shard of shard_size rows so that it holds a whole
    number of T_A-row tiles: (-shard_size) mod T_A, as JAXMg 0.0.9's
    jaxmg.calculate_padding (benchmark clients size their inputs with it).
    jaxmg pads internally, and only where an engine needs it; this is the
    arithmetic alone."""
    for name, value, least in (("shard_size", shard_size, 0), ("T_A", T_A, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"jaxmg: calculate_padding: {name} must be an int, got {value!r}")
        if value < least:
            raise ValueError(f"jaxmg: calculate_padding: {name} must be >= {least}, got {value}")
    return int(-int(shard_size) % int(T_A))


def get_mesh_and_spec_from_array(a):
    """(mesh, PartitionSpec) of an array placed with a NamedSharding; under
    jit, of its type (jax.typeof). Anything else is a ValueError."""
    s = jax.typeof(a).sharding if isinstance(a, jax.core.Tracer) else getattr(a, "sharding", None)
    if not isinstance(s, jax.sharding.NamedSharding):
        raise ValueError(
            f"jaxmg: the array has no NamedSharding (got {type(s).__name__}); place it with "
            "jax.device_put(a, NamedSharding(mesh, spec))"
        )
    return s.mesh, s.spec


def random_psd(n, dtype=jnp.float64, seed=0):
    """A random n x n symmetric (real) / Hermitian (complex) positive
    definite matrix, X X^H / n + I with X standard normal: eigenvalues in
    about [1, 5], so every dtype solves it well. Deterministic in seed."""
    dtype = jnp.dtype(dtype)
    key = jax.random.key(seed)
    x = jax.random.normal(key, (n, n), dtype)
    a = x @ jnp.conj(x).T / max(n, 1) + jnp.eye(n, dtype=dtype)
    return (a + jnp.conj(a).T) / 2
