"""eigh_generalized (alias sygvd): A x = lambda B x for Hermitian A and
Hermitian positive definite B, scipy.linalg.eigh(a, b)'s contract:
eigenvalues ascending (real dtype), eigenvectors as columns, B-orthonormal
(V^H B V = I), A V = B V diag(w). Both matrices are read by their upper
triangles.

The one-node engines gather A and B (host LAPACK sygvd/hegvd, cuSOLVER
sygvd on the first GPU: cuSolverMg has none); cuSOLVERMp solves the pencil
distributed. The end padding of N to a multiple of the device count is an
identity block that the one-node engines leave out (they are told the
order, `nvalid`): a pad block inside the pencil would need eigenvalues
above the pencil's, whose bound takes ||B^-1||. cuSOLVERMp gets a leading
sub-pencil wrong, so its route solves the whole pencil, padded with a zero
block of A (identity of B), and drops the pad eigenpairs by their
eigenvectors (engines/mp_route.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import Op
from ..pipeline.per_shard import Statics
from ..rules import hermitian
from .syevd import Options, eigen_outputs  # the same options and outputs as syevd's


def status_of(info, nvalid: int):
    """jaxmg's status from LAPACK sygvd's info for order nvalid: info =
    nvalid + k (B's leading minor k not positive definite) gives k; info
    in 1..nvalid (the eigensolver did not converge) gives nvalid + info;
    0 and -1 (non-finite input) stay."""
    info = jnp.asarray(info, jnp.int32)
    return jnp.where(info > nvalid, info - nvalid,
                     jnp.where(info > 0, info + nvalid, info)).astype(jnp.int32)


def _rule(op, opts, cores):
    """Derivatives in A and B (rules/hermitian.generalized_eigh); with
    eigenvalues only, the JVP runs the eigenvector solver once."""
    if opts.jobz:
        return hermitian.generalized_eigh(cores(op, opts), cores.lay, cores.v_cols)
    return hermitian.generalized_eigvalsh(cores(op, opts), cores(op, Options(jobz=True)),
                                          cores.lay, cores.v_cols)


SYGVD = Op(name="eigh_generalized", row="sygvd", shape="square", operands="AB",
           options=Options, outputs=eigen_outputs, rule=_rule,
           attrs=lambda opts, m, n: {"jobz": int(opts.jobz)}, end_pad="identity",
           status=status_of, empty_ok=True)


def eigh_generalized(A, B, T_A, mesh=None, in_specs=None, return_eigenvectors=True,
                     return_status=False, pad=True, dispatch="auto", *, matrix_specs=None,
                     donate=False):
    """Solves A x = lambda B x for Hermitian A and Hermitian positive
    definite B (scipy.linalg.eigh(a, b)).

    A and B: (N, N), one dtype; B is moved to A's layout. Both are read by
    their upper triangles. Returns (w, V): eigenvalues ascending (real
    dtype, replicated) and eigenvectors as columns in A's layout, with
    A V = B V diag(w) and V^H B V = I; w alone with
    return_eigenvectors=False; status appended with return_status: 0;
    k in 1..N: B's leading minor of order k is not positive definite
    (LAPACK's info N + k); > N: the eigensolver did not converge; -1:
    non-finite input (w and V are NaN whenever status != 0). The one-node
    engines gather A and B on one device (the host leader, or the first GPU
    of the axis), so T_A and pad change nothing there and dispatch='multi'
    is refused; cuSOLVERMp (dispatch='mp', or a solve group across nodes)
    solves the pencil distributed, in tiles of T_A. The rest as for syevd.
    """
    want = v.flag(return_status, "return_status")
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    *outs, status = forms.mesh_call(SYGVD, opts, A, B, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                    matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                    donate=donate)
    return forms.pick(outs, status, want)


# The LAPACK and cuSOLVER name, which clients porting code look for.
sygvd = eigh_generalized


def _inside(a, b, T_A, return_eigenvectors=True, pad=True, axis_name=None, dispatch="auto", *,
            v_layout="cols"):
    """a, b: this device's row shards of A and B, (N / P, N) each. Returns
    (w, V, status), or (w, status) without eigenvectors: w (N,) ascending,
    replicated; V this device's block of the eigenvector matrix
    (eigenvectors in columns, V^H B V = I): v_layout="cols" (default, as
    syevd_shardmap_ctx): (N, N / P), out_specs P(None, ax); "rows":
    (N / P, N), out_specs P(ax, None). status (1,) as for
    eigh_generalized. Differentiable in a and b (w; V for distinct
    eigenvalues)."""
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    return forms.shard_call(SYGVD, opts, Statics(T_A, pad, axis_name, dispatch, v_layout=v_layout),
                            a, b)


def _outside(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None,
             return_eigenvectors=True, pad=True, dispatch="auto", donate=False):
    """A and B global, any layout, no shard_map around: returns (a_work,
    b_work, w, V, status) or (a_work, b_work, w, status); a_work and b_work
    are A and B in the engines' row layout (their values), V in A's
    layout, status a scalar."""
    opts = Options(v.flag(return_eigenvectors, "return_eigenvectors"))
    return forms.mesh_call(SYGVD, opts, a, b, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                           works=2)


eigh_generalized_shardmap_ctx = forms.two_forms(_inside, _outside,
                                                "eigh_generalized_shardmap_ctx")
