"""JAXMg 1.4.1 itself next to jaxmg: the same op, N, dtype, grid and tile,
one process per GPU, every result validated.

JAXMg 1.4.1 is also named `jaxmg`, so the two never share a process: each
implementation runs as its own job of NGPU processes (jax.distributed on a
localhost coordinator, local_device_ids=[i]), the peer's with its --target
folder first on PYTHONPATH. Both get their matrices from the same
generator (A = (R + R^H)/2 + 2 sqrt(N) I, R uniform in [-1, 1): symmetric
/ Hermitian, positive definite, condition number about 2.4; b uniform), so
the rows compare like with like.

    python bench/peer_jaxmg14.py --peer-site /tmp/peer14 --ops potrs,syevd \\
        --sizes 32768,65536 --grids 2x2,1x4 --md peer.md --csv peer.csv

Implementations (--impls): peer (JAXMg 1.4.1, cuSOLVERMp on XLA's
communicator), mp (jaxmg, dispatch="mp": its cuSOLVERMp engine), multi
(jaxmg on cuSolverMg), single (jaxmg, one GPU after a gather). potri is
absent from JAXMg 1.4.1 (its row says so). Timings: the wall time of one
call on process 0, between a barrier and block_until_ready, after one
warm-up call (compilation, communicators); min and median of --reps.
Validation, in the working dtype on the GPUs, per op: potrs/lu_solve
||A x - b|| / (||A|| ||x||); potri ||A X[:, :64] - I[:, :64]|| / ||A||
||X[:, :64]||; syevd ||A V - V diag(w)|| / (||A|| sqrt(N)) (Frobenius;
||A|| the Frobenius norm); a row is valid below 50 sqrt(N) eps (as
bench.py) and status 0. Neither implementation donates A (donate=False), so both keep
A and a working copy.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = "JAXMG_PEER14_WORKER"
DTYPES = {"f32": "float32", "f64": "float64", "c64": "complex64", "c128": "complex128"}


# ---------------------------------------------------------------------------
# parent: one job per implementation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(impl, cases, args) -> list[dict]:
    """Runs every case of one implementation in NGPU processes; returns
    process 0's records (an error record per case that did not finish)."""
    port, out = _free_port(), os.path.join(args.workdir, f"peer_{impl}.jsonl")
    if os.path.exists(out):
        os.remove(out)
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", PYTHONUNBUFFERED="1")
    # The peer's folder first (its jaxmg shadows ours); jaxmg from ./src only
    # where asked; the cuSOLVERMp wheels' folder for both.
    first = {"peer": args.peer_site}.get(impl, os.path.join(os.path.dirname(HERE), "src")
                                          if args.ours_src else "")
    paths = [p for p in (first, args.mp_site) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    procs = []
    for i in range(args.ngpu):
        cfg = dict(port=port, nprocs=args.ngpu, pid=i, impl=impl, cases=cases, reps=args.reps,
                   out=out)
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                      env=dict(env, **{WORKER: json.dumps(cfg)}),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + args.job_limit_s
    logs = []
    for i, p in enumerate(procs):
        try:
            log, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    q.kill()
            log, _ = p.communicate()
            log += f"\n[peer_jaxmg14: {impl} process {i} killed after {args.job_limit_s} s]"
        logs.append(log)
        with open(os.path.join(args.workdir, f"peer_{impl}_{i}.log"), "w") as f:
            f.write(log)
    done = []
    if os.path.exists(out):
        with open(out) as f:
            done = [json.loads(line) for line in f if line.strip()]
    seen = {r["case"] for r in done}
    for c in cases:
        if c["id"] not in seen:
            tail = logs[0].strip().splitlines()[-1:] if logs[0].strip() else ["no output"]
            done.append(dict(case=c["id"], impl=impl, **c, error=f"did not finish: {tail[0][:200]}"))
    return done


def _cases(args) -> list[dict]:
    cases = []
    for op in args.ops.split(","):
        for dt in args.dtypes.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                for g in args.grids.split(","):
                    p, q = (int(x) for x in g.lower().split("x"))
                    if p * q != args.ngpu:
                        raise SystemExit(f"grid {g} has {p * q} processes, not --ngpu {args.ngpu}")
                    tile = args.tile_syevd if op == "syevd" else args.tile
                    cases.append(dict(id=f"{op}-{dt}-{n}-{g}-{tile}", op=op, dtype=DTYPES[dt], n=n,
                                      p=p, q=q, tile=tile, nrhs=args.nrhs))
    return cases


def _table(rows) -> str:
    head = ("| op | dtype | N | grid | tile | impl | min s | median s | residual | status | valid |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['op']} | {r['dtype']} | {r['n']} | {r['p']}x{r['q']} | {r['tile']} | "
                         f"{r['impl']} | - | - | - | - | {r['error'][:120]} |")
            continue
        lines.append(f"| {r['op']} | {r['dtype']} | {r['n']} | {r['p']}x{r['q']} | {r['tile']} | "
                     f"{r['impl']} | {r['min_s']:.4f} | {r['median_s']:.4f} | {r['residual']:.2e} | "
                     f"{r['status']} | {'yes' if r['valid'] else 'NO'} |")
    return head + "\n".join(lines) + "\n"


def _ratios(rows) -> str:
    """jaxmg's best over JAXMg 1.4.1's best per (op, dtype, N), valid rows only."""
    best: dict = {}
    for r in rows:
        if r.get("error") or not r["valid"]:
            continue
        k = (r["op"], r["dtype"], r["n"], "peer" if r["impl"] == "peer" else "jaxmg")
        best[k] = min(best.get(k, math.inf), r["min_s"])
    out = ["| op | dtype | N | jaxmg best s | JAXMg 1.4.1 best s | ratio (target <= 0.95) |",
           "|---|---|---|---|---|---|"]
    for (op, dt, n, who), t in sorted(best.items()):
        if who != "jaxmg" or (op, dt, n, "peer") not in best:
            continue
        tp = best[(op, dt, n, "peer")]
        out.append(f"| {op} | {dt} | {n} | {t:.4f} | {tp:.4f} | {t / tp:.3f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-site", required=True, help="the --target folder JAXMg 1.4.1 went into")
    ap.add_argument("--mp-site", default="", help="a --target folder with nvidia-cusolvermp-cu13 "
                    "and nvidia-cublasmp-cu13, first on both jobs' path (if not installed)")
    ap.add_argument("--ours-src", action="store_true", help="run jaxmg from ./src (else installed)")
    ap.add_argument("--impls", default="peer,mp,multi,single")
    ap.add_argument("--ops", default="potrs")
    ap.add_argument("--dtypes", default="f64")
    ap.add_argument("--sizes", default="32768")
    ap.add_argument("--grids", default="2x2")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--tile-syevd", type=int, default=256)
    ap.add_argument("--nrhs", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ngpu", type=int, default=0, help="default: every GPU nvidia-smi lists")
    ap.add_argument("--job-limit-s", type=float, default=1500)
    ap.add_argument("--workdir", default=os.environ.get("LOGS", "/tmp"))
    ap.add_argument("--md", default="")
    ap.add_argument("--csv", default="")
    args = ap.parse_args(argv)
    if not args.ngpu:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        args.ngpu = sum(line.startswith("GPU ") for line in out.splitlines())
    os.makedirs(args.workdir, exist_ok=True)
    cases = _cases(args)
    rows = []
    for impl in args.impls.split(","):
        todo = [c for c in cases if not (impl == "peer" and c["op"] == "potri")]
        rows += [dict(c, case=c["id"], impl="peer", error="absent from JAXMg 1.4.1 (no potri)")
                 for c in cases if impl == "peer" and c["op"] == "potri"]
        if todo:
            rows += _job(impl, todo, args)
    rows.sort(key=lambda r: (r["op"], r["dtype"], r["n"], r["p"], r["impl"]))
    text = _table(rows) + "\n" + _ratios(rows)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"JAXMg 1.4.1 against jaxmg, {args.ngpu} GPUs, one process per GPU\n\n" + text)
    if args.csv:
        keys = sorted({k for r in rows for k in r if k != "cases"})
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    bad = [r for r in rows
           if (r.get("error") and "absent" not in r["error"]) or (not r.get("error") and not r["valid"])]
    return 1 if bad else 0


# ---------------------------------------------------------------------------
# worker: one process per GPU


def _setup(cfg):
    import jax

    gpu = os.environ.get("JAX_PLATFORMS", "") != "cpu"  # cpu: a plumbing check only
    jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", num_processes=cfg["nprocs"],
                               process_id=cfg["pid"], initialization_timeout=300,
                               **({"local_device_ids": [cfg["pid"]]} if gpu else {}))
    jax.config.update("jax_enable_x64", True)
    return jax


def _mesh(jax, p, q):
    """(mesh, A's spec): a p x q grid; a 1-D grid is a one-axis mesh (JAXMg
    1.4.1 wants the mesh to hold the grid axes only)."""
    from jax.sharding import PartitionSpec as P

    if p > 1 and q > 1:
        return jax.make_mesh((p, q), ("r", "c")), P("r", "c")
    if q == 1:
        return jax.make_mesh((p,), ("r",)), P("r", None)
    return jax.make_mesh((q,), ("c",)), P(None, "c")


def _inputs(jax, case, mesh, spec, seed=0):
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    n, dt = case["n"], jnp.dtype(case["dtype"])
    real = jnp.finfo(dt).dtype
    cplx = jnp.issubdtype(dt, jnp.complexfloating)

    def make(key):
        k1, k2, k3 = jax.random.split(key, 3)
        r = jax.random.uniform(k1, (n, n), real, -1, 1)
        if cplx:
            r = r + 1j * jax.random.uniform(k2, (n, n), real, -1, 1)
        a = (r + jnp.conj(r.T)) / 2 + 2 * math.sqrt(n) * jnp.eye(n, dtype=real)
        b = jax.random.uniform(k3, (n, case["nrhs"]), real, -1, 1).astype(dt)
        return a.astype(dt), b

    f = jax.jit(make, out_shardings=(NamedSharding(mesh, spec), NamedSharding(mesh, P(None, None))))
    return f(jax.random.PRNGKey(seed))


def _calls(jaxmg, impl, case, mesh, spec):
    """The timed call: A, b -> (outputs..., status)."""
    t, op = case["tile"], case["op"]
    if impl == "peer":
        kw = dict(return_status=True, donate=False)
    else:
        kw = dict(return_status=True, dispatch=impl)
    def lu(*a, **k):  # jaxmg before its __init__ exported lu_solve: the module's
        f = getattr(jaxmg, "lu_solve", None)
        if f is None:
            from jaxmg import _general_ops as g

            f = g.lu_solve
        return f(*a, **k)

    return {
        "potrs": lambda A, b: jaxmg.potrs(A, b, t, mesh, spec, **kw),
        "lu_solve": lambda A, b: lu(A, b, t, mesh, spec, **kw),
        "potri": lambda A, b: jaxmg.potri(A, t, mesh, spec, **kw),
        "syevd": lambda A, b: jaxmg.syevd(A, t, mesh, spec, return_eigenvectors=True, **kw),
    }[op]


def _status(st) -> int:
    import numpy as np

    s = np.asarray(st).reshape(-1)
    return int(s[0]) if s.size else 0  # 1.4.1: per-rank words, word 0 the status code


def _residual(jax, case, A, b, out) -> float:
    import jax.numpy as jnp

    hi = jax.lax.Precision.HIGHEST
    na = jnp.linalg.norm(A)
    op = case["op"]
    if op in ("potrs", "lu_solve"):
        x = out[0]
        x = x[:, None] if x.ndim == 1 else x
        r = jnp.linalg.norm(jnp.matmul(A, x, precision=hi) - b) / (na * jnp.linalg.norm(x))
    elif op == "potri":
        k = min(64, case["n"])
        X = out[0][:, :k]
        r = jnp.linalg.norm(jnp.matmul(A, X, precision=hi) - jnp.eye(case["n"], k, dtype=A.dtype)) / (
            na * jnp.linalg.norm(X))
    else:
        w, V = out[0], out[1]
        r = jnp.linalg.norm(jnp.matmul(A, V, precision=hi) - V * w[None, :]) / (
            na * math.sqrt(case["n"]))
    return float(r)


def worker(cfg) -> int:
    jax = _setup(cfg)
    import numpy as np
    from jax.experimental import multihost_utils

    import jaxmg

    lead = jax.process_index() == 0
    eps = {"float32": 1.2e-7, "complex64": 1.2e-7}.get
    for case in cfg["cases"]:
        rec = dict(case=case["id"], impl=cfg["impl"], **case)
        try:
            mesh, spec = _mesh(jax, case["p"], case["q"])
            A, b = _inputs(jax, case, mesh, spec)
            fn = _calls(jaxmg, cfg["impl"], case, mesh, spec)
            times = []
            for rep in range(cfg["reps"] + 1):
                multihost_utils.sync_global_devices(f"{case['id']}.{rep}")
                t0 = time.perf_counter()
                out = jax.block_until_ready(fn(A, b))
                if rep:
                    times.append(time.perf_counter() - t0)
            res = _residual(jax, case, A, b, out)
            tol = 50 * math.sqrt(case["n"]) * (eps(case["dtype"]) or 2.2e-16)
            st = _status(out[-1])
            rec.update(min_s=min(times), median_s=statistics.median(times), residual=res,
                       status=st, valid=bool(st == 0 and np.isfinite(res) and res < tol), tol=tol)
            del out, A, b
        except Exception as e:  # recorded, and the next case runs
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if lead:
            with open(cfg["out"], "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    if WORKER in os.environ:
        sys.exit(worker(json.loads(os.environ[WORKER])))
    sys.exit(main())
