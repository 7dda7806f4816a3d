"""The cuSOLVERMp engine's Python side: its library, its device sets and
its calls.

libjaxmg_mp.so is loaded only when a solve uses this engine, after JAX's
CUDA backend is up (jax.devices()), so that the process has one libnccl:
the one JAX's plugin loaded from the nvidia-nccl wheel, which libcusolverMp
also resolves. Its NCCL version is checked before anything else.

A device set is the devices of one solve group in NCCL rank order
(_grid.grid_from_mesh). open_sets(grid) makes every group's communicator:
the process of rank 0 draws an NCCL id, _nccl_bootstrap moves it to the
group's other processes, and every local rank joins: one Python thread per
local device (each rank's ncclCommInitRank blocks until all have joined),
or, with JAXMG_MP_INIT=group, all local ranks from one thread in an NCCL
group (ncclGroupStart/End). Which of the two works with cuSOLVERMp on
hardware is for the GPU run to show (test_one_process_all_gpus runs both).
Sets are cached per (mesh devices, grid); a set whose communicator was lost
(a timeout or an NCCL failure) is closed and made again on the next call.

call(op, grid, a, b, ...) runs one op: a jax.shard_map over the solve axes
whose body is one ffi_call per device (mp_exports.c documents the buffers).
"""

from __future__ import annotations

import ctypes
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import _cuda_libs, _grid, _nccl_bootstrap

NCCL_MIN = 22902
ERRLEN = 512
OPS = ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar")
SHARD_ROWS, SHARD_COLS, SHARD_2D = 0, 1, 2

_lock = threading.Lock()
_lib = None
_open: dict[str, tuple] = {}  # tag -> (grid, local (ordinal) list)


class MpError(RuntimeError):
    """The cuSOLVERMp engine failed on this rank (the message names it)."""


def _nccl_version() -> tuple[int, str] | None:
    """(version code, path) of the libnccl.so.2 this process uses: the
    nvidia-nccl wheel's (as _cuda_libs loads it), else the loader's; None
    if there is none (_cuda_libs.preload then names the package)."""
    soname = "libnccl.so.2"
    for cand in list(_cuda_libs._candidates(soname, ("nccl/lib",))) + [soname]:
        try:
            lib = ctypes.CDLL(cand, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        v = ctypes.c_int(0)
        if lib.ncclGetVersion(ctypes.byref(v)) != 0:
            return None
        return v.value, cand
    return None


def _check_nccl(major: str) -> None:
    """Before libcusolverMp is loaded: cuBLASMp 0.10 (which it loads) calls
    ncclCommQueryProperties, new in NCCL 2.29.2, so an older NCCL fails
    there with an undefined symbol; say so plainly instead."""
    found = _nccl_version()
    if found is None or found[0] >= NCCL_MIN:
        return
    v, where = found
    raise ImportError(
        f"jaxmg: the cuSOLVERMp engine needs NCCL >= 2.29.2 (cuBLASMp 0.10 calls "
        f"ncclCommQueryProperties); this process has NCCL {v // 10000}.{v // 100 % 100}.{v % 100} "
        f"({where}). Fix: pip install -U 'nvidia-nccl-cu{major}>=2.29.2' (JAX's CUDA plugin "
        "loads the same wheel's library)"
    )


def library() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        from ._library import _library_path

        path = _library_path("jaxmg_mp")
        jax.devices()  # the CUDA plugin loads its libnccl first
        _check_nccl(_cuda_libs.build_info(path.parent).get("cuda_major", "13"))
        # libnccl.so.2 then libcusolverMp.so.0 from the nvidia wheels of the
        # CUDA major this library was built for (ImportError naming the package).
        _cuda_libs.preload(path.parent, "mp")
        lib = ctypes.CDLL(str(path))
        lib.jmg_mp_nccl_version.restype = ctypes.c_int
        lib.jmg_mp_unique_id.argtypes = [ctypes.c_char_p]
        lib.jmg_mp_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p] + [ctypes.c_int] * 5 + [
            ctypes.c_double,
            ctypes.c_char_p,
        ]
        lib.jmg_mp_open_local.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                          ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                                          ctypes.c_int, ctypes.c_double, ctypes.c_char_p]
        lib.jmg_mp_close.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.jmg_mp_lost.argtypes = [ctypes.c_char_p, ctypes.c_int]
        v = lib.jmg_mp_nccl_version()
        if v < NCCL_MIN:
            major = _cuda_libs.build_info(path.parent).get("cuda_major", "13")
            raise ImportError(
                f"jaxmg: the NCCL in this process is {v // 10000}.{v // 100 % 100}.{v % 100}; "
                f"the cuSOLVERMp engine needs >= 2.29.2 (pip install -U nvidia-nccl-cu{major})"
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
        if len(joins) > 1 and os.environ.get("JAXMG_MP_INIT", "threads") == "group":
            # All local ranks from this thread in one NCCL group.
            n = len(joins)
            ranks = (ctypes.c_int * n)(*[r for r, _ in joins])
            ords = (ctypes.c_int * n)(*[o for _, o in joins])
            err = ctypes.create_string_buffer(ERRLEN)
            if lib.jmg_mp_open_local(tag.encode(), uid, len(group), n, ranks, ords, grid.p,
                                     grid.q, timeout, err):
                raise MpError(err.value.decode(errors="replace"))
            local_ordinals += [o for _, o in joins]
            continue

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


_SQUARE = {"potrs", "potri", "syevd", "lu_solve"}
_TALL = {"least_squares", "qr", "gesvd", "polar"}
_WITH_B = {"potrs", "lu_solve", "least_squares"}
_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128)}


def validate(op: str, grid: _grid.Grid, mesh, a, b, spec, tile) -> None:
    """ValueError / TypeError naming the problem, before anything runs (the
    C engine checks again, alike on every rank)."""
    if op not in OPS:
        raise ValueError(f"jaxmg: unknown op {op!r}")
    if len(getattr(a, "shape", ())) != 2:
        raise ValueError(f"jaxmg: {op} takes a 2-D matrix, got shape {getattr(a, 'shape', None)}")
    if np.dtype(a.dtype) not in _DTYPES:
        raise TypeError(f"jaxmg: {op} takes float32, float64, complex64 or complex128, got {a.dtype}")
    m, n = a.shape
    if op in _SQUARE and m != n:
        raise ValueError(f"jaxmg: {op} needs a square matrix, got {m} x {n}")
    if op in _TALL and m < n:
        raise ValueError(f"jaxmg: {op} needs m >= n, got {m} x {n} (pass the transpose)")
    if (b is None) == (op in _WITH_B):
        raise ValueError(f"jaxmg: {op} {'needs' if op in _WITH_B else 'takes no'} right-hand sides")
    if b is not None:
        if len(b.shape) != 2 or b.shape[0] != m or b.shape[1] < 1:
            raise ValueError(f"jaxmg: {op}: b must be {m} x k with k >= 1, got {b.shape}")
        if b.dtype != a.dtype:
            raise TypeError(f"jaxmg: {op}: b is {b.dtype} but A is {a.dtype}")
    if not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"jaxmg: the tile must be a positive integer, got {tile!r}")
    kind, _, _ = shard_kind(spec, grid.axes)
    sizes = [mesh.shape[ax] for ax in grid.axes]
    splits = {SHARD_ROWS: (sizes[0], 1), SHARD_COLS: (1, sizes[0])}.get(kind, tuple(sizes))
    if m % splits[0] or n % splits[1]:
        raise ValueError(
            f"jaxmg: a {m} x {n} matrix does not split evenly into {splits[0]} x {splits[1]} "
            "shards; pad it"
        )


def call(op: str, grid: _grid.Grid, mesh, a, b=None, *, spec, tile: int, jobz: int = 1):
    """Runs op on the cuSOLVERMp engine. Returns the ffi results (global),
    the last being the per-device status. Replicated matrices come back
    transposed (column-major), as the engine writes them."""
    validate(op, grid, mesh, a, b, spec, tile)
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


def solve(op: str, a, b=None, *, mesh, axes, tile: int, grid=None, jobz: int = 1,
          spec=None) -> dict:
    """One op on the cuSOLVERMp engine, in the caller's terms: A's sharding
    as given (see shard_kind), results as global arrays named per op, the
    status the largest over the devices. The engine's own conventions
    (mp_ops.c) are undone here:
      - the Hermitian ops work on M = A^T = conj(A): potrs solves with
        conj(b) and conjugates x back; syevd's V is the transpose-conjugate
        of what comes back; potri's result is A^-1 as it stands;
      - replicated matrices come back column-major (transposed);
      - least_squares returns the first n rows; qr's R is the upper
        triangle of what comes back.
    Keys: potrs x, logdet; potri inv; syevd w, v (jobz); lu_solve and
    least_squares x; qr q, r; gesvd u, s, vh; polar u, h; always status.
    spec: A's PartitionSpec (default: A's own sharding, eager arrays only)."""
    if spec is None:  # eager: A's own sharding (under jit pass spec=: Auto axes hide it)
        spec = getattr(getattr(a, "sharding", None), "spec", None)
    if spec is None:
        raise ValueError("jaxmg: the cuSOLVERMp engine needs A as a sharded global array")
    g = _grid.grid_from_mesh(mesh, axes, op=op, grid=grid)
    if op == "potrs":
        b = jnp.conj(b)
    res = call(op, g, mesh, a, b, spec=spec, tile=tile, jobz=jobz)
    out = {"status": jnp.max(res[-1])}
    n = a.shape[1]
    if op == "potrs":
        out["x"], out["logdet"] = jnp.conj(res[1].T), res[2]
    elif op == "potri":
        out["inv"] = res[0]
    elif op == "syevd":
        out["w"] = res[1]
        if jobz:
            out["v"] = jnp.conj(res[0].T)
    elif op == "lu_solve":
        out["x"] = res[1].T
    elif op == "least_squares":
        out["x"] = res[1].T[:n]
    elif op == "qr":
        out["q"], out["r"] = res[0], jnp.triu(res[1].T)
    elif op == "gesvd":
        out["u"], out["s"], out["vh"] = res[0], res[1], res[2].T
    elif op == "polar":
        out["u"], out["h"] = res[0], res[1].T
    return out
