"""jaxmg: distributed dense linear algebra for JAX on several GPUs.

    potrs(A, b, T_A)                          # Cholesky solve A x = b
    potri(A, T_A)                             # inverse of SPD/HPD A
    syevd(A, T_A)                             # eigenvalues and eigenvectors
    lu_solve(A, b, T_A)                       # A x = b for general square A (LU)
    least_squares(A, b, T_A)                  # min ||A x - b|| for M >= N
    qr(A, T_A), gesvd(A, T_A), polar(A, T_A)  # QR, SVD, polar decomposition
    eigh_generalized(A, B, T_A)               # A x = lambda B x (alias sygvd)

with the mesh and A's layout taken from A's sharding or the context mesh,
or given as mesh=..., in_specs=... in any form of JAXMg 0.0.x and 1.4
(docs/coming-from-jaxmg.md); inside ordinary (jitted) JAX code. The
*_shardmap_ctx variants work inside your own jax.shard_map (local shards)
and outside one (global arrays, JAXMg 1.4's form). On GPUs the work runs on
cuSolverMg across the devices of the mesh; on CPU devices on LAPACK,
through the same C core. Importing jaxmg changes no JAX setting.
"""

from . import utils
from .engines.device import device_supports_vmm
from .ops.eigh_generalized import eigh_generalized, eigh_generalized_shardmap_ctx, sygvd
from .ops.gesvd import gesvd, gesvd_shardmap_ctx
from .ops.least_squares import least_squares, least_squares_shardmap_ctx
from .ops.lu_solve import lu_solve, lu_solve_shardmap_ctx
from .ops.polar import polar, polar_shardmap_ctx
from .ops.potri import potri, potri_shardmap_ctx, potri_symmetrize
from .ops.potrs import potrs, potrs_shardmap_ctx
from .ops.qr import qr, qr_shardmap_ctx
from .ops.syevd import syevd, syevd_shardmap_ctx
from .utils import calculate_padding

__all__ = [
    "potrs",
    "potri",
    "syevd",
    "potrs_shardmap_ctx",
    "potri_shardmap_ctx",
    "syevd_shardmap_ctx",
    "potri_symmetrize",
    "lu_solve",
    "least_squares",
    "qr",
    "gesvd",
    "polar",
    "lu_solve_shardmap_ctx",
    "least_squares_shardmap_ctx",
    "qr_shardmap_ctx",
    "gesvd_shardmap_ctx",
    "polar_shardmap_ctx",
    "eigh_generalized",
    "sygvd",
    "eigh_generalized_shardmap_ctx",
    "device_supports_vmm",
    "calculate_padding",
    "utils",
]
# Above 1.4.1, the version from which NetKet (>= 3.23) takes the 1.4 API; a
# pre-release of 1.5.0: CHANGELOG.md says what it holds of that API.
__version__ = "1.5.0.dev0"
