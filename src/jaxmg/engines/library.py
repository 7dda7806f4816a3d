"""Loading jaxmg's C libraries and registering their FFI handlers with XLA.

The host library (LAPACK engine) is always built; the CUDA one (cuSolverMg
engine) exists where the package was built with the CUDA toolkit. Handlers
are registered lazily, per platform, the first time an op is traced for it:
registering CUDA handlers before the GPU backend is up would only log an
error instead of raising it.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import threading

import jax

from . import cuda_libs as _cuda_libs

# The built libraries sit in the package folder (jaxmg/), above this one.
_HERE = pathlib.Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_registered: set[str] = set()
_libs: dict[str, ctypes.CDLL] = {}

# LAPACK (and BLAS) routines the host engine takes from scipy, by function
# pointer (csrc/engines/host_lapack.h).
_LAPACK = [
    p + r for p in "sdcz" for r in ("potrf", "potrs", "potri", "getrf", "getrs", "gels", "geqrf", "gesdd")
] + ["ssyevd", "dsyevd", "cheevd", "zheevd", "sorgqr", "dorgqr", "cungqr", "zungqr",
     "ssygvd", "dsygvd", "chegvd", "zhegvd"]
_BLAS = [p + "gemm" for p in "sdcz"]


def target_name(op: str) -> str:
    return f"jaxmg_{op}"


def library_path(stem: str) -> pathlib.Path:
    """The built library: next to this file when installed, or in the folder
    named by JAXMG_LIBRARY_DIR (a development build tree)."""
    name = f"lib{stem}.so"
    override = os.environ.get("JAXMG_LIBRARY_DIR")
    for folder in ([pathlib.Path(override)] if override else []) + [_HERE]:
        if (folder / name).exists():
            return folder / name
    raise ImportError(
        f"jaxmg: {name} not found in {_HERE}; build the package with "
        "`pip install --no-build-isolation .` (see README)"
    )


def has_library(stem: str) -> bool:
    """Whether this installation has lib{stem}.so (e.g. jaxmg_mp, the
    cuSOLVERMp engine, built only where its wheels were found)."""
    try:
        library_path(stem)
    except ImportError:
        return False
    return True


def _capsule_address(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _load_host() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path("jaxmg_host")))
    from scipy.linalg import cython_lapack

    from scipy.linalg import cython_blas

    lib.jaxmg_host_set_lapack.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.jaxmg_host_set_lapack.restype = ctypes.c_int
    routines = [(n, cython_lapack.__pyx_capi__[n]) for n in _LAPACK]
    routines += [(n, cython_blas.__pyx_capi__[n]) for n in _BLAS]
    for name, capsule in routines:
        if lib.jaxmg_host_set_lapack(name.encode(), _capsule_address(capsule)):
            raise ImportError(f"jaxmg: the host library does not know LAPACK routine {name}")
    return lib


def _read_table(lib: ctypes.CDLL) -> str:
    fn = lib.jaxmg_op_table
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    fn.restype = ctypes.c_size_t
    need = fn(None, 0)
    buf = ctypes.create_string_buffer(need + 1)
    fn(buf, need + 1)
    return buf.value.decode()


_table_text: str | None = None


def op_table_text() -> str:
    """The C core's op table (csrc/ops/op_table.h), as text; read from the
    host library, which is always built (the CUDA one carries the same)."""
    global _table_text
    if _table_text is None:
        with _lock:
            if _table_text is None:
                lib = _libs.get("cpu") or _load_host_once()
                _table_text = _read_table(lib)
    return _table_text


def _load_host_once() -> ctypes.CDLL:
    if "host" not in _libs:
        _libs["host"] = _load_host()
    return _libs["host"]


def timeout_s() -> float:
    """JAXMG_TIMEOUT_S in seconds, as the C core reads it (csrc/util/
    timeout.h: blanks around the number allowed; unset, empty or not a
    positive number: 180, the last said once on stderr). Every wait of a
    job takes its limit from here, so all of them mean the same number."""
    fn = _load_host_once().jaxmg_timeout_s
    fn.argtypes = []
    fn.restype = ctypes.c_double
    return float(fn())


def op_names(lib: ctypes.CDLL) -> list[str]:
    return [line.split()[1] for line in _read_table(lib).splitlines() if line.startswith("op ")]


def _load_cuda() -> ctypes.CDLL:
    """The cuSolverMg engine's library, after the CUDA libraries it needs
    (from JAX's nvidia wheels first; engines/cuda_libs.py). ImportError saying what
    is missing and the command that fixes it."""
    try:
        path = library_path("jaxmg_cuda")
    except ImportError:
        override = os.environ.get("JAXMG_LIBRARY_DIR")
        raise ImportError(_cuda_libs.missing_engine(pathlib.Path(override) if override else _HERE)) from None
    _cuda_libs.preload(path.parent, "mg")
    return ctypes.CDLL(str(path))


def platform_of(devices) -> str:
    platforms = {d.platform for d in devices}
    if len(platforms) != 1:
        raise ValueError(f"jaxmg: the mesh mixes platforms {sorted(platforms)}")
    return platforms.pop()


def mesh_platform(mesh) -> str:
    """The platform of a mesh: its devices' (anything with a devices array),
    else an AbstractMesh's, else JAX's default backend."""
    devices = getattr(mesh, "devices", None)
    if devices is not None:
        return platform_of(list(getattr(devices, "flat", devices)))
    try:
        return mesh.abstract_device.platform
    except Exception:  # an older AbstractMesh
        return jax.default_backend()


def current_platform() -> str:
    """The platform of the mesh we are being traced for (inside shard_map),
    else JAX's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    for get in (lambda: mesh.abstract_device.platform, lambda: mesh._platform):
        try:
            platform = get()
        except Exception:  # an empty mesh, or an older AbstractMesh
            continue
        if platform:
            return platform
    return jax.default_backend()


def ensure_registered(platform: str) -> None:
    """Registers the handler of every op in the C core's table for
    `platform` ('cpu' or 'gpu')."""
    if platform in _registered:
        return
    with _lock:
        if platform in _registered:
            return
        if platform == "cpu":
            lib, xla_platform, suffix = _load_host_once(), "cpu", "host"
        elif platform in ("gpu", "cuda"):
            try:
                lib = _load_cuda()
            except (ImportError, OSError) as e:
                raise RuntimeError(f"jaxmg: the GPU engine cannot be used: {e}") from e
            xla_platform, suffix = "CUDA", "cuda"
        else:
            raise ValueError(f"jaxmg: unsupported platform {platform!r} (cpu or gpu)")
        for op in op_names(lib):
            fn = getattr(lib, f"jaxmg_{op}_{suffix}")
            jax.ffi.register_ffi_target(
                target_name(op), jax.ffi.pycapsule(fn), platform=xla_platform
            )
        _libs[platform] = lib
        _registered.add(platform)
