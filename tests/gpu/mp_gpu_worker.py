"""One process of a multi-process jaxmg job: one process per GPU after
jax.distributed.initialize (or, for a smoke test without GPUs, one CPU
device per process). This file also holds `run_job`, which starts a job,
and `gpu_count`; test_multiprocess_gpu.py and bench/mp_compare.py use them.

    python mp_gpu_worker.py '{"port": ..., "nprocs": ..., "pid": ..., "scenario": ...,
                              "platform": "gpu"|"cpu", "out": DIR, ...}'

Scenarios (the other keys each reads are listed in its docstring):
  correct  every op and dtype at N = 2500 against its defining equation,
           a not positive definite matrix, two calls in a row
  large    f64 potrs/potri at N = 32768 and syevd at 16384, built on the devices
  time     times of the given ops/dtypes/sizes (dispatch "multi")
  killed   process 1 is SIGKILLed after a first call, before the second

With nprocs = 1 there is no jax.distributed: the one process drives all
devices (all GPUs, or cfg["local"] CPU devices), the mode to compare against.

Every process writes what it found (per case: ok or the error, checks as
[value, limit] pairs meaning value <= limit, statuses, times) to
out/<pid>.json, rewritten after each case, so that a hang or a crash still
leaves what came before. Nothing here asserts: a failure is recorded and the
next case runs; the launcher judges.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from types import SimpleNamespace

import numpy as np  # JAX is imported only by the worker, after its environment is set

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------
# starting a job (the parent's side)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    """GPUs that JAX sees, asked in a subprocess: starting JAX's GPU backend
    in the parent would take most of every GPU's memory (preallocation),
    which the workers need."""
    code = "import jax\ntry:\n print(len(jax.devices('gpu')))\nexcept RuntimeError:\n print(0)"
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, env=env)
        return int(res.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def run_job(cfg: dict, nprocs: int, out: str, limit_s: float, jaxmg_timeout_s: float,
            env: dict | None = None):
    """Runs nprocs workers with config cfg (port, nprocs, pid and out filled
    in) and waits for all of them, limit_s seconds at most in all; at the
    deadline every process of the job is killed.

    Returns (exit codes, each process's findings or None, each process's
    log, whether the deadline struck)."""
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ if env is None else env, JAXMG_TIMEOUT_S=str(jaxmg_timeout_s),
               PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # the worker sets its own device count
    # The host references (numpy's eigvalsh) would otherwise start a BLAS
    # thread per core in every process: on the 4-GPU machine that made one
    # complex eigvalsh of N = 2500 take minutes (seen as a "hang").
    threads = str(max(1, min(8, (os.cpu_count() or 1) // nprocs)))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    port = free_port()
    procs, logs = [], []
    for pid in range(nprocs):
        one = dict(cfg, port=port, nprocs=nprocs, pid=pid, out=out)
        logs.append(os.path.join(out, f"{pid}.log"))
        # Output to files, not pipes: a pipe nobody reads while we wait on
        # another process fills up and blocks its writer.
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(one)],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + limit_s
    hung = False
    try:
        while any(p.poll() is None for p in procs) and not hung:
            hung = time.monotonic() > deadline
            time.sleep(0.2)
        if hung:
            backtraces([(p.pid, log) for p, log in zip(procs, logs) if p.poll() is None])
    finally:
        # At the deadline, or when the parent is interrupted: SIGKILL, since
        # jax.distributed catches SIGTERM (preemption notice) and carries on.
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    found = []
    for pid in range(nprocs):
        try:
            with open(os.path.join(out, f"{pid}.json")) as f:
                found.append(json.load(f))
        except (OSError, ValueError):
            found.append(None)
    texts = []
    for path in logs:
        with open(path, errors="replace") as f:
            texts.append(f.read())
    return [p.returncode for p in procs], found, texts, hung


def backtraces(stuck, limit_s=120):
    """Writes every thread's native stack of each stuck (pid, log) process to
    log + ".bt", with cuda-gdb (the GPU machine has no gdb) or gdb: the C frames
    say whether a process waits in jaxmg's meeting, in the engine or in
    XLA. Best effort, all processes at once, limit_s at most."""
    gdb = shutil.which("cuda-gdb") or shutil.which("gdb")
    if not gdb or not stuck:
        return
    cmds = [[gdb, "-q", "-batch", "-p", str(pid), "-ex", "thread apply all bt 25"] for pid, _ in stuck]
    outs = [open(log + ".bt", "w") for _, log in stuck]
    try:
        running = [subprocess.Popen(c, stdout=o, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                   for c, o in zip(cmds, outs)]
        end = time.monotonic() + limit_s
        for r in running:
            try:
                r.wait(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.kill()
                r.wait()
    except OSError:
        pass
    finally:
        for o in outs:
            o.close()


# ---------------------------------------------------------------------------
# test inputs, built on the host from fixed seeds so that every process
# holds the same global matrix; each comes with its spectrum (float64,
# ascending), which scales the tolerances and is syevd's reference

DTYPES = {"f32": np.float32, "f64": np.float64, "c64": np.complex64, "c128": np.complex128}
_built: dict = {}


def _randn(seed, shape, cplx):
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    return x + 1j * r.standard_normal(shape) if cplx else x


def _matrix(kind, n, dtype):
    cplx = np.issubdtype(dtype, np.complexfloating)
    if (kind, n, cplx) not in _built:
        x = _randn(1 if kind == "hpd" else 2, (n, n), cplx)
        if kind == "hpd":  # X X^H / n + I: eigenvalues in about [1, 5] (complex: [1, 9])
            a = x @ x.conj().T / n + np.eye(n)
        else:  # a Wigner matrix: indefinite, eigenvalues in about [-1.5, 1.5] (complex: [-2, 2])
            a = (x + x.conj().T) / (2 * np.sqrt(n))
        a = (a + a.conj().T) / 2  # exactly Hermitian, real diagonal
        _built[kind, n, cplx] = (a, np.linalg.eigvalsh(a))
    a, w = _built[kind, n, cplx]
    return np.ascontiguousarray(a.astype(dtype)), w


def hpd(n, dtype):
    return _matrix("hpd", n, dtype)


def wigner(n, dtype):
    return _matrix("wigner", n, dtype)


def rhs(n, k, dtype):
    return _randn(3, (n, k), np.issubdtype(dtype, np.complexfloating)).astype(dtype)


def not_pd(n, row):
    """The f64 SPD matrix with a large negative diagonal entry at `row`
    (0-based): the leading minor of order row + 1 is the first to fail."""
    a = hpd(n, np.float64)[0].copy()
    a[row, row] = -1e6
    return a


def tol(dtype, n, factor=50.0):
    """The single-process GPU suite's tolerance (tests/gpu/test_gpu.py):
    50 N eps of the working precision."""
    return factor * n * float(np.finfo(np.dtype(dtype)).eps)


def fetch(x):
    """The value of a replicated (or scalar) global array, from this
    process's own copy: an array spanning other processes cannot be
    fetched whole."""
    if hasattr(x, "addressable_data"):
        x = x.addressable_data(0)
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def device_checks():
    """Residuals computed on the devices, on the global (sharded) arrays:
    XLA partitions the products and reductions, nothing N x N leaves the
    devices. Everything is raised to float64/complex128 first, so that a
    check measures the solver, not its own rounding; matmuls run at HIGHEST
    precision (no TF32 for float32 inputs)."""
    import jax
    import jax.numpy as jnp

    def up(x):
        return x.astype(jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64)

    def fro(x):
        return jnp.sqrt(jnp.sum(jnp.abs(x) ** 2))

    def mm(a, b):
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)

    def solve_residual(A, x, b):
        """||A x - b||_F / (||A||_F ||x||_F), as in test_gpu.py."""
        A, x, b = up(A), up(x), up(b)
        return fro(mm(A, x) - b) / (fro(A) * fro(x))

    def inverse_residuals(A, inv):
        """||A A^-1 - I||_F / sqrt(N), and max |X - X^H| / max |X|."""
        A, inv = up(A), up(inv)
        n = A.shape[0]
        eye = fro(mm(A, inv) - jnp.eye(n, dtype=A.dtype)) / jnp.sqrt(n)
        return eye, jnp.max(jnp.abs(inv - inv.conj().T)) / jnp.max(jnp.abs(inv))

    def eigen_residuals(H, w, V):
        """||H V - V diag(w)||_F / sqrt(N), ||V^H V - I||_F / sqrt(N), and
        the number of descending steps in w."""
        H, V, w64 = up(H), up(V), w.astype(jnp.float64)
        n = H.shape[0]
        eq = fro(mm(H, V) - V * w64[None, :]) / jnp.sqrt(n)
        orth = fro(mm(V.conj().T, V) - jnp.eye(n, dtype=V.dtype)) / jnp.sqrt(n)
        return eq, orth, jnp.sum(jnp.diff(w) < 0).astype(jnp.float64)

    def rel_diff(x, y):
        x, y = up(x), up(y)
        return fro(x - y) / fro(y)

    def count_not_nan(x):
        return jnp.sum(~jnp.isnan(x)).astype(jnp.float64)

    def count_differences(x, y):
        return jnp.sum(x != y).astype(jnp.float64)

    fns = (solve_residual, inverse_residuals, eigen_residuals, rel_diff, count_not_nan,
           count_differences)
    return SimpleNamespace(**{f.__name__: jax.jit(f) for f in fns})


# ---------------------------------------------------------------------------
# the worker


def main(cfg: dict) -> None:
    gpu = cfg["platform"] == "gpu"
    nprocs, me = cfg["nprocs"], cfg["pid"]
    # NVLink multicast must stay off on shared multi-GPU hosts; NCCL reads
    # this when JAX's backend starts.
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    if not gpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
        local = cfg.get("local", 1) if nprocs == 1 else 1
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"

    findings = {"pid": me, "nprocs": nprocs, "platform": cfg["platform"],
                "scenario": cfg["scenario"], "cases": {}, "finished": False}
    path = os.path.join(cfg["out"], f"{me}.json")

    def save():
        with open(path + ".tmp", "w") as f:
            json.dump(findings, f, indent=1)
        os.replace(path + ".tmp", path)

    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        if nprocs > 1:
            # Every process still sees every GPU (no CUDA_VISIBLE_DEVICES):
            # the leader drives them all and opens the others' memory by IPC.
            kw = dict(local_device_ids=[me]) if gpu else {}
            jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", num_processes=nprocs,
                                       process_id=me, initialization_timeout=120, **kw)
        devs = jax.devices()
        print(f"[{me}] {time.monotonic():.3f} JAX up: {len(devs)} devices", flush=True)
        findings["jax"] = jax.__version__
        findings["devices"] = f"{len(devs)} x {devs[0].device_kind} ({devs[0].platform})"
        if any(d.platform != ("gpu" if gpu else "cpu") for d in devs):
            raise RuntimeError(f"wrong platform: JAX has {findings['devices']}")
        Worker(cfg, findings, save).run()
        findings["finished"] = True
    except BaseException:  # noqa: BLE001 - recorded for the launcher
        findings["fatal"] = traceback.format_exc()[-4000:]
    save()
    sys.stdout.flush()
    clean = findings["finished"] and all(c["ok"] for c in findings["cases"].values())
    if nprocs > 1 and clean and cfg["scenario"] != "killed":
        # Together: process 0 hosts the coordination service and must not
        # leave while the others still talk to it.
        jax.distributed.shutdown()
    else:
        # After an error a peer may be dead or stuck, and the distributed
        # runtime's shutdown would wait for it.
        os._exit(0)


class Worker:
    def __init__(self, cfg, findings, save):
        import jax
        from jax.sharding import Mesh, PartitionSpec as P

        sys.path.insert(0, os.path.join(REPO, "bench"))
        import bench  # bench.py: device-side matrices, sharded checks, timing

        self.cfg, self.findings, self.save, self.bench = cfg, findings, save, bench
        self.me = jax.process_index()
        self.mesh = Mesh(np.array(jax.devices()), ("x",))  # one device per process
        self.P = jax.device_count()
        self.ROW, self.REP = P("x", None), P(None, None)
        self.d = device_checks()

    def run(self):
        scenarios = {"correct": self.correct, "large": self.large, "time": self.timing,
                     "killed": self.killed}
        scenarios[self.cfg["scenario"]]()

    def record(self, name, fn):
        """Runs fn, which returns a dict of findings; records it, or the
        error, with the seconds it took."""
        t0 = time.monotonic()
        # A case still running after this long prints every Python thread's
        # stack to the log (and again each period): where a hang sits.
        faulthandler.dump_traceback_later(self.cfg.get("stacks_after_s", 100), repeat=True)
        print(f"[{self.me}] {time.monotonic():.3f} {name}: starts", flush=True)
        try:
            rec = dict(ok=True, **fn())
        except Exception as e:  # noqa: BLE001 - recorded for the launcher
            rec = dict(ok=False, error=f"{type(e).__name__}: {e}"[:3000],
                       trace=traceback.format_exc()[-3000:])
        faulthandler.cancel_dump_traceback_later()
        rec["secs"] = time.monotonic() - t0
        self.findings["cases"][name] = rec
        self.save()
        print(f"[{self.me}] {name}: {'ok' if rec['ok'] else rec['error'][:300]} ({rec['secs']:.1f} s)",
              flush=True)

    def put(self, x, spec):
        """A global array from a numpy array every process holds alike: each
        process places only its own devices' part."""
        import jax
        from jax.sharding import NamedSharding

        return jax.make_array_from_callback(x.shape, NamedSharding(self.mesh, spec), lambda i: x[i])

    # -- correct -------------------------------------------------------------

    def correct(self):
        """Keys: n (2500), tile (1024), dtypes (f32, f64, c64, c128)."""
        n, tile = self.cfg.get("n", 2500), self.cfg.get("tile", 1024)
        for dt in self.cfg.get("dtypes", list(DTYPES)):
            dtype = DTYPES[dt]
            spd, spd_w = hpd(n, dtype)
            herm, herm_w = wigner(n, dtype)
            A, H, b = self.put(spd, self.ROW), self.put(herm, self.ROW), self.put(rhs(n, 3, dtype), self.REP)
            for how in ("multi", "single") if dt == "f64" else ("multi",):
                self.record(f"potrs/{dt}/{how}", lambda: self.check_potrs(A, b, tile, how))
                self.record(f"potri/{dt}/{how}", lambda: self.check_potri(A, spd_w, tile, how))
                self.record(f"syevd/{dt}/{how}", lambda: self.check_syevd(H, herm_w, tile, how))
        for how in ("multi", "single"):
            self.record(f"not_pd/{how}", lambda: self.check_not_pd(n, tile, how))
        self.record("two_calls", lambda: self.check_two_calls(n, tile))

    def check_potrs(self, A, b, tile, how):
        import jaxmg

        x, st = jaxmg.potrs(A, b, tile, self.mesh, (self.ROW, self.REP), return_status=True,
                            dispatch=how)
        n = A.shape[0]
        return dict(status=int(fetch(st)), want_status=0,
                    checks={"residual": [fetch(self.d.solve_residual(A, x, b)), tol(A.dtype, n)]})

    def check_potri(self, A, spectrum, tile, how):
        import jaxmg

        inv, st = jaxmg.potri(A, tile, self.mesh, (self.ROW,), return_status=True, dispatch=how)
        n, cond = A.shape[0], spectrum[-1] / spectrum[0]
        eye, asym = (fetch(r) for r in self.d.inverse_residuals(A, inv))
        return dict(status=int(fetch(st)), want_status=0,
                    checks={"A_inv_minus_I": [eye, tol(A.dtype, n) * cond],
                            "hermitian": [asym, tol(A.dtype, n)]})

    def check_syevd(self, H, spectrum, tile, how):
        import jaxmg

        # cuSolverMg's syevd takes tiles of at most 1024
        w, V, st = jaxmg.syevd(H, min(tile, 1024), self.mesh, (self.ROW,), return_status=True,
                               dispatch=how)
        n, scale = H.shape[0], float(np.abs(spectrum).max())
        eq, orth, unsorted = (fetch(r) for r in self.d.eigen_residuals(H, w, V))
        # w is small and replicated: compared with LAPACK's on the host
        err = float(np.abs(fetch(w).astype(np.float64) - spectrum).max())
        wrong_types = float(w.dtype != np.finfo(H.dtype).dtype or V.dtype != H.dtype)
        return dict(status=int(fetch(st)), want_status=0,
                    checks={"AV_minus_Vw": [eq, tol(H.dtype, n) * scale],
                            "VhV_minus_I": [orth, tol(H.dtype, n)],
                            "eigenvalues": [err, tol(H.dtype, n) * scale],
                            "unsorted": [unsorted, 0.0], "wrong_dtypes": [wrong_types, 0.0]})

    def check_not_pd(self, n, tile, how):
        """The leading minor of order 301 fails: status 301 and NaN output
        from potrs and potri; then a good matrix solves (no stale state)."""
        import jaxmg

        A = self.put(not_pd(n, 300), self.ROW)
        b = self.put(np.ones((n, 1)), self.REP)
        x, st1 = jaxmg.potrs(A, b, tile, self.mesh, (self.ROW, self.REP), return_status=True,
                             dispatch=how)
        inv, st2 = jaxmg.potri(A, tile, self.mesh, (self.ROW,), return_status=True, dispatch=how)
        not_nan = fetch(self.d.count_not_nan(x)) + fetch(self.d.count_not_nan(inv))
        good = self.put(hpd(n, np.float64)[0], self.ROW)
        x2 = jaxmg.potrs(good, b, tile, self.mesh, (self.ROW, self.REP), dispatch=how)
        return dict(status=[int(fetch(st1)), int(fetch(st2))], want_status=[301, 301],
                    checks={"non_nan_entries": [not_nan, 0.0],
                            "residual_after": [fetch(self.d.solve_residual(good, x2, b)),
                                               tol(np.float64, n)]})

    def check_two_calls(self, n, tile):
        """potrs and potri in one jitted program, run twice; then eager
        calls back to back: consistent answers, inputs untouched."""
        import jax
        import jaxmg

        a, spectrum = hpd(n, np.float64)
        b0 = rhs(n, 2, np.float64)
        A, b = self.put(a, self.ROW), self.put(b0, self.REP)
        mesh, ROW, REP = self.mesh, self.ROW, self.REP

        @jax.jit
        def twice(A, b):
            x = jaxmg.potrs(A, b, tile, mesh, (ROW, REP), dispatch="multi")
            inv = jaxmg.potri(A, tile, mesh, (ROW,), dispatch="multi")
            return x, inv @ b

        x1, y1 = twice(A, b)
        x2, y2 = twice(A, b)
        x3 = jaxmg.potrs(A, b, tile, mesh, (ROW, REP), dispatch="multi")
        x4 = jaxmg.potrs(A, 2 * b, tile, mesh, (ROW, REP), dispatch="multi")
        d, t, cond = self.d, tol(np.float64, n), spectrum[-1] / spectrum[0]
        return dict(checks={
            "x_vs_inv_b": [fetch(d.rel_diff(x1, y1)), t * cond],
            "rerun_jit": [fetch(d.rel_diff(x1, x2)) + fetch(d.rel_diff(y1, y2)), t],
            "eager_vs_jit": [fetch(d.rel_diff(x3, x1)), t],
            "residual_2b": [fetch(d.solve_residual(A, x4, 2 * b)), t],
            "A_changed": [fetch(d.count_differences(A, self.put(a, ROW))), 0.0],
            "b_changed": [fetch(d.count_differences(b, self.put(b0, REP))), 0.0],
        })

    # -- on matrices built on the devices (bench.py's) ---------------------------

    def bench_case(self, op, dt, n, reps):
        """bench.jaxmg_case with dispatch "multi": builds A on the devices,
        compiles and warms up, times reps calls (median), and validates with
        sharded residuals (bench.verdict: every metric below 50 sqrt(N) eps)."""
        tile = self.cfg.get("tile", 1024)
        if n % self.P:
            raise ValueError(f"N={n} is not a multiple of the {self.P} devices")
        args = SimpleNamespace(seed=self.cfg.get("seed", 0), nrhs=1, reps=reps)
        med, tmin, (valid, metrics, bad) = self.bench.jaxmg_case(args, op, dt, n, tile, self.P, "multi")
        # the tile in use: jaxmg cuts a tile taller than the shard to the shard
        used = min(self.bench.effective_tile(op, tile, n, self.P), n // self.P)
        return dict(time_s=med, min_s=tmin, reps=reps, valid=valid, metrics=metrics, bad=bad,
                    op=op, dtype=dt, n=n, P=self.P, tile=used)

    def large(self):
        """Keys: n_solve (32768), n_eig (16384), tile (1024); f64."""
        n_solve, n_eig = self.cfg.get("n_solve", 32768), self.cfg.get("n_eig", 16384)
        for op, n in (("potrs", n_solve), ("potri", n_solve), ("syevd", n_eig)):
            self.record(f"{op}/f64/{n}", lambda: self.bench_case(op, "f64", n, 1))
            gc.collect()

    def timing(self):
        """Keys: ops, dtypes, sizes, reps (3), tile (1024)."""
        for op in self.cfg.get("ops", ["potrs", "potri", "syevd"]):
            for dt in self.cfg.get("dtypes", ["f64"]):
                for n in self.cfg["sizes"]:
                    self.record(f"{op}/{dt}/{n}", lambda: self.bench_case(op, dt, n, self.cfg.get("reps", 3)))
                    gc.collect()

    # -- killed ----------------------------------------------------------------

    def killed(self):
        """Process 1 dies after a first call, before the second: the others
        must get an error within JAXMG_TIMEOUT_S, not hang."""
        import jaxmg

        n = 128 * self.P
        A = self.put(hpd(n, np.float64)[0], self.ROW)
        b = self.put(np.ones((n, 1)), self.REP)

        def call():
            return jaxmg.potrs(A, b, 64, self.mesh, (self.ROW, self.REP), dispatch="multi")

        self.record("warmup", lambda: dict(checks={
            "residual": [fetch(self.d.solve_residual(A, call(), b)), tol(np.float64, n)]}))
        if self.me == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(1.0)  # it is gone before the others call
        self.record("call", lambda: dict(not_nan=fetch(self.d.count_not_nan(call()))))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
