"""NetKet 3.23 as a real client of jaxmg, on 4 CPU devices (run by
test_netket.py in a fresh process: NetKet sets its mesh and x64 at import).

Runs NetKet's own cholesky_distributed and pinv_smooth_distributed (eager,
under jit, with process_grid=(2, 2)) and two VMC_SR(use_ntk=True) steps,
and compares each with NetKet's dense cholesky / pinv_smooth in float64.
Prints one line per check and "OK" at the end.
"""

import sys

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import netket as nk
from jax.sharding import PartitionSpec as P
from netket.optimizer.solver import (cholesky, cholesky_distributed, pinv_smooth,
                                     pinv_smooth_distributed)

import jaxmg

TOL = 1e-10
assert jax.device_count() == 4, jax.devices()
assert jax.config.jax_enable_x64
ctx = jax.sharding.get_abstract_mesh()
assert tuple(ctx.axis_names) == ("S",), ctx


def rel(x, ref):
    x, ref = np.asarray(x), np.asarray(ref)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def check(name, x, ref):
    err = rel(x, ref)
    print(f"{name}: rel {err:.2e}")
    assert err <= TOL, (name, err)


rng = np.random.default_rng(20)
n = 64
X = rng.standard_normal((n, 2 * n))
A_np = X @ X.T / (2 * n) + 0.05 * np.eye(n)   # SPD, condition ~ 1e2
b_np = rng.standard_normal(n)
A = jax.device_put(jnp.asarray(A_np), P("S", None))
b = jax.device_put(jnp.asarray(b_np), P())

x_chol, _ = cholesky(jnp.asarray(A_np), jnp.asarray(b_np))
x_pinv, _ = pinv_smooth(jnp.asarray(A_np), jnp.asarray(b_np))
solvers = {
    "cholesky": (cholesky_distributed, x_chol),
    "pinv_smooth": (pinv_smooth_distributed, x_pinv),
}
for name, (fn, ref) in solvers.items():
    for grid in (None, (2, 2)):
        kw = {} if grid is None else {"process_grid": grid}
        check(f"{name} eager grid={grid}", fn(A, b, **kw)[0], ref)
        check(f"{name} jit grid={grid}", jax.jit(lambda A, b: fn(A, b, **kw)[0])(A, b), ref)


def vmc(solver):
    """Two VMC_SR steps with the NTK (use_ntk=True) on a small Ising chain;
    the change of the parameters, flattened (the updates the solver made)."""
    L = 6
    hi = nk.hilbert.Spin(0.5, N=L)
    g = nk.graph.Chain(L)
    H = nk.operator.IsingJax(hi, g, h=1.0)
    sa = nk.sampler.MetropolisLocal(hi, n_chains=16)
    model = nk.models.RBM(alpha=1, param_dtype=jnp.float64)
    vs = nk.vqs.MCState(sa, model, n_samples=64, seed=1, sampler_seed=2)
    opt = nk.optimizer.Sgd(learning_rate=0.02)
    drv = nk.driver.VMC_SR(H, opt, variational_state=vs, diag_shift=0.01, use_ntk=True,
                           linear_solver=solver)
    flat = lambda: np.asarray(jax.flatten_util.ravel_pytree(vs.parameters)[0])  # noqa: E731
    p0 = flat()
    drv.run(n_iter=2, out=None, show_progress=False)
    return flat() - p0

p_dense = vmc(cholesky)
check("VMC_SR use_ntk cholesky_distributed", vmc(cholesky_distributed), p_dense)
check("VMC_SR use_ntk pinv_smooth_distributed", vmc(pinv_smooth_distributed), vmc(pinv_smooth))
print("jaxmg", jaxmg.__version__, "netket", nk.__version__)
print("OK")
sys.stdout.flush()
