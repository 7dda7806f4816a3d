"""cmake/cuda_paths.cmake on fake nvidia wheel trees (empty headers and
libraries, CMake configure only, no build): which CUDA it takes from which
layout, and what a build with no CUDA at all records. A few seconds."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="no cmake")

# CUDA 13 wheels share nvidia/cu13; CUDA 12 wheels have a folder per library.
LAYOUTS = {
    13: {"cu13/include": ["cuda_runtime_api.h", "cudaTypedefs.h", "crt/host_defines.h", "nv/target",
                          "cublas_v2.h", "cusolverDn.h", "cusolverMg.h"],
         "cu13/lib": ["libcudart_static.a", "libcusolver.so.12", "libcusolverMg.so.12"]},
    12: {"cuda_runtime/include": ["cuda_runtime_api.h", "cudaTypedefs.h"],
         "cuda_runtime/lib": ["libcudart_static.a"],
         "cuda_nvcc/include": ["crt/host_defines.h"],
         "cuda_cccl/include": ["nv/target"],
         "cublas/include": ["cublas_v2.h"],
         "cusolver/include": ["cusolverDn.h", "cusolverMg.h"],
         "cusolver/lib": ["libcusolver.so.11", "libcusolverMg.so.11"]},
}


def fake_wheels(root: pathlib.Path, major: int) -> pathlib.Path:
    for folder, files in LAYOUTS[major].items():
        for name in files:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"#define CUDART_VERSION {major}090\n" if name == "cuda_runtime_api.h" else "")
    return root


def configure(tmp_path, nvidia: pathlib.Path):
    import jax.ffi

    build = tmp_path / "build"
    args = [CMAKE, "-S", str(ROOT), "-B", str(build), "-DJAXMG_CUDA_FROM=wheels",
            f"-DJAXMG_NVIDIA_DIRS={nvidia}", f"-DPython_EXECUTABLE={sys.executable}",
            f"-DJAX_FFI_INCLUDE_DIR={jax.ffi.include_dir()}"]
    ninja = pathlib.Path(sys.executable).parent / "ninja"
    if ninja.exists():
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    r = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    info = (build / "jaxmg_cuda.txt").read_text()
    return r.stdout + r.stderr, dict(l.split("=", 1) for l in info.splitlines()), build


@pytest.mark.parametrize("major, runpath", [(13, "$ORIGIN/../nvidia/cu13/lib"),
                                            (12, "$ORIGIN/../nvidia/cusolver/lib")])
def test_each_layout_gives_its_cuda_major(tmp_path, major, runpath):
    nvidia = fake_wheels(tmp_path / "nvidia", major)
    log, info, build = configure(tmp_path, nvidia)
    assert f"jaxmg: CUDA {major} from the wheels" in log
    assert f"building the cuSolverMg engine (CUDA {major}, wheels)" in log
    assert info == {"cuda_major": str(major), "source": "wheels"}
    assert runpath in (build / "cmake_install.cmake").read_text()


def test_no_cuda_builds_the_host_engine_and_records_what_is_missing(tmp_path):
    nvidia = fake_wheels(tmp_path / "nvidia", 13)
    (nvidia / "cu13/include/nv/target").unlink()
    (nvidia / "cu13/include/cusolverMg.h").unlink()
    log, info, _ = configure(tmp_path, nvidia)
    assert "NO CUDA FOUND, building the host (CPU) engine only" in log
    assert info["source"] == "none"
    assert info["missing"].split() == ["nv/target", "cusolverMg.h"]
    assert info["packages"].split() == ["nvidia-cuda-cccl", "nvidia-cusolver"]
