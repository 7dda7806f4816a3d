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
    # Only the in-process tests (those taking `gpus`) are skipped here. The
    # multi-process tests count GPUs themselves, in a subprocess, so that
    # this process starts no GPU backend (and holds no GPU memory) for them.
    in_process = [item for item in items if "gpus" in getattr(item, "fixturenames", ())]
    if not in_process or _gpus():
        return
    skip = pytest.mark.skip(reason="no GPU visible to JAX")
    for item in in_process:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def gpus():
    return _gpus()
