"""jaxmg: distributed dense linear algebra for JAX on several GPUs.

Shard a matrix by rows over a mesh axis and call

    potrs(A, b, T_A, mesh, in_specs)          # Cholesky solve A x = b
    potri(A, T_A, mesh, in_specs)             # inverse of SPD/HPD A
    syevd(A, T_A, mesh, in_specs)             # eigenvalues and eigenvectors

inside ordinary (jitted) JAX code; or the *_shardmap_ctx variants inside
your own jax.shard_map. On GPUs the work runs on cuSolverMg across the
devices of the mesh axis; on CPU devices on LAPACK, through the same C core.
Importing jaxmg changes no JAX setting.
"""

from ._ops import (
    potri,
    potri_shardmap_ctx,
    potrs,
    potrs_shardmap_ctx,
    syevd,
    syevd_shardmap_ctx,
)

__all__ = [
    "potrs",
    "potri",
    "syevd",
    "potrs_shardmap_ctx",
    "potri_shardmap_ctx",
    "syevd_shardmap_ctx",
]
__version__ = "0.1.0"
