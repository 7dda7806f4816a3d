"""gesvd: the singular value decomposition A = U diag(s) Vh of A (M, N)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ..composed import svd_polar
from ..engines import local
from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import REPLICATED, ROWS, Op, outputs, tall_only
from ..pipeline.per_shard import Statics
from ..rules import general


@dataclasses.dataclass(frozen=True)
class Options:
    compute_u: bool = True
    compute_vh: bool = True
    full_matrices: bool = False


# The reduced SVD with both factors, which every derivative goes through.
REDUCED = Options()


def options(compute_u, compute_vh, full_matrices) -> Options:
    return Options(v.flag(compute_u, "compute_u"), v.flag(compute_vh, "compute_vh"),
                   v.flag(full_matrices, "full_matrices"))


def _attrs(opts, m, n):
    k = min(m, n)
    return {"ucols": (m if opts.full_matrices else k) if opts.compute_u else 0,
            "vrows": (n if opts.full_matrices else k) if opts.compute_vh else 0}


def _rule(op, opts, cores):
    """The reduced SVD's rule; the one-sided and full_matrices forms
    differentiate through the reduced SVD (full matrices only where they
    are the reduced ones: rules/general.check_full_matrices); singular
    values alone through it too. Outputs not computed are (M, 0) / (0, N)."""
    core, lay = cores(op, opts), cores.lay
    cu, cv, full = opts.compute_u, opts.compute_vh, opts.full_matrices
    if cu and cv and not full:
        return general.gesvd(core, lay)
    usv = cores(op, REDUCED)
    if cu or cv:
        return general.svd_parts(core, usv, lay, cu, cv, full)
    values = general.singular_values(lambda A: core(A)[1::2], usv, lay)

    def f(A):
        s, status = values(A)
        return jnp.zeros((A.shape[0], 0), A.dtype), s, jnp.zeros((0, A.shape[1]), A.dtype), status

    return f


def _unable(opts, m, n):
    """cuSOLVERMp's gesvd and the composed route: the thin SVD of a tall or
    square A only."""
    if opts.full_matrices and opts.compute_u and m > n:
        return dict.fromkeys(("mp", "composed"),
                             "it computes the thin SVD only (full_matrices=False, or m == n)")
    return tall_only(m, n)


def _composed(opts, A, mesh, axes):
    """The reduced SVD from the composed polar decomposition."""
    m, n = A.shape
    u, s, vh, status = svd_polar(A, mesh, axes)
    return ((u if opts.compute_u else jnp.zeros((m, 0), A.dtype)), s,
            (vh if opts.compute_vh else jnp.zeros((0, n), A.dtype)), status)


GESVD = Op(name="gesvd", row="gesvd", shape="any", operands="A", options=Options,
           outputs=lambda opts: outputs(("u", ROWS), ("s", REPLICATED), ("vh", REPLICATED)),
           rule=_rule, attrs=_attrs,
           one_device=lambda opts, A: (local.svd(A, opts.compute_u, opts.compute_vh,
                                                 opts.full_matrices), 0),
           composed=_composed, unable=_unable)


def _returned(u, s, vh, opts):
    return ((u,) if opts.compute_u else ()) + (s,) + ((vh,) if opts.compute_vh else ())


def gesvd(A, T_A, mesh=None, in_specs=None, compute_u=True, compute_vh=True,
          full_matrices=False, return_status=False, pad=True, dispatch="auto", *,
          matrix_specs=None, donate=False):
    """Singular value decomposition A = U diag(s) Vh of A (M, N), any shape.

    s: min(M, N) singular values, descending, real dtype, replicated. U
    (M, K) in A's layout and Vh (K, N) replicated, K = min(M, N); with
    full_matrices U is (M, M) and Vh (N, N). Returns (U, s, Vh), (U, s)
    without compute_vh, (s, Vh) without compute_u, s without either; status
    appended with return_status (0; > 0 if the solver did not converge, -1
    for non-finite input; the outputs are then NaN)."""
    want = v.flag(return_status, "return_status")
    opts = options(compute_u, compute_vh, full_matrices)
    u, s, vh, status = forms.mesh_call(GESVD, opts, A, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                       matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                       donate=donate)
    return forms.pick(_returned(u, s, vh, opts), status, want)


def _inside(a, T_A, compute_u=True, compute_vh=True, full_matrices=False, pad=True,
            axis_name=None, dispatch="auto"):
    """Returns (U rows of this device, s, Vh, status (1,)), U and Vh left
    out when not computed; shapes as for gesvd. Differentiable as gesvd."""
    opts = options(compute_u, compute_vh, full_matrices)
    u, s, vh, status = forms.shard_call(GESVD, opts, Statics(T_A, pad, axis_name, dispatch), a)
    return _returned(u, s, vh, opts) + (status,)


def _outside(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, compute_u=True,
             compute_vh=True, full_matrices=False, pad=True, dispatch="auto", donate=False):
    """A global: returns (a_work, U, s, Vh, status), less what is not computed."""
    opts = options(compute_u, compute_vh, full_matrices)
    a_work, u, s, vh, status = forms.mesh_call(
        GESVD, opts, a, T_A=T_A, mesh=mesh, in_specs=in_specs, matrix_specs=matrix_specs,
        pad=pad, dispatch=dispatch, donate=donate, works=1)
    return (a_work,) + _returned(u, s, vh, opts) + (status,)


gesvd_shardmap_ctx = forms.two_forms(_inside, _outside, "gesvd_shardmap_ctx")
