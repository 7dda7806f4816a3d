"""NetKet 3.23 as a real client (the optional extra test-netket): its
distributed solvers and two VMC_SR(use_ntk=True) steps on 4 CPU devices,
against its dense solvers in float64 (netket_client.py, in a fresh process:
NetKet sets its mesh and x64 when imported)."""

import importlib.util
import os

import pytest

from helpers import run_fresh

# find_spec, not an import: importing NetKet sets a global mesh and x64 in this
# process, which every other test would then run under.
if importlib.util.find_spec("netket") is None:
    pytest.skip("NetKet not installed (pip install .[test-netket])", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_netket_distributed_solvers_match_dense():
    r = run_fresh(["netket_client.py"], cwd=HERE, timeout=600,
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    lines = [ln for ln in r.stdout.splitlines() if ": rel " in ln]
    assert len(lines) == 10, r.stdout
    assert r.stdout.rstrip().endswith("OK"), r.stdout
    assert "jaxmg 1.5.0" in r.stdout
