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

_HERE = pathlib.Path(__file__).resolve().parent
_OPS = ("potrs", "potri", "syevd")
_lock = threading.Lock()
_registered: set[str] = set()
_libs: dict[str, ctypes.CDLL] = {}

# LAPACK routines the host engine takes from scipy, by function pointer.
_LAPACK = [
    p + r for p in "sdcz" for r in ("potrf", "potrs", "potri")
] + ["ssyevd", "dsyevd", "cheevd", "zheevd"]


def target_name(op: str) -> str:
    return f"jaxmg_{op}"


def _library_path(stem: str) -> pathlib.Path:
    """The built library: next to this file when installed, or in the folder
    named by JAXMG_LIBRARY_DIR (a development build tree)."""
    name = f"lib{stem}.so"
    override = os.environ.get("JAXMG_LIBRARY_DIR")
    for folder in ([pathlib.Path(override)] if override else []) + [_HERE]:
        if (folder / name).exists():
            return folder / name
    raise ImportError(
        f"jaxmg: {name} not found next to {__file__}; build the package with "
        "`pip install --no-build-isolation .` (see README)"
    )


def _capsule_address(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _load_host() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_library_path("jaxmg_host")))
    from scipy.linalg import cython_lapack

    lib.jaxmg_host_set_lapack.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.jaxmg_host_set_lapack.restype = ctypes.c_int
    capsules = cython_lapack.__pyx_capi__
    for name in _LAPACK:
        if lib.jaxmg_host_set_lapack(name.encode(), _capsule_address(capsules[name])):
            raise ImportError(f"jaxmg: the host library does not know LAPACK routine {name}")
    return lib


def _load_cuda() -> ctypes.CDLL:
    """The cuSolverMg engine's library, after the CUDA libraries it needs
    (from JAX's nvidia wheels first; _cuda_libs.py). ImportError saying what
    is missing and the command that fixes it."""
    from . import _cuda_libs

    try:
        path = _library_path("jaxmg_cuda")
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
    """Registers the three handlers for `platform` ('cpu' or 'gpu')."""
    if platform in _registered:
        return
    with _lock:
        if platform in _registered:
            return
        if platform == "cpu":
            lib, xla_platform, suffix = _load_host(), "cpu", "host"
        elif platform in ("gpu", "cuda"):
            try:
                lib = _load_cuda()
            except (ImportError, OSError) as e:
                raise RuntimeError(f"jaxmg: the GPU engine cannot be used: {e}") from e
            xla_platform, suffix = "CUDA", "cuda"
        else:
            raise ValueError(f"jaxmg: unsupported platform {platform!r} (cpu or gpu)")
        for op in _OPS:
            fn = getattr(lib, f"jaxmg_{op}_{suffix}")
            jax.ffi.register_ffi_target(
                target_name(op), jax.ffi.pycapsule(fn), platform=xla_platform
            )
        _libs[platform] = lib
        _registered.add(platform)
