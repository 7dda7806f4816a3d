"""Random inputs of the GPU tests, made on the host in the test's dtype."""

import numpy as np


def rand(rng, shape, dtype):
    """Standard normal entries; complex ones with nonzero imaginary parts."""
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def hpd(rng, n, dtype):
    """A well conditioned Hermitian positive definite matrix X X^H / n + I."""
    x = rand(rng, (n, n), dtype)
    return (x @ x.conj().T / n + np.eye(n)).astype(dtype)


def herm(rng, n, dtype):
    """A random Hermitian (real: symmetric) matrix."""
    x = rand(rng, (n, n), dtype)
    return ((x + x.conj().T) / 2).astype(dtype)
