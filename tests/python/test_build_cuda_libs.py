"""Finding the GPU engines' CUDA libraries (src/jaxmg/_cuda_libs.py) and the
GPU error of a build without them: no GPU needed, nothing is really loaded."""

import sys
import types

import pytest

from jaxmg.engines import cuda_libs as _cuda_libs
from jaxmg.engines import library as _library


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """A fake site-packages/nvidia holding the libraries of both CUDA majors'
    layouts; records what preload opens instead of opening it."""
    root = tmp_path / "nvidia"
    for rel in ("cu13/lib/libcusolver.so.12", "cu13/lib/libcusolverMg.so.12",
                "cusolver/lib/libcusolver.so.11", "cusolver/lib/libcusolverMg.so.11"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "nvidia", types.SimpleNamespace(__path__=[str(root)]))
    opened = []
    monkeypatch.setattr(_cuda_libs, "_open", opened.append)
    monkeypatch.setattr(_cuda_libs, "_loaded", set())
    return root, opened


def _built_for(folder, text):
    folder.mkdir(exist_ok=True)
    (folder / _cuda_libs.INFO_FILE).write_text(text)
    return folder


@pytest.mark.parametrize("major, sub, so", [("13", "cu13", "12"), ("12", "cusolver", "11")])
def test_preload_takes_the_sonames_of_the_cuda_major_built_for(wheels, tmp_path, major, sub, so):
    root, opened = wheels
    lib = _built_for(tmp_path / "lib", f"cuda_major={major}\nsource=wheels\n")
    _cuda_libs.preload(lib, "mg")
    assert opened == [str(root / sub / "lib" / f"libcusolver.so.{so}"),
                      str(root / sub / "lib" / f"libcusolverMg.so.{so}")]
    _cuda_libs.preload(lib, "mg")  # once per process
    assert len(opened) == 2


def test_preload_names_the_missing_library_and_its_package(wheels, tmp_path, monkeypatch):
    root, _ = wheels
    (root / "cusolver/lib/libcusolverMg.so.11").unlink()

    def fail_unless_in_wheels(path):
        if "/" not in path:
            raise OSError(f"{path}: cannot open shared object file")

    monkeypatch.setattr(_cuda_libs, "_open", fail_unless_in_wheels)
    lib = _built_for(tmp_path / "lib", "cuda_major=12\nsource=toolkit\n")
    with pytest.raises(ImportError, match=r"libcusolverMg\.so\.11.*pip install nvidia-cusolver-cu12"):
        _cuda_libs.preload(lib, "mg")


def test_build_info_of_a_build_without_cuda(tmp_path):
    assert _cuda_libs.build_info(tmp_path) == {}
    lib = _built_for(tmp_path / "lib", "cuda_major=13\nsource=none\nmissing=cusolverMg.h nv/target\n"
                                        "packages=nvidia-cusolver nvidia-cuda-cccl\n")
    info = _cuda_libs.build_info(lib)
    assert info["source"] == "none" and info["missing"] == "cusolverMg.h nv/target"


def test_gpu_call_on_a_build_without_cuda_says_what_is_missing(tmp_path, monkeypatch):
    if "gpu" in _library._registered:
        pytest.skip("the GPU engine is registered in this process")
    lib = _built_for(tmp_path / "lib", "cuda_major=13\nsource=none\nmissing=cusolverMg.h nv/target\n"
                                        "packages=nvidia-cusolver nvidia-cuda-cccl\n")

    def no_library(stem):
        raise ImportError(f"lib{stem}.so not found")

    monkeypatch.setattr(_library, "library_path", no_library)
    monkeypatch.setenv("JAXMG_LIBRARY_DIR", str(lib))
    with pytest.raises(RuntimeError) as e:
        _library.ensure_registered("gpu")
    msg = str(e.value)
    assert "cusolverMg.h nv/target" in msg
    assert "pip install nvidia-cusolver nvidia-cuda-cccl" in msg
    assert "--no-build-isolation" in msg
    assert "gpu" not in _library._registered


def test_gpu_call_on_a_build_configured_without_cuda(tmp_path, monkeypatch):
    if "gpu" in _library._registered:
        pytest.skip("the GPU engine is registered in this process")
    monkeypatch.setattr(_library, "library_path", lambda stem: (_ for _ in ()).throw(ImportError(stem)))
    monkeypatch.setenv("JAXMG_LIBRARY_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"JAXMG_CUDA=OFF.*pip install \"\.\[cuda13\]\""):
        _library.ensure_registered("gpu")
