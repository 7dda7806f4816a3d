"""least_squares: min ||A x - b||_2 for A (M, N), M >= N, of full column rank."""

from __future__ import annotations

import jax.numpy as jnp

from ..composed import least_squares as composed_lstsq
from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import SOLUTION, NoOptions, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import general


def _rule(op, opts, cores):
    return general.least_squares(cores(op, opts), cores.lay)


LEAST_SQUARES = Op(name="least_squares", row="least_squares", shape="tall", operands="Ab",
                   outputs=lambda opts: outputs(("x", SOLUTION)), rule=_rule,
                   composed=lambda opts, A, mesh, axes, b:
                   composed_lstsq.lstsq_cholesky(A, b, mesh, axes))


def least_squares(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True,
                  dispatch="auto", *, matrix_specs=None, donate=False):
    """The least-squares solution of A x = b: min ||A x - b||_2 for A
    (M, N) with M >= N and full column rank.

    b (M,) or (M, K). Returns x, (N,) or (N, K), in b's layout where it
    fits (else replicated); with return_status (x, status): 0, k > 0 when
    R(k, k) is exactly zero (A has not full column rank; x is NaN), -1 for
    non-finite input. Any M and N: A is padded internally. T_A is
    validated. The host and one-GPU engines gather A onto one device;
    cuSOLVERMp and the composed route (dispatch="composed": CholeskyQR,
    then R^-1 Q^H b; M and N multiples of the device count) never do."""
    want = v.flag(return_status, "return_status")
    x, status = forms.mesh_call(LEAST_SQUARES, NoOptions(), A, b, T_A=T_A, mesh=mesh,
                                in_specs=in_specs, matrix_specs=matrix_specs, pad=pad,
                                dispatch=dispatch, donate=donate)
    return forms.pick((x,), status, want)


def _inside(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """a: this device's row shard of A (M / devices, N), M >= N; b (M,) or
    (M, K) replicated. Returns (x, status): x (N,) or (N, K) replicated,
    status (1,) as for least_squares. pad is unused: any M works.
    Differentiable in a and b."""
    return forms.shard_call(LEAST_SQUARES, NoOptions(), Statics(T_A, pad, axis_name, dispatch),
                            a, b)


def _outside(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
             dispatch="auto", donate=False):
    """A and b global: returns (a_work, b_work, x, status); b_work is b
    with x in its first N rows, as JAXMg 1.4.1's (the rows below are b's
    own, not LAPACK's residual components)."""
    a_work, x, status = forms.mesh_call(LEAST_SQUARES, NoOptions(), a, b, T_A=T_A, mesh=mesh,
                                        in_specs=in_specs, matrix_specs=matrix_specs, pad=pad,
                                        dispatch=dispatch, donate=donate, works=1)
    return a_work, jnp.asarray(b).at[: x.shape[0]].set(x), x, status


least_squares_shardmap_ctx = forms.two_forms(_inside, _outside, "least_squares_shardmap_ctx")
