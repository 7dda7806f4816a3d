"""The GPU suite's checks (tests/gpu/mp_engine_worker.py) against an engine
that is right by construction: _mp_route.call replaced by numpy following
the rows of the C op table (the Hermitian ops see A^T, n x n results
row-major). This runs the worker's matrices, result
handling and checks on CPU, so that a GPU run's failure means the engine,
not the suite. It also shows the checks can fail: a wrong answer must be
caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxmg.engines import mp_route as _mp_route

WORKER = os.path.join(os.path.dirname(__file__), "..", "gpu", "mp_engine_worker.py")

SHIM = r"""
import sys, runpy
sys.path.insert(0, TESTS_DIR)
from jaxmg.engines import mp_route as _mp_route
from test_mp_solve import engine  # numpy, following the rows' conventions

WRONG = sys.argv.pop(2) == "wrong"


def fake_call(op, grid, mesh, args, **kw):  # the right engine, or the same on A + 1e-2
    return engine(op, grid, mesh, (args[0] + 1e-2 if WRONG else args[0],) + tuple(args[1:]), **kw)

_mp_route.call = fake_call
sys.argv = [sys.argv[0]] + sys.argv[2:]
runpy.run_path(WORKER_PATH, run_name="__main__")
"""


def run(tmp_path, wrong):
    cfg = dict(port=0, nprocs=1, pid=0, grid=[2, 2], n=32, tile=4, out=str(tmp_path))
    code = SHIM.replace("WORKER_PATH", repr(os.path.abspath(WORKER))).replace(
        "TESTS_DIR", repr(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", code, "x", "wrong" if wrong else "right",
                          json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads((tmp_path / "0.json").read_text())


@pytest.mark.parametrize("wrong", [False, True])
def test_worker_checks_pass_a_right_engine_and_catch_a_wrong_one(tmp_path, wrong):
    rec = run(tmp_path, wrong)
    assert rec.get("done") and len(rec["cases"]) == len(_mp_route.OPS) * 4
    bad = []
    for name, case in rec["cases"].items():
        assert case["ok"], (name, case.get("error"), case.get("trace"))
        failed = [w for w, (v, lim) in case["checks"].items() if not v <= lim]
        if failed:
            bad.append((name, failed))
    if wrong:  # every op's answer is off by 1e-2 somewhere: each op must notice
        assert {name.split("/")[0] for name, _ in bad} == set(_mp_route.OPS)
    else:
        assert not bad, bad
