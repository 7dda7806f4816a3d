"""Finding the GPU engines' CUDA libraries at run time.

jaxmg's CUDA libraries link the CUDA runtime statically; what they load is
cuSOLVER and cuSolverMg (the cuSolverMg engine), NCCL and cuSOLVERMp (the
cuSOLVERMp engine). JAX's CUDA wheels ship them under site-packages/nvidia/,
where the libraries' RUNPATH points; loading them here first, globally, by
absolute path, makes that hold wherever jaxmg's library lies (a build tree)
and gives a clear error when one is missing. Where no wheel has one, the
system's loader paths (a CUDA toolkit) are tried.

Which sonames depends on the CUDA major the library was built for, written by
CMake into jaxmg_cuda.txt next to it (cmake/cuda.cmake), along with, for a
build that found no CUDA, what was missing and the packages that provide it.
Nothing here runs before a GPU op: a CPU-only machine never loads any of it.
"""

from __future__ import annotations

import ctypes
import pathlib

# Per CUDA major and engine: (soname, folders under site-packages/nvidia, pip package).
LIBRARIES = {
    "13": {
        "mg": (("libcusolver.so.12", ("cu13/lib",), "nvidia-cusolver"),
               ("libcusolverMg.so.12", ("cu13/lib",), "nvidia-cusolver")),
        "mp": (("libnccl.so.2", ("nccl/lib",), "nvidia-nccl-cu13"),
               ("libcusolverMp.so.0", ("cu13/lib",), "nvidia-cusolvermp-cu13")),
    },
    "12": {
        "mg": (("libcusolver.so.11", ("cusolver/lib",), "nvidia-cusolver-cu12"),
               ("libcusolverMg.so.11", ("cusolver/lib",), "nvidia-cusolver-cu12")),
        "mp": (("libnccl.so.2", ("nccl/lib",), "nvidia-nccl-cu12"),
               ("libcusolverMp.so.0", ("cu12/lib",), "nvidia-cusolvermp-cu12")),
    },
}
INFO_FILE = "jaxmg_cuda.txt"
_loaded: set[tuple[str, str]] = set()


def _open(path: str) -> None:
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def build_info(folder: pathlib.Path) -> dict[str, str]:
    """The key=value lines CMake wrote next to the libraries ({} if none:
    a build configured with -DJAXMG_CUDA=OFF)."""
    try:
        text = (pathlib.Path(folder) / INFO_FILE).read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def missing_engine(folder: pathlib.Path) -> str:
    """Why this build has no GPU engine and the commands that fix it."""
    info = build_info(folder)
    major = info.get("cuda_major", "13")
    rebuild = "pip install --no-build-isolation --no-deps --force-reinstall <jaxmg source>"
    if info.get("source") == "none":
        fix = info.get("packages") or f'".[cuda{major}]" (from the source)'
        return (f"jaxmg was built without CUDA: the build found no CUDA toolkit, and the nvidia "
                f"wheels lacked {info.get('missing', '?')}. Fix: pip install {fix}, then {rebuild} "
                f"(pip install \".[cuda{major}]\" brings the wheels of every GPU engine)")
    return ("jaxmg was built without the GPU engine (configured with -DJAXMG_CUDA=OFF, or before "
            f"this change). Fix: pip install \".[cuda{major}]\" from the source, then {rebuild}")


def candidates(soname: str, subdirs: tuple[str, ...]):
    try:
        import nvidia  # JAX's CUDA wheels (a namespace package)
    except ImportError:
        return
    for root in getattr(nvidia, "__path__", []):
        for sub in subdirs:
            path = pathlib.Path(root) / sub / soname
            if path.exists():
                yield str(path)


def preload(folder: pathlib.Path, engine: str = "mg") -> None:
    """Loads what `engine` ("mg" or "mp") needs, for the CUDA major that the
    library in `folder` was built for; ImportError naming the missing one and
    the package that ships it."""
    major = build_info(folder).get("cuda_major", "13")
    if (major, engine) in _loaded:
        return
    if major not in LIBRARIES:
        raise ImportError(f"jaxmg: built for CUDA {major}, which this jaxmg does not know")
    for soname, subdirs, package in LIBRARIES[major][engine]:
        errors = []
        for path in list(candidates(soname, subdirs)) + [soname]:
            try:
                _open(path)
                break
            except OSError as e:
                errors.append(f"{path}: {e}")
        else:
            raise ImportError(
                f"jaxmg: cannot load {soname} (CUDA {major}; " + "; ".join(errors)
                + f"). Fix: pip install {package} (or pip install \"jax[cuda{major}]\")")
    _loaded.add((major, engine))
