"""Shared helpers: random test matrices, meshes, tolerances."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
ROW = P("x", None)
REP = P(None, None)


def rng_for(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def is_complex(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.complexfloating)


def eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def real_dtype(dtype):
    return np.finfo(np.dtype(dtype)).dtype


def randn(rng, shape, dtype):
    """Standard normal entries; complex ones with nonzero imaginary parts."""
    x = rng.standard_normal(shape)
    if is_complex(dtype):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _hermitize(a):
    a = (a + a.conj().T) / 2
    if np.iscomplexobj(a):
        a[np.diag_indices_from(a)] = a.diagonal().real
    return a


def spd(rng, n, dtype):
    """A well conditioned SPD (real) / HPD (complex) matrix X X^H + n I."""
    x = randn(rng, (n, n), np.complex128 if is_complex(dtype) else np.float64)
    a = _hermitize(x @ x.conj().T / n + np.eye(n) * 1.0)
    return a.astype(dtype)


def hermitian(rng, n, dtype):
    """A random symmetric (real) / genuinely complex Hermitian matrix."""
    x = randn(rng, (n, n), np.complex128 if is_complex(dtype) else np.float64)
    a = _hermitize(x)
    if is_complex(dtype):
        assert np.abs(a.imag).max() > 0.1
    return a.astype(dtype)


def unitary(rng, n, dtype):
    x = randn(rng, (n, n), np.complex128 if is_complex(dtype) else np.float64)
    q, r = np.linalg.qr(x)
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


def mesh(k, start=0, reverse=False, name="x"):
    devs = jax.devices()[start : start + k]
    if reverse:
        devs = devs[::-1]
    return Mesh(np.array(devs), (name,))


def put(x, m, spec):
    """x placed on mesh m as `spec`; replicated there when its rows do not
    divide over the axis (JAX cannot hold such an array sharded)."""
    x = jnp.asarray(x)
    parts = tuple(spec)
    if parts and parts[0] is not None:
        axes = parts[0] if isinstance(parts[0], tuple) else (parts[0],)
        k = int(np.prod([m.shape[a] for a in axes]))
        if x.shape[0] % k:
            spec = P()
    return jax.device_put(x, NamedSharding(m, spec))


def up(x):
    """numpy float64/complex128 copy of an array."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def nrm(x):
    return float(np.linalg.norm(up(x)))


def check_solve(A, x, b, dtype, c=30.0):
    """Residual and forward error of x for A x = b, both scaled by eps(dtype)."""
    A, x, b = up(A), up(x), up(b)
    n = A.shape[0]
    e = eps(dtype)
    assert np.all(np.isfinite(x))
    res = np.linalg.norm(A @ x - b) / (np.linalg.norm(A, 2) * np.linalg.norm(x))
    assert res <= c * n * e, f"residual {res:.3e} > {c * n * e:.3e}"
    import scipy.linalg

    ref = scipy.linalg.solve(A, b, assume_a="pos")
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err <= c * n * e * np.linalg.cond(A), f"forward error {err:.3e}"


def check_inverse(A, inv, dtype, c=30.0):
    A, inv = up(A), up(inv)
    n = A.shape[0]
    e = eps(dtype)
    assert np.all(np.isfinite(inv))
    cond = np.linalg.cond(A)
    eye = np.eye(n)
    assert np.linalg.norm(A @ inv - eye) <= c * n * e * cond, np.linalg.norm(A @ inv - eye)
    assert np.linalg.norm(inv @ A - eye) <= c * n * e * cond
    ref = np.linalg.inv(A)
    assert np.linalg.norm(inv - ref) / np.linalg.norm(ref) <= c * n * e * cond
    # both triangles filled, and the result Hermitian
    assert np.linalg.norm(inv - inv.conj().T) <= c * n * e * np.linalg.norm(ref)


def check_eigh(A, w, V, dtype, c=30.0):
    A = up(A)
    n = A.shape[0]
    e = eps(dtype)
    w = np.asarray(w)
    assert w.shape == (n,)
    assert w.dtype == real_dtype(dtype), (w.dtype, dtype)
    w = w.astype(np.float64)
    an = np.linalg.norm(A, 2)
    tol = c * n * e * max(an, 1.0)
    assert np.all(np.diff(w) >= -tol), "eigenvalues not ascending"
    ref = np.linalg.eigvalsh(A)
    assert np.abs(w - ref).max() <= tol, np.abs(w - ref).max()
    if V is None:
        return
    V = np.asarray(V)
    assert V.shape == (n, n) and V.dtype == np.dtype(dtype), (V.shape, V.dtype)
    V = up(V)
    assert np.linalg.norm(A @ V - V * w[None, :]) <= tol * np.sqrt(n)
    assert np.linalg.norm(V.conj().T @ V - np.eye(n)) <= c * n * e * np.sqrt(n)


def run_fresh(args, env=None, cwd=None, timeout=180):
    """Runs `python ARGS` in a fresh process on 8 CPU devices, with x64 as
    JAX's default (off) unless the child turns it on, and env added on top;
    asserts it exits 0 and returns the CompletedProcess (text)."""
    full = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    flag = "--xla_force_host_platform_device_count"
    if flag not in full.get("XLA_FLAGS", ""):
        full["XLA_FLAGS"] = (full.get("XLA_FLAGS", "") + f" {flag}=8").strip()
    full["JAX_PLATFORMS"] = "cpu"
    # relative paths of the parent's environment, made absolute: the child
    # may run in another directory (cwd) and must load the same jaxmg
    for key in ("PYTHONPATH", "JAXMG_LIBRARY_DIR"):
        if full.get(key):
            full[key] = os.pathsep.join(os.path.abspath(p) for p in full[key].split(os.pathsep) if p)
    full.update(env or {})
    r = subprocess.run([sys.executable, *args], env=full, capture_output=True, text=True,
                       timeout=timeout, cwd=cwd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def declared(row: str):
    """The declaration (jaxmg/ops/) of the op with this row of the C op table."""
    from jaxmg import ops

    return ops.by_row(row)


def request(row: str, *arrays, opts=None, **kw):
    """pipeline/request.normalise for the op of this row, its options
    (default: the op's defaults), arrays and keywords."""
    from jaxmg.pipeline import request as _request

    op = declared(row)
    return _request.normalise(op, opts if opts is not None else op.options(), *arrays, **kw)
