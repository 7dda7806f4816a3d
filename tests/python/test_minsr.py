"""examples/minsr.py: the distributed MinSR update against a float64 numpy
reference, on 2-D ("S", "T") meshes of host devices, and its command line."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from helpers import eps, randn, run_fresh

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "minsr.py")


def _load_example():
    # the example sets NCCL_NVLS_ENABLE for GPU runs at import; the test
    # process keeps the environment it had
    had = "NCCL_NVLS_ENABLE" in os.environ
    spec = importlib.util.spec_from_file_location("minsr_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not had:
        os.environ.pop("NCCL_NVLS_ENABLE", None)
    return mod


minsr = _load_example()

N_S, N_P = 64, 300
# 128 does not divide 300: two full chunks in the scan, then a remainder of 44
CHUNK = 128
LAM, TAU = 1e-3, 0.7


def _mesh(s, t):
    return Mesh(np.array(jax.devices()[: s * t]).reshape(s, t), ("S", "T"))


def _problem(rng, dtype, n_s=N_S, n_p=N_P):
    """Centered X and E as MinSR has them: X X^H is then singular (the
    all-ones vector is in its kernel), so lam alone makes it definite."""
    O = randn(rng, (n_s, n_p), dtype)
    X = (O - O.mean(axis=0)) / np.sqrt(n_s)
    e = randn(rng, (n_s,), dtype)
    E = (e - e.mean()) / np.sqrt(n_s)
    return X.astype(dtype), E.astype(dtype)


def _put(mesh, X, E):
    return (
        jax.device_put(X, NamedSharding(mesh, minsr.X_SPEC)),
        jax.device_put(E, NamedSharding(mesh, minsr.E_SPEC)),
    )


def _check(got, X, E, lam, tau, dtype, c=2.0):
    """Relative error within c (N_s + N_p) eps kappa: the Gram products'
    rounding grows with N_p, the solve's with N_s. kappa is the condition
    number of X X^H + lam I over the range of X only: errors of v along the
    kernel of X^H (here the all-ones vector, with eigenvalue lam alone) are
    annihilated by the final X^H, so the full condition number (~1/lam)
    would make the bound vacuous."""
    ref = minsr.reference_update(X, E, lam, tau)
    got = np.asarray(got)
    assert got.shape == ref.shape == (X.shape[1],)
    assert got.dtype == np.dtype(dtype)
    Xw = X.astype(np.complex128 if np.iscomplexobj(X) else np.float64)
    w = np.linalg.eigvalsh(Xw @ Xw.conj().T)
    w = w[w > sum(X.shape) * eps(np.float64) * w[-1]]
    kappa = (w[-1] + lam) / (w[0] + lam)
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    tol = c * sum(X.shape) * eps(dtype) * kappa
    assert err <= tol, f"relative error {err:.2e} > {tol:.2e} (kappa {kappa:.1e})"
    return err


@pytest.mark.parametrize("shape", [(1, 8), (2, 4), (2, 2)], ids=lambda s: f"mesh{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=lambda d: np.dtype(d).name)
def test_update_matches_reference(rng, shape, dtype):
    mesh = _mesh(*shape)
    X, E = _problem(rng, dtype)
    if np.iscomplexobj(X):
        assert np.abs(X.imag).max() > 0.1 and np.abs(E.imag).max() > 0.1
    Xd, Ed = _put(mesh, X, E)
    got = minsr.minsr_update(Xd, Ed, mesh=mesh, lam=LAM, tau=TAU, T_A=4, chunk=CHUNK)
    _check(got, X, E, LAM, TAU, dtype)


def test_gram_and_chunking(rng):
    """The returned T_reg is X X^H + lam I; the result does not depend on
    the chunk (dividing N_p, not dividing it, or wider than N_p)."""
    mesh = _mesh(2, 4)
    X, E = _problem(rng, np.complex128)
    Xd, Ed = _put(mesh, X, E)
    outs = []
    for chunk in (100, CHUNK, 1000):
        d, T_reg = minsr.minsr_update(
            Xd, Ed, mesh=mesh, lam=LAM, tau=TAU, T_A=4, chunk=chunk, return_gram=True
        )
        outs.append(np.asarray(d))
    T_ref = X @ X.conj().T + LAM * np.eye(N_S)
    np.testing.assert_allclose(np.asarray(T_reg), T_ref, rtol=0, atol=100 * N_P * eps(np.float64))
    assert T_reg.sharding.spec in (P("T", None), P("T"))
    for d in outs[1:]:
        np.testing.assert_allclose(d, outs[0], rtol=1e-9, atol=0)


def test_traced_lam_tau_and_float32(rng):
    """lam and tau may be traced values in an enclosing jit; float32 stays
    float32 throughout."""
    mesh = _mesh(1, 8)
    X, E = _problem(rng, np.float32)
    Xd, Ed = _put(mesh, X, E)
    lam = 1e-2

    @jax.jit
    def outer(X, E, lam, tau):
        return minsr.minsr_update(X, E, mesh=mesh, lam=lam, tau=tau, T_A=8, chunk=CHUNK)

    got = outer(Xd, Ed, jnp.float32(lam), jnp.float32(TAU))
    _check(got, X, E, lam, TAU, np.float32)


def test_explicit_mesh(rng):
    """A mesh from jax.make_mesh (Explicit axes in current JAX) works too."""
    mesh = jax.make_mesh((2, 4), ("S", "T"), axis_types=(AxisType.Explicit,) * 2)
    X, E = _problem(rng, np.float64)
    Xd, Ed = _put(mesh, X, E)
    got = minsr.minsr_update(Xd, Ed, mesh=mesh, lam=LAM, tau=TAU, T_A=4, chunk=CHUNK)
    _check(got, X, E, LAM, TAU, np.float64)


def test_rejects_sample_count_not_dividing_devices(rng):
    mesh = _mesh(2, 4)
    X, E = _problem(rng, np.float64, n_s=60)
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        minsr.minsr_update(X, E, mesh=mesh, lam=LAM, tau=TAU, T_A=4, chunk=CHUNK)


def test_main_runs_and_reports():
    """The command line on a (2, 4) mesh in complex128, which main() itself
    must enable x64 for (the variable is removed from the child's env)."""
    args = ["--samples", "64", "--params", "300", "--chunk", "128", "--T_A", "8"]
    args += ["--dtype", "complex128", "--mesh-s", "2", "--steps", "2"]
    out = run_fresh([EXAMPLE, *args], cwd=ROOT).stdout
    assert "mesh (S, T) = (2, 4)" in out
    assert "warm-up" in out and "excluded" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("step ")]
    assert [ln.split(":")[0] for ln in lines] == ["step 1/2", "step 2/2"], out
    for ln in lines:
        assert "ms/step" in ln and "of the step" in ln and "|dtheta| =" in ln
        norm = float(ln.split("|dtheta| =")[1].split(",")[0])
        assert np.isfinite(norm) and norm > 0
    assert out.strip().splitlines()[-1].startswith("summary: 2 steps")
