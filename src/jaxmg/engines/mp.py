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

The engine's FFI targets are the op table's rows (jaxmg_mp_<op>), called
through _calls.ffi by _mp_route.
"""

from __future__ import annotations

import ctypes
import os
import threading

import jax

from ..pipeline import ffi as _calls
from . import cuda_libs as _cuda_libs
from . import grid as _grid
from . import library as _library
from . import nccl_bootstrap as _nccl_bootstrap

NCCL_MIN = 22902
ERRLEN = 512

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
    for cand in list(_cuda_libs.candidates(soname, ("nccl/lib",))) + [soname]:
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
        path = _library.library_path("jaxmg_mp")
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
        for op in _calls.table():
            fn = getattr(lib, f"jaxmg_mp_{op}_cuda")
            jax.ffi.register_ffi_target(target(op), jax.ffi.pycapsule(fn), platform="CUDA")
        _lib = lib
        return lib


def target(op: str) -> str:
    """The FFI target of op's row on this engine."""
    return f"jaxmg_mp_{op}"


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
