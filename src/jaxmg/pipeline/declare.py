"""What an op declares: the one description the pipeline runs it from.

Each module of jaxmg/ops/ declares its op once, as an `Op`:

  - its row of the C op table (csrc/ops/op_table.c): the FFI call's
    buffers, their shapes and layouts, and which engines see A^T, are data
    there, read by pipeline/ffi.py;
  - its shape rule (square, tall or any A) and its operands: A alone, A and
    a right-hand side b (replicated for the engines; x comes back in b's
    layout), or A and a second matrix B laid out as A;
  - its options, a frozen dataclass with typed fields and their defaults
    (one instance per call, hashable: part of the jit cache key);
  - its outputs for given options: which results of the row, each with the
    layout it comes back in, status always last;
  - the row's attributes for given options (`attrs`);
  - its derivative and batching rule, by reference to jaxmg/rules/;
  - where it has one, the algorithm jnp / jax.scipy run on one device
    (`one_device`), which the engine decision may choose instead of an
    engine (engines/local.py runs it), and the route composed from jaxmg's
    own distributed ops that never gathers A (`composed`, jaxmg/composed/).

Everything else (checks, the engine decision, moving A into the engines'
layout and back, padding, the FFI call, the non-finite guard, the status)
is the pipeline's, written once for every op: pipeline/mesh.py (global
arrays) and pipeline/per_shard.py (one device's shard).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

# Where an output comes back, at mesh level (per shard in parentheses):
#   SOLUTION  b's shape and layout; x's rows the op's solution rows
#             (replicated, like b)
#   MATRIX    A's layout, N x N (this device's rows)
#   ROWS      A's layout, A's rows (this device's rows)
#   EIGVECS   as MATRIX; per shard in the caller's v_layout: this
#             device's rows, or its columns
#   REPLICATED on every device (the same)
#   ENGINE    the engine's buffer as it left the call (rows, unpadded
#             nowhere): a factor, or the buffer a donated A aliases
SOLUTION, MATRIX, ROWS, EIGVECS, REPLICATED, ENGINE = (
    "solution", "matrix", "rows", "eigvecs", "replicated", "engine")

# The operands an op takes after A.
A_ONLY, WITH_RHS, WITH_TWIN = "A", "Ab", "AB"


@dataclasses.dataclass(frozen=True)
class Out:
    """One output: the row's result `name` and where it comes back."""

    name: str
    layout: str


def outputs(*pairs) -> tuple[Out, ...]:
    """Out("x", SOLUTION), ... from ("x", SOLUTION), ... pairs."""
    return tuple(Out(name, layout) for name, layout in pairs)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of an op that has none."""


def no_attrs(opts, m: int, n: int) -> dict:
    return {}


def no_limits(opts, m: int, n: int) -> dict:
    return {}


def tall_only(m: int, n: int) -> dict:
    """Op.unable's entries for a wide A (M < N) on the routes that factor a
    tall or square A only: cuSOLVERMp's gesvd and polar, and the composed
    routes."""
    if m >= n:
        return {}
    return dict.fromkeys(("mp", "composed"), f"it takes A with at least as many rows as columns "
                                             f"(A is {m} x {n}: pass A^H)")


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    """One op, declared (see the module docstring). Identity is the
    object: every op has exactly one."""

    name: str                   # the public name, in messages
    row: str                    # its row of the C op table
    shape: str                  # "square", "tall" (M >= N) or "any"
    operands: str               # A_ONLY, WITH_RHS or WITH_TWIN
    outputs: Callable           # outputs(opts) -> tuple[Out, ...], status not listed
    rule: Callable              # rule(op, opts, cores, lay) -> differentiable core (rules/)
    options: type = NoOptions
    attrs: Callable = no_attrs  # attrs(opts, m, n) -> the row's attributes
    max_tile: int | None = None  # the largest tile cuSolverMg takes for it
    end_pad: str = "rows"       # N up to a multiple of the devices: "rows" zero rows after A;
                                # "identity" an identity block, the engine told N (nvalid)
    status: Callable | None = None  # status(engine status, order) -> jaxmg's status
    one_device: Callable | None = None  # one_device(opts, A, *rest) -> (outputs, failure:
                                        # 0 or the op's status) (engines/local.py)
    composed: Callable | None = None  # composed(opts, A, mesh, axes, *rest) -> (outputs...,
                                      # status): the route from jaxmg's own distributed ops
                                      # (composed/); rest: b as the caller gave it
    empty_ok: bool = False      # N = 0 gives empty outputs (else a ValueError)
    transposed_for: tuple = ()  # engines that must see A itself, not the A^T every engine
                                # reads (cuSolverMg's getrs has no transpose): they get A^T
    unable: Callable = no_limits  # unable(opts, m, n) -> {engine: why} for the engines
                                  # that cannot run this call (the decision skips them)

    def __hash__(self):
        return id(self)

    @property
    def routes(self) -> frozenset:
        """The routes of the Python layer this op has: "local" (a one-device
        algorithm), "composed" (a route from jaxmg's own ops)."""
        return frozenset(name for name, fn in (("local", self.one_device),
                                               ("composed", self.composed)) if fn is not None)

    @property
    def decides_as(self) -> str:
        """The op's name in the engine decision (pipeline/decide.py)."""
        return self.row

    def check_options(self, opts):
        if not isinstance(opts, self.options):
            raise TypeError(f"jaxmg: {self.name} takes {self.options.__name__}, got "
                            f"{type(opts).__name__}")
        return opts
