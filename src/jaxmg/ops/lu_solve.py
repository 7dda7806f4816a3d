"""lu_solve: A x = b for a general square A (LU with partial pivoting)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import SOLUTION, NoOptions, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import hermitian

# cuSolverMg's getrf/getrs take tiles of at most 512 columns; every
# platform uses the same limit so that all of them solve the same padded
# problem (as syevd's 1024).
MAX_TILE = 512


def _rule(op, opts, cores):
    """dx = A^-1 (db - dA x); the transposed solve by the same core on A^T."""
    return hermitian.linear_solve(cores(op, opts), cores.lay)


def _one_device(opts, A, b):
    """jax.scipy's LU on one device (getrf, getrs); the status as the
    engines': k where U(k, k) is exactly zero."""
    lu, piv = jax.scipy.linalg.lu_factor(A)
    zero = jnp.diagonal(lu) == 0
    k = jnp.where(jnp.any(zero), jnp.argmax(zero) + 1, 0)
    return (jax.scipy.linalg.lu_solve((lu, piv), b),), k


# Every engine reads A^T and transposes it after the meeting, except
# cuSolverMg, whose getrs has no transpose: it is handed A^T's rows.
LU_SOLVE = Op(name="lu_solve", row="lu_solve", shape="square", operands="Ab",
              outputs=lambda opts: outputs(("x", SOLUTION)), rule=_rule, max_tile=MAX_TILE,
              transposed_for=("mg",), one_device=_one_device)


def lu_solve(A, b, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
             *, matrix_specs=None, donate=False):
    """Solves A x = b for a general square A (LU with partial pivoting).

    A (N, N) and b ((N,) or (N, K)) in any layout, mesh and specs in any
    form of potrs (or None: inferred). Returns x in b's shape and layout;
    with return_status (x, status): 0, k > 0 when U(k, k) is exactly zero
    (A singular; x is NaN), -1 for non-finite input. T_A, pad and dispatch
    as for potrs ("multi": cuSolverMg getrf/getrs on every GPU of the
    axis); the tile is capped at 512 (cuSolverMg's limit) on every
    platform."""
    want = v.flag(return_status, "return_status")
    x, status = forms.mesh_call(LU_SOLVE, NoOptions(), A, b, T_A=T_A, mesh=mesh,
                                in_specs=in_specs, matrix_specs=matrix_specs, pad=pad,
                                dispatch=dispatch, donate=donate)
    return forms.pick((x,), status, want)


def _inside(a, b, T_A, pad=True, axis_name=None, dispatch="auto"):
    """a: this device's row shard of A, (N / devices, N); b (N,) or (N, K),
    replicated. Returns (x, status): x replicated like b, status (1,) as
    for lu_solve. Differentiable in a and b."""
    return forms.shard_call(LU_SOLVE, NoOptions(), Statics(T_A, pad, axis_name, dispatch), a, b)


def _outside(a, b, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True,
             dispatch="auto", donate=False):
    """A and b global: returns (a_work, x, status); a_work is A in the
    engines' rows, x in b's layout, status a scalar."""
    return forms.mesh_call(LU_SOLVE, NoOptions(), a, b, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                           works=1)


lu_solve_shardmap_ctx = forms.two_forms(_inside, _outside, "lu_solve_shardmap_ctx")
