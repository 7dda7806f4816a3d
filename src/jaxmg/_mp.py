"""The cuSOLVERMp engine's Python side: its library, its device sets and
its calls.

libjaxmg_mp.so is loaded only when a solve uses this engine, after JAX's
CUDA backend is up (jax.devices()), so that the process has one libnccl:
the one JAX's plugin loaded from the nvidia-nccl wheel, which libcusolverMp
also resolves. Its NCCL version is checked before anything else.

A device set is the devices of one solve group in NCCL rank order
(_grid.grid_from_mesh). open_sets(grid) makes every group's communicator:
the process of rank 0 draws an NCCL id, _nccl_bootstrap moves it to the
group's other processes, and every local rank joins, one Python thread per
local device (each rank's ncclCommInitRank blocks until all have joined).
Sets are cached per (mesh devices, grid); a set whose communicator was lost
(a timeout or an NCCL failure) is closed and made again on the next call.

call(op, grid, a, b, ...) runs one op: a jax.shard_map over the solve axes
whose body is one ffi_call per device (mp_exports.c documents the buffers).
"""

from __future__ import annotations

import ctypes
import pathlib
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import _grid, _nccl_bootstrap

NCCL_MIN = 22902
ERRLEN = 512
OPS = ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar")
SHARD_ROWS, SHARD_COLS, SHARD_2D = 0, 1, 2

_lock = threading.Lock()
_lib = None
_open: dict[str, tuple] = {}  # tag -> (grid, local (ordinal) list)


class MpError(RuntimeError):
    """The cuSOLVERMp engine failed on this rank (the message names it)."""


def _preload() -> None:
    try:
        import nvidia
    except ImportError:
        return
    for sub, soname in (("nccl/lib", "libnccl.so.2"), ("cu13/lib", "libcusolverMp.so.0")):
        for root in getattr(nvidia, "__path__", []):
            path = pathlib.Path(root) / sub / soname
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                break


def library() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        from ._library import _capsule_address, _library_path

        jax.devices()  # the CUDA plugin loads its libnccl first
        _preload()
        lib = ctypes.CDLL(str(_library_path("jaxmg_mp")))
        lib.jmg_mp_nccl_version.restype = ctypes.c_int
        lib.jmg_mp_unique_id.argtypes = [ctypes.c_char_p]
        lib.jmg_mp_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p] + [ctypes.c_int] * 5 + [
            ctypes.c_double,
            ctypes.c_char_p,
        ]
        lib.jmg_mp_close.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.jmg_mp_lost.argtypes = [ctypes.c_char_p, ctypes.c_int]
        v = lib.jmg_mp_nccl_version()
        if v < NCCL_MIN:
            raise ImportError(
                f"jaxmg: the NCCL in this process is {v // 10000}.{v // 100 % 100}.{v % 100}; "
                "the cuSOLVERMp engine needs >= 2.29.2 (pip install -U nvidia-nccl-cu13)"
            )
        for op in OPS:
            fn = getattr(lib, f"jaxmg_mp_{op}_cuda")
            jax.ffi.register_ffi_target(
                f"jaxmg_mp_{op}", jax.ffi.pycapsule(fn), platform="CUDA"
            )
        _lib = lib
        return lib


def _unique_id() -> bytes:
    buf = ctypes.create_string_buffer(_nccl_bootstrap.ID_BYTES)
    rc = library().jmg_mp_unique_id(buf)
    if rc != 0:
        raise MpError(f"jaxmg: ncclGetUniqueId failed (NCCL result {rc})")
    return buf.raw


def set_tag(grid: _grid.Grid) -> str:
    flat = [d for g in grid.groups for d in g]
    return _nccl_bootstrap.set_tag(flat, (grid.p, grid.q), "mp")


def open_sets(grid: _grid.Grid) -> str:
    """Opens every group of the grid that this process takes part in;
    returns the tag the FFI calls name."""
    tag = set_tag(grid)
    lib = library()
    if tag in _open and not any(lib.jmg_mp_lost(tag.encode(), o) for o in _open[tag][1]):
        return tag
    if tag in _open:
        close(tag)
    devices = {d.id: d for d in jax.devices()}
    me = jax.process_index()
    timeout = _nccl_bootstrap.timeout_s()
    local_ordinals = []
    for k, group in enumerate(grid.groups):
        procs = [devices[d].process_index for d in group]
        if me not in procs:
            continue
        uid = _nccl_bootstrap.exchange_unique_id(procs, f"{tag}.{k}", _unique_id)
        joins = [(r, devices[d].local_hardware_id) for r, d in enumerate(group)
                 if devices[d].process_index == me]
        errors: list[str] = []

        def join(rank: int, ordinal: int) -> None:
            err = ctypes.create_string_buffer(ERRLEN)
            rc = lib.jmg_mp_open(tag.encode(), uid, len(group), rank, ordinal, grid.p, grid.q,
                                 timeout, err)
            if rc != 0:
                errors.append(err.value.decode(errors="replace"))

        threads = [threading.Thread(target=join, args=j) for j in joins]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise MpError("; ".join(errors))
        local_ordinals += [o for _, o in joins]
    _open[tag] = (grid, local_ordinals)
    return tag


def close(tag: str) -> None:
    """Closes this process's ranks of the sets under tag (collective: every
    process of the sets closes them together)."""
    grid, ordinals = _open.pop(tag, (None, []))
    for o in ordinals:
        library().jmg_mp_close(tag.encode(), o)


def shard_kind(spec, axes: tuple[str, ...]) -> tuple[int, int, int]:
    """(kind, mesh_a, mesh_b) of A's PartitionSpec over the solve axes, in
    the terms of csrc/layout/layout2d.h; ValueError for anything else."""
    rows, cols = (tuple(spec) + (None, None))[:2]
    if len(axes) == 2 and (rows, cols) == axes:
        return SHARD_2D, None, None
    if len(axes) == 1 and rows == axes[0] and cols is None:
        return SHARD_ROWS, None, None
    if len(axes) == 1 and rows is None and cols == axes[0]:
        return SHARD_COLS, None, None
    raise ValueError(
        f"jaxmg: the cuSOLVERMp engine takes A sharded as P({', '.join(map(repr, axes))}) "
        f"(or one axis on rows or columns), got {spec}"
    )


def _outputs(op: str, m: int, n: int, nrhs: int, dtype, spec, shard_shape):
    """(ffi result shapes per device, out_specs) after A's shard and b."""
    real = jnp.finfo(dtype).dtype
    S = jax.ShapeDtypeStruct
    rep = P()
    if op in ("potrs", "lu_solve", "least_squares"):
        res = [S(shard_shape, dtype), S((nrhs, m), dtype)]
        specs = [spec, rep]
        if op == "potrs":
            res.append(S((), real))
            specs.append(rep)
        return res, specs
    res, specs = [S(shard_shape, dtype)], [spec]
    extra = {"syevd": [(n,)], "qr": [(n, n)], "gesvd": [(n,), (n, n)], "polar": [(n, n)]}
    for shape in extra.get(op, []):
        res.append(S(shape, real if len(shape) == 1 else dtype))
        specs.append(rep)
    return res, specs


def call(op: str, grid: _grid.Grid, mesh, a, b=None, *, spec, tile: int, jobz: int = 1):
    """Runs op on the cuSOLVERMp engine. Returns the ffi results (global),
    the last being the per-device status. Replicated matrices come back
    transposed (column-major), as the engine writes them."""
    if op not in OPS:
        raise ValueError(f"jaxmg: unknown op {op!r}")
    kind, _, _ = shard_kind(spec, grid.axes)
    m, n = a.shape
    sizes = [mesh.shape[ax] for ax in grid.axes]
    mesh_a = sizes[0] if kind != SHARD_COLS else 1
    mesh_b = sizes[1] if kind == SHARD_2D else (sizes[0] if kind == SHARD_COLS else 1)
    shard_shape = (m // mesh_a, n // mesh_b)
    nrhs = 0 if b is None else b.shape[1]
    tag = open_sets(grid)
    res, out_specs = _outputs(op, m, n, nrhs, a.dtype, spec, shard_shape)
    res.append(jax.ShapeDtypeStruct((1,), jnp.int32))
    out_specs.append(P(grid.axes))
    has_b = b is not None
    attrs = dict(tag=tag, m=np.int64(m), n=np.int64(n), nrhs=np.int64(nrhs),
                 tile=np.int64(tile), kind=np.int64(kind), mesh_a=np.int64(mesh_a),
                 mesh_b=np.int64(mesh_b), jobz=np.int64(jobz))
    aliases = {0: 0, 1: 1} if has_b else {0: 0}
    fn = jax.ffi.ffi_call(f"jaxmg_mp_{op}", res, vmap_method="sequential",
                          input_output_aliases=aliases)

    def body(*args):
        return tuple(fn(*args, **attrs))

    in_specs = (spec, P()) if has_b else (spec,)
    args = (a, b.T) if has_b else (a,)
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=tuple(out_specs),
                         check_vma=False)(*args)
