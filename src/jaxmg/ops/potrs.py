"""potrs: A x = b for symmetric / Hermitian positive definite A (Cholesky),
optionally with log det A."""

from __future__ import annotations

import dataclasses

from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import REPLICATED, SOLUTION, NoOptions, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import hermitian
from . import cholesky
from .potri import POTRI


@dataclasses.dataclass(frozen=True)
class Options:
    logdet: bool = False  # also log det A (real), NaN where status != 0


def _outputs(opts):
    return outputs(("x", SOLUTION)) + (outputs(("logdet", REPLICATED)) if opts.logdet else ())


def _rule(op, opts, cores):
    """Solves differentiate through sym(A) with one factorization
    (rules/hermitian.py: potrs, potrs_logdet; the factor ops: cholesky.py)."""
    core = cores(op, opts)

    def f(A, b):
        fac = cholesky.factored(op, cores, A.shape)
        if opts.logdet:
            return hermitian.potrs_logdet(core, cores(POTRI, NoOptions()), cores.lay, fac)(A, b)
        return hermitian.potrs(core, cores.lay, fac)(A, b)

    return f


POTRS = Op(name="potrs", row="potrs", shape="square", operands="Ab", options=Options,
           outputs=_outputs, rule=_rule, empty_ok=True)


def potrs(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
          *, matrix_specs=None, return_logdet=False, donate=False):
    """Solves A x = b for symmetric/Hermitian positive definite A.

    A (N, N) in any layout (see pipeline/request.py); b (N,) or (N, K) in
    any layout. Returns x in b's shape and layout; with return_logdet also
    log det A (real, replicated); with return_status the int32 status last
    (0, or the order of the first leading minor that is not positive
    definite, -1 for non-finite input; x and logdet are then NaN). mesh,
    in_specs / matrix_specs: any form of docs/coming-from-jaxmg.md, or
    None (inferred). donate=True lets the engine work in A's and b's
    buffers (they are deleted). T_A: the tile (None: automatic); pad: pad
    shards to whole tiles; dispatch: "auto", "multi" or "single" (GPUs).
    """
    want = v.flag(return_status, "return_status")
    opts = Options(v.flag(return_logdet, "return_logdet"))
    *outs, status = forms.mesh_call(POTRS, opts, A, b, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                     matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                     donate=donate)
    return forms.pick(outs, status, want)


def _inside(a, b, T_A, pad=True, axis_name=None, dispatch="auto", *, return_logdet=False):
    """a: this device's row shard of A, (N / devices, N); b: (N, K) or (N,),
    replicated. Returns (x, status) or, with return_logdet, (x, logdet,
    status): x replicated like b, logdet (1,), status int32 (1,) (0;
    k > 0: leading minor k not positive definite; -1: non-finite input; x
    is then NaN). axis_name: the solve axis (or tuple), by default every
    manual axis of the shard_map."""
    opts = Options(v.flag(return_logdet, "return_logdet"))
    return forms.shard_call(POTRS, opts, Statics(T_A, pad, axis_name, dispatch), a, b)


def _outside(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None, return_logdet=False,
             pad=True, dispatch="auto", donate=False):
    """A and b global, any layout, no shard_map around: returns (a_work, x,
    status) or (a_work, x, logdet, status); a_work is A in the engines' row
    layout (its values), x in b's layout, status a scalar. Runs inline
    under the caller's jit (donate A there), else through a cached jit."""
    opts = Options(v.flag(return_logdet, "return_logdet"))
    return forms.mesh_call(POTRS, opts, a, b, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                           works=1)


potrs_shardmap_ctx = forms.two_forms(_inside, _outside, "potrs_shardmap_ctx")

