"""Multi-process mode on GPUs: one process per GPU after
jax.distributed.initialize, each seeing every GPU (the leader drives them
all through cuSolverMg and opens the others' buffers by CUDA IPC).

Each test starts a job of mp_gpu_worker.py processes on a free localhost
port, under JAXMG_TIMEOUT_S for jaxmg's own waits and a deadline for the
whole job (then every process is killed), so a hang fails the test instead
of the suite. The workers check results on the devices and record
everything; the checks here only read what they recorded.

Skipped where JAX sees fewer GPUs than a job needs. Run this file on its own
(`pytest tests/gpu/test_multiprocess_gpu.py`): its workers need the GPUs'
memory, which another GPU test in this process would hold.

JAXMG_MP_TEST_PLATFORM=cpu runs the same jobs on CPU processes (one CPU
device each) at smaller sizes: the smoke test of this file and the worker
on machines without GPUs.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mp_gpu_worker as worker  # noqa: E402

# The workers get the environment as it was given.
WORKER_ENV = dict(os.environ)
# This process needs no GPU memory, but test_gpu.py may start JAX's GPU
# backend in it (same session): without preallocation it then holds only
# what those tests use, not 75 % of every GPU, and the workers fit.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

PLATFORM = os.environ.get("JAXMG_MP_TEST_PLATFORM", "gpu")
assert PLATFORM in ("gpu", "cpu"), PLATFORM
# Sizes per platform. N = 2500: shards of 1250 or 625 rows, neither a
# multiple of T_A = 1024, so jaxmg pads every shard.
SIZES = {
    "gpu": dict(n=2500, tile=1024, n_solve=32768, n_eig=16384),
    "cpu": dict(n=600, tile=128, n_solve=1024, n_eig=512),
}[PLATFORM]
# (JAXMG_TIMEOUT_S, deadline of the whole job) in seconds. jaxmg's timeout
# also covers a rank waiting while another still compiles. The deadlines
# stay under 10 minutes so that one test fits one device-machine command.
TIMEOUTS = {"correct": (120, 480), "large": (300, 540), "killed": (15, 120)}


@pytest.fixture(scope="session")
def ngpu():
    return worker.gpu_count() if PLATFORM == "gpu" else 4


def job(tmp_path, ngpu, scenario, nprocs):
    if nprocs > ngpu:
        pytest.skip(f"needs {nprocs} GPUs, JAX sees {ngpu}")
    jaxmg_timeout, limit = TIMEOUTS[scenario]
    limit = float(os.environ.get("JAXMG_MP_LIMIT_S", limit))  # a shorter leash for a device call
    cfg = dict(scenario=scenario, platform=PLATFORM, **SIZES)
    codes, found, logs, hung = worker.run_job(cfg, nprocs, str(tmp_path), limit, jaxmg_timeout,
                                              env=WORKER_ENV)
    if hung:  # with what the processes had recorded until then
        pytest.fail(f"{scenario}: the job ran past {limit} s and was killed\n"
                    + "\n".join(problems(found, codes, logs)) + "\n" + tails(logs))
    return codes, found, logs


def tails(logs, chars=3000):
    return "\n".join(f"--- process {i} ---\n{log[-chars:]}" for i, log in enumerate(logs))


def problems(found, codes, logs):
    """Everything wrong in what the processes recorded."""
    bad = []
    for pid, f in enumerate(found):
        if f is None:
            bad.append(f"process {pid} recorded nothing (exit {codes[pid]})\n{logs[pid][-3000:]}")
            continue
        if f.get("fatal"):
            bad.append(f"process {pid}: {f['fatal']}")
        elif not f["finished"]:
            bad.append(f"process {pid} did not finish (exit {codes[pid]})")
        for name, rec in f["cases"].items():
            where = f"process {pid}, {name}"
            if not rec["ok"]:
                bad.append(f"{where}: {rec['error']}")
                continue
            if rec.get("status") != rec.get("want_status"):
                bad.append(f"{where}: status {rec['status']}, expected {rec['want_status']}")
            for check, (value, limit) in rec.get("checks", {}).items():
                if not value <= limit:  # NaN fails too
                    bad.append(f"{where}: {check} = {value:.3e} > {limit:.3e}")
            if rec.get("bad"):  # bench.verdict's findings
                bad.append(f"{where}: {rec['bad']} in {rec['metrics']}")
    names = [sorted(f["cases"]) for f in found if f]
    if any(n != names[0] for n in names):
        bad.append("the processes did not all run the same cases")
    return bad


def summary(found):
    """Process 0's checks as value/limit (printed; pytest shows it with -s
    or on failure)."""
    lines = []
    for name, rec in (found[0] or {}).get("cases", {}).items():
        if "metrics" in rec:  # bench.py's validation: its largest metric, and the time
            worst = max(rec["metrics"].values())
            what = f"largest metric {worst:.2e}, {rec['time_s']:.4g} s per call"
        else:
            worst = max((v / lim for v, lim in rec.get("checks", {}).values() if lim > 0), default=0.0)
            what = f"worst value/limit {worst:.2e}"
        lines.append(f"  {name:22s} {'ok ' if rec['ok'] else 'ERR'} {what} ({rec['secs']:.1f} s)")
    return "\n".join(lines)


@pytest.mark.parametrize("nprocs", [2, 4])
def test_correct(tmp_path, ngpu, nprocs):
    """Every op and dtype at N = 2500 against its defining equation (multi,
    and single for f64), status 301 for a not positive definite matrix,
    two calls in a row."""
    codes, found, logs = job(tmp_path, ngpu, "correct", nprocs)
    print(summary(found))
    bad = problems(found, codes, logs)
    assert not bad, "\n".join(bad)
    assert codes == [0] * nprocs, tails(logs)
    # (4 dtypes + f64 single) x 3 ops, not_pd multi and single, two_calls
    assert len(found[0]["cases"]) == 5 * 3 + 2 + 1, sorted(found[0]["cases"])


@pytest.mark.large
@pytest.mark.parametrize("nprocs", [2, 4])
def test_large(tmp_path, ngpu, nprocs):
    """f64 potrs and potri at N = 32768, syevd at 16384, on matrices built on
    the devices (bench.py's), validated there."""
    codes, found, logs = job(tmp_path, ngpu, "large", nprocs)
    print(summary(found))
    bad = problems(found, codes, logs)
    assert not bad, "\n".join(bad)
    assert codes == [0] * nprocs, tails(logs)
    assert len(found[0]["cases"]) == 3


# Seen on 2 x H200 (jax 0.11.2): the survivor's second call never returned a
# jaxmg error; JAX's coordination service ended the process (within the job's
# 120 s deadline: "another task died"). Open in issue 4; the CPU version passes.
@pytest.mark.xfail(PLATFORM == "gpu", strict=False,
                   reason="GPU: the survivor is ended by JAX's coordination service, not by jaxmg")
@pytest.mark.parametrize("nprocs", [2, 4])
def test_killed_rank_fails_the_others(tmp_path, ngpu, nprocs):
    """Process 1 is SIGKILLed between two calls: every other process gets an
    error naming rank 1 within JAXMG_TIMEOUT_S (plus slack), and exits."""
    jaxmg_timeout = TIMEOUTS["killed"][0]
    codes, found, logs = job(tmp_path, ngpu, "killed", nprocs)
    assert codes[1] == -9, tails(logs)
    assert found[1] is not None and found[1]["cases"]["warmup"]["ok"], tails(logs)
    for pid in range(nprocs):
        if pid == 1:
            continue
        assert found[pid] is not None, tails(logs)
        cases = found[pid]["cases"]
        assert cases["warmup"]["ok"], cases["warmup"]
        call = cases.get("call")
        assert call is not None, f"process {pid} never came back from the call\n" + tails(logs)
        assert not call["ok"], f"process {pid}: the call succeeded without rank 1"
        assert "rank 1" in call["error"], call["error"]
        assert call["secs"] < jaxmg_timeout + 30, call["secs"]
