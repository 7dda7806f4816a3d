"""Finding cuSOLVER and cuSolverMg at run time.

The CUDA library of jaxmg links the CUDA runtime statically and needs only
libcusolver.so.12 and libcusolverMg.so.12 (and what they pull in) at run
time. JAX's CUDA wheels ship them under site-packages/nvidia/...; loading
them first, globally, lets the dynamic loader resolve jaxmg's dependencies
without any environment setting. Where they are not found, the system's
loader paths (a CUDA toolkit) are tried.
"""

from __future__ import annotations

import ctypes
import pathlib

_SONAMES = ("libcusolver.so.12", "libcusolverMg.so.12")
_loaded = False


def _candidates(soname):
    try:
        import nvidia  # JAX's CUDA wheels (a namespace package)
    except ImportError:
        return
    for root in getattr(nvidia, "__path__", []):
        root = pathlib.Path(root)
        for sub in ("cu13/lib", "cusolver/lib", "cu12/lib"):
            path = root / sub / soname
            if path.exists():
                yield str(path)


def preload() -> None:
    global _loaded
    if _loaded:
        return
    for soname in _SONAMES:
        errors = []
        for path in list(_candidates(soname)) + [soname]:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError as e:
                errors.append(f"{path}: {e}")
        else:
            raise ImportError(f"jaxmg: cannot load {soname} (" + "; ".join(errors) + ")")
    _loaded = True
