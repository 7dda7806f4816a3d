"""jaxmg.device_supports_vmm on a GPU machine: every device the driver has
answers (an H200 supports VMM), and an ordinal past them is a ValueError."""

import pytest

import jaxmg


def test_vmm_support_of_every_gpu(gpus):
    for i in range(len(gpus)):
        assert isinstance(jaxmg.device_supports_vmm(i), bool)
    if "H200" in gpus[0].device_kind or "H100" in gpus[0].device_kind:
        assert jaxmg.device_supports_vmm(0) is True


def test_ordinal_past_the_devices(gpus):
    with pytest.raises(ValueError, match="no CUDA device 99"):
        jaxmg.device_supports_vmm(99)
