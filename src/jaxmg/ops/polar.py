"""polar: the polar decomposition A = Up H of A (M, N)."""

from __future__ import annotations

import dataclasses

from ..composed import qdwh
from ..engines import local
from ..pipeline import forms
from ..pipeline import validate as v
from ..pipeline.declare import REPLICATED, ROWS, Op, outputs, tall_only
from ..pipeline.per_shard import Statics
from ..rules import general
from .gesvd import GESVD, REDUCED


@dataclasses.dataclass(frozen=True)
class Options:
    compute_h: bool = True


def _rule(op, opts, cores):
    """Tall or wide A of full rank; U, s, Vh for the derivative from one
    reduced SVD."""
    return general.polar(cores(op, opts), cores.lay, cores(GESVD, REDUCED))


POLAR = Op(name="polar", row="polar", shape="any", operands="A", options=Options,
           outputs=lambda opts: outputs(("a", ROWS), ("h", REPLICATED)), rule=_rule,
           attrs=lambda opts, m, n: {"hrows": n if opts.compute_h else 0},
           one_device=lambda opts, A: (local.polar(A, opts.compute_h), 0),
           composed=lambda opts, A, mesh, axes: qdwh.polar_qdwh(A, mesh, axes,
                                                                compute_h=opts.compute_h),
           unable=lambda opts, m, n: tall_only(m, n))


def polar(A, T_A, mesh=None, in_specs=None, compute_h=True, return_status=False, pad=True,
          dispatch="auto", *, matrix_specs=None, donate=False):
    """Polar decomposition A = Up H of A (M, N): Up (M, N) with orthonormal
    columns (rows if M < N), in A's layout; H = (A^H A)^(1/2) (N, N),
    Hermitian positive semidefinite, replicated. Returns (Up, H), or Up
    without compute_h; status appended with return_status (0; > 0 if the
    algorithm did not converge; -1 for non-finite input)."""
    want = v.flag(return_status, "return_status")
    opts = Options(v.flag(compute_h, "compute_h"))
    up, h, status = forms.mesh_call(POLAR, opts, A, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                    matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                    donate=donate)
    return forms.pick((up, h) if opts.compute_h else (up,), status, want)


def _inside(a, T_A, compute_h=True, pad=True, axis_name=None, dispatch="auto"):
    """Returns (Up rows of this device, H, status (1,)), or (Up rows,
    status) without compute_h. Differentiable (A of full rank)."""
    opts = Options(v.flag(compute_h, "compute_h"))
    up, h, status = forms.shard_call(POLAR, opts, Statics(T_A, pad, axis_name, dispatch), a)
    return (up, h, status) if opts.compute_h else (up, status)


def _outside(a, T_A, mesh=None, matrix_specs=None, *, in_specs=None, compute_h=True, pad=True,
             dispatch="auto", donate=False):
    """A global: returns (Up, H, status), or (Up, status): no a_work, as
    JAXMg 1.4.1's (and as qr's)."""
    opts = Options(v.flag(compute_h, "compute_h"))
    up, h, status = forms.mesh_call(POLAR, opts, a, T_A=T_A, mesh=mesh, in_specs=in_specs,
                                    matrix_specs=matrix_specs, pad=pad, dispatch=dispatch,
                                    donate=donate)
    return (up, h, status) if opts.compute_h else (up, status)


polar_shardmap_ctx = forms.two_forms(_inside, _outside, "polar_shardmap_ctx")
