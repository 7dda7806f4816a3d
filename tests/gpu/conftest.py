"""GPU suite: runs only where JAX sees at least one GPU; skipped elsewhere."""

import os

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def pytest_collection_modifyitems(config, items):
    if _gpus():
        return
    skip = pytest.mark.skip(reason="no GPU visible to JAX")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def gpus():
    return _gpus()
