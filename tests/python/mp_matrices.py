"""The multi-process tests' matrices: every process (and the parent that
checks them) rebuilds the same ones from the same string seeds."""

import zlib

import numpy as np


def rng(key):
    return np.random.default_rng(zlib.crc32(key.encode()))


def spd(key, n, dtype=np.float64):
    r = rng(key)
    x = r.standard_normal((n, n))
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * r.standard_normal((n, n))
    a = x @ x.conj().T / n + np.eye(n)
    return ((a + a.conj().T) / 2).astype(dtype)


def sym(key, n):
    x = rng(key).standard_normal((n, n))
    return (x + x.T) / 2
