"""potri: the inverse of a symmetric / Hermitian positive definite A."""

from __future__ import annotations

import jax.numpy as jnp

from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import MATRIX, NoOptions, Op, outputs
from ..pipeline.per_shard import Statics
from ..rules import hermitian


def _rule(op, opts, cores):
    return hermitian.potri(cores(op, opts), cores.lay)


POTRI = Op(name="potri", row="potri", shape="square", operands="A", empty_ok=True,
           outputs=lambda opts: outputs(("a", MATRIX)), rule=_rule)


def potri(A, T_A, mesh=None, in_specs=None, return_status=False, pad=True, dispatch="auto",
          *, matrix_specs=None, donate=False):
    """Inverse of a symmetric/Hermitian positive definite A (both triangles),
    in A's layout (replicated when that layout cannot hold N). With
    return_status, (A^-1, status) as for potrs; the rest as for potrs."""
    want = v.flag(return_status, "return_status")
    inv, status = forms.mesh_call(POTRI, NoOptions(), A, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                  matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                  donate=donate)
    return forms.pick((inv,), status, want)


def _inside(a, T_A, pad=True, axis_name=None, dispatch="auto"):
    """Returns (this device's rows of A^-1, both triangles, (N / P, N);
    status (1,) as for potrs)."""
    return forms.shard_call(POTRI, NoOptions(), Statics(T_A, pad, axis_name, dispatch), a)


def _outside(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, pad=True, dispatch="auto",
             donate=False):
    """A global: returns (a_work, A^-1 in A's layout, status)."""
    return forms.mesh_call(POTRI, NoOptions(), a, T_A=T_A, mesh=mesh, in_specs=in_specs,
                           matrix_specs=matrix_specs, pad=pad, dispatch=dispatch, donate=donate,
                           works=1)


potri_shardmap_ctx = forms.two_forms(_inside, _outside, "potri_shardmap_ctx")


def potri_symmetrize(a_inv):
    """The full Hermitian inverse from potri's output, whether that holds
    the upper triangle only (JAXMg 0.0.9's potri_shardmap_ctx) or both
    (jaxmg's): upper triangle plus the conjugate transpose of its strictly
    upper part. Reads only the upper triangle, so applying it twice is
    harmless. Works on global arrays (any sharding) and under jit."""
    a_inv = jnp.asarray(a_inv)
    if a_inv.ndim != 2 or a_inv.shape[0] != a_inv.shape[1]:
        raise ValueError(f"jaxmg: potri_symmetrize takes a square matrix, got shape {a_inv.shape}")
    upper = jnp.triu(a_inv)
    return upper + jnp.conj(jnp.triu(a_inv, 1)).T
