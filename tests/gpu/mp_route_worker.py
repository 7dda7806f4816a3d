"""One process of a routing job (tests/gpu/test_mp_engine.py::test_public_calls_route):
one GPU per process, JAXMG_NODE_ID set by the launcher, mesh ("S", "T") with
one row per emulated node. The public functions run on three layouts:

  across  A sharded P("S", "T"): a solve group across nodes, so the
          cuSOLVERMp engine (routed, dispatch="auto");
  forced  A sharded P("T", None), dispatch="mp": inside a node, forced;
  node    A sharded P("T", None), dispatch="auto": the one-node engines.

Every result is checked against its defining equation in float64 on the
host; out/<pid>.json holds [value, limit] per check, judged by the test.

    python mp_route_worker.py '{"port":..,"nprocs":..,"pid":..,"nodes":..,"out":DIR}'
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

cfg = json.loads(sys.argv[1])
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
ngpu = int(cfg.get("gpus_per_host", cfg["nprocs"]))
jax.distributed.initialize(f"127.0.0.1:{cfg['port']}", cfg["nprocs"], cfg["pid"],
                           local_device_ids=[cfg["pid"] % ngpu])
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import jaxmg  # noqa: E402
from jaxmg.pipeline import decide as _decide

devs = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
mesh = Mesh(np.array(devs, dtype=object).reshape(cfg["nodes"], -1), ("S", "T"))
record = {"cases": {}}
LAYOUTS = {"across": (P("S", "T"), ("S", "T"), "auto"), "forced": (P("T", None), ("T",), "mp"),
           "node": (P("T", None), ("T",), "auto")}


def full(x):
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def rel(x, y):
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300))


def run(layout, op, dtype, n, rng):
    spec, axes, dispatch = LAYOUTS[layout]
    x = rng.standard_normal((n, n))
    if np.iscomplexobj(np.zeros((), dtype)):
        x = x + 1j * rng.standard_normal((n, n))
    a = (x @ x.conj().T / n + np.eye(n)).astype(dtype)
    b = rng.standard_normal((n, 2)).astype(dtype)
    A = jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec), lambda i: a[i])
    B = jax.device_put(b, NamedSharding(mesh, P()))
    c = {"routed": _decide.for_mesh(op, mesh, axes, dispatch, n, dtype) == "mp"}
    tol = 200 * n * np.finfo(dtype).eps
    t0 = time.perf_counter()
    if op == "potrs":
        xs, ld, st = jaxmg.potrs(A, B, 64, mesh, spec, return_logdet=True, return_status=True,
                                 dispatch=dispatch)
        c["checks"] = {"residual": [rel(a @ full(xs), b), tol],
                       "logdet": [abs(float(full(ld)) - np.linalg.slogdet(a)[1]) / n, tol]}
    elif op == "potri":
        inv, st = jaxmg.potri(A, 64, mesh, spec, return_status=True, dispatch=dispatch)
        c["checks"] = {"inverse": [rel(full(inv) @ a, np.eye(n)), 10 * tol]}
    else:
        w, V, st = jaxmg.syevd(A, 64, mesh, spec, return_status=True, dispatch=dispatch)
        w, V = full(w), full(V)
        c["checks"] = {"equation": [rel(a @ V, V * w), tol],
                       "eigvals": [float(np.max(np.abs(w - np.linalg.eigvalsh(a)))), tol * n]}
    c["seconds"] = time.perf_counter() - t0
    c["status"] = int(np.asarray(full(st)).max())
    return c


rng = np.random.default_rng(0)
for layout in LAYOUTS:
    for op in ("potrs", "potri", "syevd"):
        for dt in (np.float64, np.complex64):
            name = f"{layout}/{op}/{np.dtype(dt).name}"
            try:
                record["cases"][name] = dict(run(layout, op, dt, cfg.get("n", 512), rng), ok=True)
            except Exception as e:  # recorded; the test judges
                record["cases"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[-2000:],
                                         "trace": traceback.format_exc()[-3000:]}
            with open(os.path.join(cfg["out"], f"{cfg['pid']}.json"), "w") as f:
                json.dump(record, f)
record["done"] = True
with open(os.path.join(cfg["out"], f"{cfg['pid']}.json"), "w") as f:
    json.dump(record, f)
os._exit(0)
