"""Where potri goes wrong on GPUs: error of the lower triangle (cuSolverMg's
output), of the strict upper one (the mirror kernel), per tile size."""
import os
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxmg
devs = jax.devices()
mesh = Mesh(np.array(devs), ("x",))
for n, t in [(2048, 512), (4096, 1024), (4096, 256), (5000, 512)]:
    rng = np.random.default_rng(n + t)
    r = rng.uniform(-1, 1, (n, n))
    a = (r + r.T) / (2 * np.sqrt(n)) + 2 * np.eye(n)
    ref = np.linalg.inv(a)
    inv = np.asarray(jaxmg.potri(jax.device_put(a, NamedSharding(mesh, P("x", None))), t, mesh, (P("x", None),)))
    lo = np.abs(np.tril(inv - ref)).max()
    up = np.abs(np.triu(inv - ref, 1)).max()
    bad = np.argwhere(np.abs(np.tril(inv - ref)) > 1e-8)
    print(f"n={n} T={t} lower_err={lo:.2e} upper_err={up:.2e} bad_lower={len(bad)} first={bad[:3].tolist()}", flush=True)
