"""syevd: eigenvalues and eigenvectors of a symmetric / Hermitian A."""

from __future__ import annotations

import dataclasses

from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import EIGVECS, REPLICATED, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import hermitian

# cuSolverMg's syevd takes tiles of at most 1024 columns; every platform
# uses the same limit so that all of them solve the same padded problem.
MAX_TILE = 1024


@dataclasses.dataclass(frozen=True)
class Options:
    jobz: bool = True  # eigenvectors too


def eigen_outputs(opts):
    """w, and with jobz the eigenvectors (syevd's and the generalized
    eigenproblem's)."""
    return outputs(("w", REPLICATED)) + (outputs(("a", EIGVECS)) if opts.jobz else ())


def _rule(op, opts, cores):
    """jnp.linalg.eigh's derivatives (distinct eigenvalues for V); with
    eigenvalues only, the JVP runs the eigenvector solver once."""
    if opts.jobz:
        return hermitian.syevd(cores(op, opts), cores.lay, cores.v_cols)
    return hermitian.eigvalsh(cores(op, opts), cores(op, Options(jobz=True)), cores.lay,
                              cores.v_cols)


def _attrs(opts, m, n):
    return {"jobz": int(opts.jobz)}


SYEVD = Op(name="syevd", row="syevd", shape="square", operands="A", options=Options,
           outputs=eigen_outputs, rule=_rule, attrs=_attrs, max_tile=MAX_TILE, empty_ok=True)


def syevd(A, T_A, mesh=None, in_specs=None, return_eigenvectors=True, return_status=False,
          pad=True, dispatch="auto", *, matrix_specs=None, donate=False):
    """Eigendecomposition of a symmetric/Hermitian A.

    Returns (w, V): eigenvalues ascending (real dtype, replicated) and the
    eigenvectors as columns (A V = V diag(w)) in A's layout; only w with
    return_eigenvectors=False; status appended with return_status (0; > 0
    if the solver did not converge; -1 for non-finite input). T_A is capped
    at 1024 (cuSolverMg's limit for syevd); the rest as for potrs.
    """
    want = v.flag(return_status, "return_status")
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    *outs, status = forms.mesh_call(SYEVD, opts, A, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                    matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                    donate=donate)
    return forms.pick(outs, status, want)


def _inside(a, T_A, return_eigenvectors=True, pad=True, axis_name=None, dispatch="auto", *,
            v_layout="cols"):
    """Returns (w, V, status), or (w, status) without eigenvectors: w (N,)
    ascending, replicated; V this device's block of the eigenvector matrix
    (eigenvectors in columns): v_layout="cols" (the default, as JAXMg
    0.0.x): (N, N / P), this device's columns, out_specs P(None, ax);
    "rows": (N / P, N), this device's rows, out_specs P(ax, None). status
    (1,) as for potrs. Differentiable (w; V for distinct eigenvalues, as
    jnp.linalg.eigh), in either layout and without eigenvectors."""
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    if v.tile(T_A) is not None and T_A > MAX_TILE:
        raise ValueError(f"jaxmg: syevd_shardmap_ctx takes T_A <= {MAX_TILE}, got {T_A}")
    return forms.shard_call(SYEVD, opts, Statics(T_A, pad, axis_name, dispatch, v_layout=v_layout),
                            a)


def _outside(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, return_eigenvectors=True,
             pad=True, dispatch="auto", donate=False):
    """A global: returns (a_work, w, V, status) or (a_work, w, status); V in
    A's layout, status a scalar."""
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    return forms.mesh_call(SYEVD, opts, a, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                           works=1)


syevd_shardmap_ctx = forms.two_forms(_inside, _outside, "syevd_shardmap_ctx")
