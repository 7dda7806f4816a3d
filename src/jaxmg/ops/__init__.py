"""The ops, one module each: its declaration (pipeline/declare.py: options,
outputs and their layouts, shape rule, its row of the C op table, its
derivative and batching rule) and its public functions, which hand over to
the pipeline (pipeline/forms.py). docs/developing.md shows how to add one.
"""

from . import eigh_generalized, gesvd, least_squares, lu_solve, polar, potri, potrs, qr, syevd

# Every public op's declaration.
ALL = (potrs.POTRS, potri.POTRI, syevd.SYEVD, lu_solve.LU_SOLVE, least_squares.LEAST_SQUARES,
       qr.QR, gesvd.GESVD, polar.POLAR, eigh_generalized.SYGVD)


def by_row(row: str):
    """The declaration of the op with this row of the C op table."""
    return {op.row: op for op in ALL}[row]
