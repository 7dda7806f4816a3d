"""_mp.library refuses an NCCL older than 2.29.2 before it loads
libcusolverMp (whose cuBLASMp would fail on an undefined symbol), naming the
version found, where from, and the package that fixes it."""

from __future__ import annotations

import pytest

from jaxmg.engines import mp as _mp


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(_mp, "_lib", None)
    import jaxmg.engines.library as lib

    monkeypatch.setattr(lib, "library_path", lambda stem: lib._HERE / f"lib{stem}.so")


def test_old_nccl_is_refused_before_cusolvermp_loads(fresh, monkeypatch):
    monkeypatch.setattr(_mp, "_nccl_version", lambda: (22809, "/site/nvidia/nccl/lib/libnccl.so.2"))
    loaded = []
    monkeypatch.setattr(_mp._cuda_libs, "preload", lambda *a: loaded.append(a))
    with pytest.raises(ImportError) as e:
        _mp.library()
    msg = str(e.value)
    assert "NCCL 2.28.9" in msg and "/site/nvidia/nccl/lib/libnccl.so.2" in msg
    assert "ncclCommQueryProperties" in msg and "nvidia-nccl-cu13>=2.29.2" in msg
    assert not loaded  # nothing of cuSOLVERMp was loaded


@pytest.mark.parametrize("found", [None, (22902, "libnccl.so.2"), (23203, "x")])
def test_recent_or_absent_nccl_passes_the_check(found, monkeypatch):
    monkeypatch.setattr(_mp, "_nccl_version", lambda: found)
    _mp._check_nccl("13")  # no error: absent is _cuda_libs.preload's to name
