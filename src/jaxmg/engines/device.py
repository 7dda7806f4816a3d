"""Facts about a CUDA device straight from the driver, without JAX (safe
before JAX starts its GPU backend, e.g. to choose XLA's allocator)."""

from __future__ import annotations

import ctypes
import functools
import operator

# CUdevice_attribute value of CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED (cuda.h).
_ATTR_VMM = 102


@functools.lru_cache(maxsize=1)
def _driver():
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise RuntimeError(f"jaxmg: no CUDA driver (libcuda.so.1 did not load: {e})") from None
    rc = lib.cuInit(0)
    if rc != 0:
        raise RuntimeError(f"jaxmg: the CUDA driver did not initialise (cuInit returned {rc}); "
                           "no usable GPU")
    return lib


def device_supports_vmm(device: int = 0) -> bool:
    """Whether CUDA device `device` (an ordinal of the driver, not of JAX)
    supports virtual memory management (cuMemCreate / cuMemMap), which
    XLA's "vmm" GPU allocator and jaxmg's cross-process buffers use.

    Raises TypeError for a non-integer ordinal, ValueError for one the
    driver does not have, RuntimeError where there is no CUDA driver."""
    try:
        ordinal = operator.index(device)
    except TypeError:
        raise TypeError(f"jaxmg: device must be a CUDA device ordinal (int), got {device!r}") from None
    lib = _driver()
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        raise RuntimeError("jaxmg: cuDeviceGetCount failed")
    if not 0 <= ordinal < count.value:
        raise ValueError(f"jaxmg: no CUDA device {ordinal}; the driver sees {count.value}")
    dev, value = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(dev), ordinal) != 0:
        raise RuntimeError(f"jaxmg: cuDeviceGet({ordinal}) failed")
    rc = lib.cuDeviceGetAttribute(ctypes.byref(value), _ATTR_VMM, dev)
    if rc != 0:
        raise RuntimeError(f"jaxmg: cuDeviceGetAttribute (VMM support) failed on device {ordinal}: {rc}")
    return bool(value.value)
