"""Test configuration: 8 host devices and x64, both set here (jaxmg itself
must change neither; test_ctx.py / test_import checks that in a fresh
process)."""

import os

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_FLAG}=8").strip()

import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402


def pytest_configure(config):
    if len(jax.devices()) < 8:
        raise pytest.UsageError(f"the jaxmg tests need 8 host devices, got {jax.devices()}")


@pytest.fixture
def rng(request):
    """A generator seeded afresh for every test, from its node id."""
    return helpers.rng_for(request.node.nodeid)
