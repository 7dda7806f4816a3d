"""qr: the reduced QR decomposition A = Q R of A (M, N), M >= N."""

from __future__ import annotations

import jax.numpy as jnp

from ..composed import cholesky_qr
from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import REPLICATED, ROWS, NoOptions, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import general


def _rule(op, opts, cores):
    return general.qr(cores(op, opts), cores.lay)


def _one_device(opts, A):
    return tuple(jnp.linalg.qr(A, mode="reduced")), 0


QR = Op(name="qr", row="qr", shape="tall", operands="A",
        outputs=lambda opts: outputs(("a", ROWS), ("r", REPLICATED)), rule=_rule,
        one_device=_one_device,
        composed=lambda opts, A, mesh, axes: cholesky_qr.qr_cholesky(A, mesh, axes))


def qr(A, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto", *,
       matrix_specs=None, donate=False):
    """Reduced QR A = Q R of A (M, N), M >= N: Q (M, N) with orthonormal
    columns, in A's layout; R (N, N) upper triangular, replicated.
    Returns (Q, R), or (Q, R, status) with return_status (0; -1 for
    non-finite input)."""
    want = v.flag(return_status, "return_status")
    q, r, status = forms.mesh_call(QR, NoOptions(), A, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                   matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                   donate=donate)
    return forms.pick((q, r), status, want)


def _inside(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Returns (this device's rows of Q, R (N, N) replicated, status (1,)).
    Differentiable."""
    return forms.shard_call(QR, NoOptions(), Statics(T_A, pad, axis_name, dispatch), a)


def _outside(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True, dispatch="auto",
             donate=False):
    """A global: returns (Q in A's layout, R, status)."""
    return forms.mesh_call(QR, NoOptions(), a, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate)


qr_shardmap_ctx = forms.two_forms(_inside, _outside, "qr_shardmap_ctx")
