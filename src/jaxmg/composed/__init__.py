"""Algorithms composed from jaxmg's own distributed operations.

The routes here factor a tall matrix A (M x N, M >= N) held in rows over
the solve axes of a mesh (P(axes, None)) without ever gathering it: every
step works on each device's rows of an M x N matrix, or on N x N matrices
that are themselves in rows (Gram matrices by a ring reduce-scatter,
products by a ring that passes one row block at a time, jaxmg.potri /
jaxmg.syevd on row-sharded operands). Memory per device is
O(M N / P + N^2 / P) plus panels of N x N / P (docs/memory.md).

    polar_qdwh(A, mesh, axes)  -> (Up, H, status)     QDWH polar decomposition
    qr_cholesky(A, mesh, axes) -> (Q, R, status)      CholeskyQR2 / shifted CholeskyQR3
    lstsq_cholesky(A, b, mesh, axes) -> (x, status)   least squares: x = R^-1 Q^H b
    svd_polar(A, mesh, axes)   -> (U, s, Vh, status)  SVD from the polar decomposition

Every result matrix is in rows over `axes` (N x N ones included), s and
x are replicated. status: 0; -1 (results NaN) for non-finite input; k > 0 when
an inner Cholesky factorization (or the eigensolver) failed at k.

M and N must both be multiples of the number of devices on `axes`.
"""

from .cholesky_qr import qr_cholesky
from .least_squares import lstsq_cholesky
from .qdwh import polar_qdwh
from .svd_polar import svd_polar

__all__ = ["lstsq_cholesky", "polar_qdwh", "qr_cholesky", "svd_polar"]
