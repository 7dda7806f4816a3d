"""jaxmg.device_supports_vmm (JAXMg 1.4's helper) without a GPU: a bad
ordinal is a TypeError before the driver is asked; where there is no CUDA
driver the answer is a RuntimeError naming it, never a crash. (On GPUs:
tests/gpu/test_device_gpu.py.)"""

import ctypes

import pytest

import jaxmg


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def test_exported():
    assert "device_supports_vmm" in jaxmg.__all__


@pytest.mark.parametrize("bad", ["0", 1.0, None])
def test_ordinal_must_be_an_int(bad):
    with pytest.raises(TypeError, match="CUDA device ordinal"):
        jaxmg.device_supports_vmm(bad)


@pytest.mark.skipif(_has_driver(), reason="a CUDA driver is present")
def test_no_driver_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="no CUDA driver"):
        jaxmg.device_supports_vmm(0)
