"""Argument checks, run before anything is traced or executed.

Every failure is a ValueError or TypeError whose message names the argument
and what was expected, so a mistake never reaches the C core.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

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


def same_matrix(B, A, what: str = "B") -> None:
    """B a matrix of A's shape and dtype (a second operand laid out as A)."""
    (sb, dtb), (sa, dta) = matrix(B, what), matrix(A, "A")
    if (sb, dtb) != (sa, dta):
        raise ValueError(
            f"jaxmg: {what} must have A's shape and dtype (one shape and dtype for both); got "
            f"{sb} {dtb} and A {sa} {dta}"
        )


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
    # ceil(N / P) rows: N = P nloc from a caller's shard_map; less where a
    # core padded A's rows at its end for JAX's even sharding.
    if n < 1 or -(-n // nparties) != nloc:
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
