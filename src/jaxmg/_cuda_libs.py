"""Finding cuSolverMg at run time.

The CUDA library of jaxmg links the CUDA runtime statically and needs only
libcusolverMg.so.12 (and what it pulls in) at run time. JAX's CUDA wheels
ship it under site-packages/nvidia/...; loading it first, globally, lets the
dynamic loader resolve jaxmg's dependency without any environment setting.
Where it is not found, the system's loader paths (a CUDA toolkit) are tried.
"""

from __future__ import annotations

import ctypes
import pathlib

_SONAME = "libcusolverMg.so.12"
_loaded = False


def _candidates():
    try:
        import nvidia  # JAX's CUDA wheels (a namespace package)
    except ImportError:
        return
    for root in getattr(nvidia, "__path__", []):
        root = pathlib.Path(root)
        for sub in ("cu13/lib", "cusolver/lib", "cu12/lib"):
            path = root / sub / _SONAME
            if path.exists():
                yield str(path)


def preload() -> None:
    global _loaded
    if _loaded:
        return
    errors = []
    for path in list(_candidates()) + [_SONAME]:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _loaded = True
            return
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError("jaxmg: cannot load cuSolverMg (" + "; ".join(errors) + ")")
