"""Argument checks, run before anything is traced or executed.

Every failure is a ValueError or TypeError whose message names the argument
and what was expected, so a mistake never reaches the C core.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

SUPPORTED = (np.dtype("float32"), np.dtype("float64"), np.dtype("complex64"), np.dtype("complex128"))


def tile(T_A) -> int | None:
    """T_A as an int, or None for the automatic tile."""
    if T_A is None:
        return None
    if isinstance(T_A, bool) or not isinstance(T_A, numbers.Integral):
        raise TypeError(f"jaxmg: T_A must be an int or None, got {type(T_A).__name__} {T_A!r}")
    if T_A < 1:
        raise ValueError(f"jaxmg: T_A must be >= 1, got {T_A}")
    return int(T_A)


def flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"jaxmg: {name} must be True or False, got {value!r}")
    return bool(value)


# --- legacy (0.1.0's strict spec and mesh checks)

def mesh(m) -> Mesh:
    # the strict forms of 0.1.0, kept for _general_ops (issue 15) until its
    # public functions go through _request.normalise like potrs/potri/syevd
    if not isinstance(m, Mesh):
        raise TypeError(f"jaxmg: mesh must be a jax.sharding.Mesh, got {type(m).__name__}")
    return m


def _spec(s, what: str) -> PartitionSpec:
    if not isinstance(s, PartitionSpec):
        raise TypeError(f"jaxmg: {what} must be a PartitionSpec, got {s!r}")
    return s


def _axes(part, m: Mesh, what: str) -> tuple[str, ...]:
    axes = part if isinstance(part, tuple) else (part,)
    for ax in axes:
        if not isinstance(ax, str):
            raise ValueError(f"jaxmg: {what}: mesh axis names must be strings, got {ax!r}")
        if ax not in m.axis_names:
            raise ValueError(
                f"jaxmg: {what}: axis {ax!r} is not in the mesh (axes {tuple(m.axis_names)})"
            )
    if len(set(axes)) != len(axes):
        raise ValueError(f"jaxmg: {what}: axis repeated in {axes}")
    return axes


def matrix_spec(s, m: Mesh) -> tuple[str, ...]:
    """A's spec must shard rows over one axis (or a tuple of axes) and
    replicate columns: P(ax, None). Returns the solve axes."""
    s = _spec(s, "in_specs[0] (the spec of A)")
    parts = tuple(s) + (None,) * (2 - len(tuple(s)))
    if len(parts) != 2 or parts[0] is None or parts[1] is not None:
        raise ValueError(
            f"jaxmg: A must be row-sharded as P(axis, None) (or P((ax1, ax2), None)); got {s}"
        )
    return _axes(parts[0], m, "in_specs[0]")


def replicated_spec(s, what: str) -> None:
    s = _spec(s, what)
    if any(part is not None for part in tuple(s)):
        raise ValueError(f"jaxmg: {what} must be replicated, P(None, None); got {s}")


def in_specs(specs, m: Mesh, n: int) -> tuple[PartitionSpec, ...]:
    if not isinstance(specs, (tuple, list)) or len(specs) != n:
        want = "(P(axis, None), P(None, None))" if n == 2 else "(P(axis, None),)"
        raise ValueError(f"jaxmg: in_specs must be a tuple of {n} PartitionSpec(s) {want}; got {specs!r}")
    return tuple(specs)


def _shape_dtype(x, what: str):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"jaxmg: {what} must be an array, got {type(x).__name__}")
    return tuple(x.shape), np.dtype(x.dtype)


def matrix(A, what: str = "A") -> tuple[tuple[int, int], np.dtype]:
    shape, dt = _shape_dtype(A, what)
    if len(shape) != 2:
        raise ValueError(f"jaxmg: {what} must be a 2-D matrix, got shape {shape}")
    dtype(dt, what)
    return shape, dt


def square(A, what: str = "A") -> tuple[int, np.dtype]:
    shape, dt = _shape_dtype(A, what)
    if len(shape) != 2:
        raise ValueError(f"jaxmg: {what} must be a 2-D matrix, got shape {shape}")
    if shape[0] != shape[1]:
        raise ValueError(f"jaxmg: {what} must be square, got shape {shape}")
    dtype(dt, what)
    return shape[0], dt


def dtype(dt, what: str) -> np.dtype:
    dt = np.dtype(dt)
    if dt not in SUPPORTED:
        raise TypeError(
            f"jaxmg: {what} has dtype {dt}; supported are float32, float64, complex64, complex128"
        )
    return dt


def rhs(b, n: int, a_dtype) -> tuple[int, bool]:
    """b must be (N,) or (N, K) of A's dtype. Returns (K, was_vector)."""
    shape, dt = _shape_dtype(b, "b")
    if len(shape) not in (1, 2):
        raise ValueError(f"jaxmg: b must be (N,) or (N, K), got shape {shape}")
    if shape[0] != n:
        raise ValueError(f"jaxmg: b has {shape[0]} rows but A is {n} x {n}")
    if len(shape) == 2 and shape[1] < 1:
        raise ValueError("jaxmg: b has no columns")
    dtype(dt, "b")
    if dt != a_dtype:
        raise TypeError(f"jaxmg: b has dtype {dt} but A has {a_dtype}; cast one of them")
    return (1 if len(shape) == 1 else shape[1]), len(shape) == 1


def shard_axes(axis_name) -> tuple[str, ...]:
    """The solve axes inside shard_map: the given name(s), else every manual
    axis of the current mesh (flattened in mesh order)."""
    mesh_ = jax.sharding.get_abstract_mesh()
    manual = tuple(getattr(mesh_, "manual_axes", ()) or ())
    if not manual:
        raise ValueError(
            "jaxmg: the *_shardmap_ctx functions must be called inside jax.shard_map"
        )
    if axis_name is None:
        return manual
    axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    for ax in axes:
        if ax not in manual:
            raise ValueError(
                f"jaxmg: axis_name {ax!r} is not a manual axis of the enclosing shard_map "
                f"(manual axes {manual})"
            )
    return axes


def local_shard(a, nparties: int, what: str = "the local shard of A") -> tuple[int, int, np.dtype]:
    shape, dt = _shape_dtype(a, what)
    if len(shape) != 2:
        raise ValueError(f"jaxmg: {what} must be 2-D, got shape {shape}")
    nloc, n = shape
    if n != nparties * nloc:
        raise ValueError(
            f"jaxmg: {what} has shape {shape}, but a row shard of an N x N matrix over "
            f"{nparties} devices must be (N/{nparties}, N); is A sharded P(axis, None) over "
            "the axis you solve along?"
        )
    dtype(dt, what)
    return nloc, n, dt


def solve_size(m, axes: tuple[str, ...]) -> int:
    size = 1
    for ax in axes:
        size *= m.shape[ax]
    return size


def as_array(x):
    return x if isinstance(x, jax.Array) else jnp.asarray(x)
