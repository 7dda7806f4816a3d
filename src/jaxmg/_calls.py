"""The FFI calls themselves, one per op, on one device's padded shard.

Shapes follow csrc/ops/ops.h. The matrix result aliases A and the potrs
solution aliases b, so the engine works in place; XLA copies an input first
unless the caller donated it, which keeps the caller's arrays intact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _library, _multiproc, _shard

# Right-hand sides travel column-major (major-to-minor (1, 0)), as LAPACK and
# cuSolverMg read them; XLA transposes the small (N, K) array for us.
_COL_MAJOR = (1, 0)


def _attrs(site: str, tile: int, nparties: int, dispatch: int, **extra) -> dict:
    attrs = dict(site=site, tile=np.int64(tile), nparties=np.int64(nparties),
                 dispatch=np.int64(dispatch))
    attrs.update({k: np.int64(v) for k, v in extra.items()})
    attrs.update(_multiproc.meet_attrs(_library.current_platform()))
    return attrs


def potrs(a, b, where, *, site: str, tile: int, nparties: int, dispatch: int):
    out = (
        jax.ShapeDtypeStruct(a.shape, a.dtype),
        jax.ShapeDtypeStruct(b.shape, b.dtype),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    call = jax.ffi.ffi_call(
        _library.target_name("potrs"),
        out,
        input_layouts=(None, _COL_MAJOR, None),
        output_layouts=(None, _COL_MAJOR, None),
        input_output_aliases={0: 0, 1: 1},
        has_side_effect=True,
        vmap_method="sequential",
    )
    _, x, status = call(a, b, where, **_attrs(site, tile, nparties, dispatch))
    return x, status


def potri(a, where, *, site: str, tile: int, nparties: int, dispatch: int):
    out = (jax.ShapeDtypeStruct(a.shape, a.dtype), jax.ShapeDtypeStruct((), jnp.int32))
    call = jax.ffi.ffi_call(
        _library.target_name("potri"),
        out,
        input_output_aliases={0: 0},
        has_side_effect=True,
        vmap_method="sequential",
    )
    return call(a, where, **_attrs(site, tile, nparties, dispatch))


def syevd(a, where, *, site: str, tile: int, nparties: int, dispatch: int, jobz: bool):
    n = a.shape[1]
    out = (
        jax.ShapeDtypeStruct(a.shape, a.dtype),
        jax.ShapeDtypeStruct((n,), _shard.real_dtype(a.dtype)),
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    call = jax.ffi.ffi_call(
        _library.target_name("syevd"),
        out,
        input_output_aliases={0: 0},
        has_side_effect=True,
        vmap_method="sequential",
    )
    return call(a, where, **_attrs(site, tile, nparties, dispatch, jobz=int(jobz)))
