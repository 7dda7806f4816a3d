"""The one engine decision: which engine runs a call.

Four engines sit behind every op: the host engine ("host": LAPACK on CPU
devices), cuSOLVER on the group's first GPU after a gather ("single"),
cuSolverMg over every GPU of one node ("mg") and cuSOLVERMp over any set of
GPUs on its own NCCL communicators ("mp"). `decide(problem)` alone chooses
among them; every other module asks it, and a forced `dispatch=` that cannot
run is a ValueError raised here, before anything is traced.

`dispatch` is "auto" or a forced engine: "single", "multi" (cuSolverMg, the
name the public API has always used; "mg" is accepted too), "mp", "host",
"local" (the algorithm jnp / jax.scipy run on one device, on the gathered
matrix: engines/local.py) or "composed" (composed from jaxmg's own
distributed ops, never gathering A: jaxmg/composed/; tall A, M and N
multiples of the device count), for the ops whose declaration has that
route (Problem.routes). A declaration also names the engines that cannot
run a given call (Problem.unable: cuSOLVERMp's thin-only SVD).
On CPU devices the host engine is the only one: a forced one-node GPU engine
there is accepted (where it has the op) and has no effect, as it always had.

The automatic choice, in order:
  1. CPU devices: host.
  2. A solve group whose devices sit on several nodes: mp, the only engine
     that solves across nodes (a ValueError where it is not installed).
  3. One GPU, or a matrix whose gather does not fit one GPU's memory share:
     single, resp. the multi-GPU engine that has the op.
  4. Otherwise single up to the op's measured crossover N (CROSSOVERS), then
     cuSolverMg where it has the op, else cuSOLVERMp at mesh level, else
     (a matrix too large for one GPU) the composed route where the op has
     one, else single.
  5. Where that gives the one-device engine (single, host) at mesh level and
     another route measured faster (WINS: the one-device JAX algorithm, or
     cuSOLVERMp on a 1 x 1 grid), that route.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from ..engines import library as _library
from ..engines import multiproc as _multiproc

ENGINES = ("host", "single", "mg", "mp", "local", "composed")

# The public ops; the factor ops of potrs's derivative (chol_*) decide as potrs.
OPS = ("potrs", "potri", "syevd", "lu_solve", "least_squares", "qr", "gesvd", "polar", "sygvd")

# Which C engine has which op (cuSolverMg has no sygvd). The Python
# routes, "local" and "composed", are the op declaration's (Problem.routes).
ENGINE_OPS = {
    "host": frozenset(OPS),
    "single": frozenset(OPS),
    "mg": frozenset({"potrs", "potri", "syevd", "lu_solve"}),
    "mp": frozenset(OPS),
}

# What callers may pass as dispatch=, and the engine each forces.
FORCED = {"single": "single", "multi": "mg", "mg": "mg", "mp": "mp", "host": "host",
          "local": "local", "composed": "composed"}
ACCEPTED = ("auto",) + tuple(FORCED)


@dataclasses.dataclass(frozen=True)
class Crossover:
    """The largest N that one GPU (after a gather) solves faster than the
    multi-GPU engine when the solve group has several GPUs; None where one
    GPU won at every N measured. `measured` names the measurement."""

    single_max_n: int | None
    measured: str


CROSSOVERS = {
    "potrs": Crossover(16384, "4 x H200, f64, 1 rhs (bench/README.md): one GPU 45 ms vs "
                              "cuSolverMg 50 ms at N = 16384; 0.29 s vs 0.19 s at 32768"),
    "potri": Crossover(None, "4 x H200, f64 (bench/README.md): one GPU faster at every N "
                             "measured, up to 32768 (1.72 s vs cuSolverMg 1.83 s)"),
    "syevd": Crossover(24576, "4 x H200, f64 (bench/README.md): one GPU 3.2 s vs cuSolverMg "
                              "6.0 s at N = 16384; 22.6 s vs 21.8 s at 32768"),
    "lu_solve": Crossover(16384, "not measured on several GPUs yet: potrs's, the closest "
                                 "factorisation"),
}

@dataclasses.dataclass(frozen=True)
class Win:
    """Where another route beat the engine the rules above pick on one
    device (single on GPUs, host on CPUs): `engine` ("local": the
    algorithm jnp / jax.scipy run on the gathered matrix, engines/local.py;
    "mp": cuSOLVERMp on a 1 x 1 grid, so for one-device groups only, where
    it is installed), for N in [min_n, max_n] (None: no bound), as
    `measured` found."""

    engine: str
    min_n: int | None
    max_n: int | None
    measured: str


# Per (platform, op), the wins in order of preference: the first whose
# engine can run the call is taken.
WINS = {
    ("gpu", "polar"): (Win("local", None, None, "1 H100, f64, N = 8192 (bench/results/"
                           "one_gpu_sweep.md): QDWH 0.83 s vs cuSOLVERMp 2.77 s, cuSOLVER's "
                           "gesvd-based 14.7 s"),),
    ("gpu", "gesvd"): (Win("mp", None, None, "1 H100, f64 (bench/results/one_gpu_sweep.md): "
                           "cuSOLVERMp 1 x 1 3.45 s vs jnp.linalg.svd 14.7 s, cuSOLVER 14.7 s "
                           "at N = 8192; 18.9 s vs jnp 87.8 s at N = 16384"),
                       # From N = 4096 only: at N = 1024 in f32 jnp's SVD on the GPU failed
                       # the sweep's residual check (cuSOLVER's gesvd passed).
                       Win("local", 4096, None, "1 H200, f64, N = 8192 (bench/results/"
                           "one_gpu.md): jnp.linalg.svd 9.7 s vs cuSOLVER gesvd 13.4 s; 1 H100 "
                           "(one_gpu_sweep.md): valid at N = 4096 (f32, f64), not at 1024 f32")),
    ("gpu", "qr"): (Win("local", None, None, "1 H100, f64, N = 8192 (bench/results/"
                        "one_gpu_sweep.md): jnp.linalg.qr 0.103 s vs cuSOLVERMp 0.111 s, "
                        "cuSOLVER 0.134 s"),),
}


# One GPU must hold the gathered matrix (and the op's outputs) next to
# everything else the program keeps: at most this share of its memory.
SINGLE_MEMORY_SHARE = 0.5

# N x N matrices the one-GPU route holds at once, per op (default 1).
_SINGLE_MATRICES = {"potri": 2, "qr": 2, "gesvd": 3, "polar": 3, "sygvd": 2}


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything the decision depends on."""

    op: str
    dtype: object
    n: int                          # the matrix's larger dimension
    nparties: int                   # devices of one solve group
    platform: str                   # "cpu" or "gpu"
    dispatch: str = "auto"
    axes: tuple = ()                # the solve axes (for messages)
    across_nodes: tuple = ()        # the nodes of a solve group that spans several
    mesh_level: bool = True         # False inside the caller's shard_map
    mp_available: bool = False      # libjaxmg_mp.so is installed
    device_bytes: int | None = None  # one device's memory (None: unknown)
    routes: frozenset = frozenset()  # the op's own routes: "local", "composed"
    unable: tuple = ()              # (engine, why) pairs: engines that cannot run this call


def has(p: Problem, engine: str) -> bool:
    """Whether engine has p's op and can run this call of it."""
    return (p.op in ENGINE_OPS.get(engine, ()) or engine in p.routes) and \
        engine not in dict(p.unable)


def check(dispatch) -> str:
    """dispatch itself, if it is one of ACCEPTED."""
    if not isinstance(dispatch, str) or dispatch not in ACCEPTED:
        raise ValueError(f"jaxmg: dispatch must be one of {', '.join(map(repr, ACCEPTED))}, "
                         f"got {dispatch!r}")
    return dispatch


def single_bytes(op: str, n: int, dtype) -> int:
    """Bytes the one-GPU route gathers on the group's first device."""
    return _SINGLE_MATRICES.get(op, 1) * n * n * np.dtype(dtype).itemsize


def _fits_one_gpu(p: Problem) -> bool:
    return p.device_bytes is None or \
        single_bytes(p.op, p.n, p.dtype) <= SINGLE_MEMORY_SHARE * p.device_bytes


def _forced(p: Problem, engine: str) -> str:
    def refuse(why):
        raise ValueError(f"jaxmg: dispatch={p.dispatch!r} cannot run this {p.op}: {why}")

    if engine in ("local", "composed") and not p.mesh_level:  # its routes are unknown there
        refuse(f"the {engine} route runs mesh-level calls, not inside the caller's shard_map")
    if engine in dict(p.unable):
        refuse(dict(p.unable)[engine])
    if not has(p, engine):
        name = {"mg": "the multi-GPU engine (cuSolverMg)"}.get(engine, f"the {engine} engine")
        refuse(f"{name} has no {p.op}; use dispatch='auto'")
    if engine in ("local", "composed"):
        return engine
    if engine == "mp":
        if p.platform != "gpu":
            refuse(f"the cuSOLVERMp engine runs on GPUs only; this mesh is on {p.platform!r} "
                   "(use dispatch='auto')")
        if not p.mesh_level:
            refuse("the cuSOLVERMp engine runs mesh-level calls (jaxmg.potrs(A, b, T_A, mesh, "
                   "...)), not inside the caller's shard_map")
        if not p.mp_available:
            refuse("the cuSOLVERMp engine is not available in this installation (pip install "
                   "nvidia-cusolvermp-cu13, then rebuild jaxmg)")
        return "mp"
    if p.platform != "gpu":
        return _host(p)  # the only CPU engine: a GPU engine's name changes nothing there
    if engine == "host":
        refuse("the host engine runs on CPU devices only")
    if p.across_nodes:
        refuse("its devices span several nodes, which only the cuSOLVERMp engine ('mp') "
               "solves across")
    return engine


def _host(p: Problem) -> str:
    """The host engine, which meets its parties in one node's shared memory."""
    if p.across_nodes:
        axis = p.axes[0] if len(p.axes) == 1 else p.axes
        raise ValueError(
            f"jaxmg: the solve axis {axis!r} spans devices on {len(p.across_nodes)} hosts "
            f"({', '.join(p.across_nodes)}); jaxmg solves within one node on CPU devices. Use a "
            "2-D mesh (\"S\", \"T\") with \"S\" across nodes and \"T\" within a node, and "
            "shard A as P(\"T\", None): each node then solves its own copy.")
    return "host"


def decide(p: Problem) -> str:
    """The engine that runs problem p: "host", "single", "mg", "mp" or
    "local"."""
    engine = _engine(p)
    if p.dispatch == "auto" and p.mesh_level and engine in ("host", "single"):
        for win in WINS.get((p.platform, p.op), ()):
            if (win.min_n is None or p.n >= win.min_n) and \
                    (win.max_n is None or p.n <= win.max_n) and _can_win(p, win.engine):
                return win.engine
    return engine


def _can_win(p: Problem, engine: str) -> bool:
    """Whether a WINS engine can run p as it was measured."""
    if engine == "mp":
        return p.mp_available and p.nparties == 1 and has(p, "mp")
    return has(p, engine)


def _engine(p: Problem) -> str:
    """decide's choice among jaxmg's own engines."""
    if p.op not in OPS:
        raise ValueError(f"jaxmg: no engine decision for op {p.op!r}")
    if check(p.dispatch) != "auto":
        return _forced(p, FORCED[p.dispatch])
    if p.platform != "gpu":
        return _host(p)
    if p.across_nodes:
        if not has(p, "mp"):
            why = dict(p.unable).get("mp", f"it has no {p.op} yet")
            raise ValueError(
                f"jaxmg: this {p.op}'s solve group spans several nodes, which only the "
                f"cuSOLVERMp engine solves across: {why}")
        if not (p.mp_available and p.mesh_level):
            raise ValueError(
                f"jaxmg: this {p.op}'s solve group spans several nodes, which needs the "
                "cuSOLVERMp engine at mesh level (pip install nvidia-cusolvermp-cu13); it is "
                "not available here")
        return "mp"
    fits = _fits_one_gpu(p)
    if p.nparties == 1 and fits:
        return "single"
    limit = CROSSOVERS.get(p.op, Crossover(None, "")).single_max_n
    if fits and (limit is None or p.n <= limit):
        return "single"
    if has(p, "mg"):
        return "mg"
    if p.mesh_level and p.mp_available and has(p, "mp"):
        return "mp"
    if not fits and p.mesh_level and has(p, "composed"):
        return "composed"
    return "single"


# ---------------------------------------------------------------------------
# the facts of a call: at mesh level from its mesh, per shard from the trace


def _device_bytes() -> int | None:
    """The memory of this process's first device (None where the backend
    keeps no statistics): what the one-GPU route must fit in."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # a backend without memory statistics
        return None
    return stats.get("bytes_limit")


def for_mesh(op: str, mesh, axes, dispatch: str, n: int, dtype, routes=frozenset(),
             unable=()) -> str:
    """The engine of a mesh-level call: A's larger dimension n, solved over
    `axes` of `mesh` (a Mesh, an AbstractMesh, or anything with axis_names,
    shape and a devices array); routes and unable: Problem's."""
    axes = tuple(axes)
    platform = _library.mesh_platform(mesh)
    concrete = getattr(mesh, "devices", None) is not None
    gpu = platform == "gpu"
    sizes = dict(mesh.shape)
    engine = decide(Problem(
        op=op, dtype=dtype, n=n, nparties=math.prod(sizes[a] for a in axes), platform=platform,
        dispatch=check(dispatch), axes=axes,
        across_nodes=_multiproc.group_nodes(mesh, axes) if concrete else (),
        mesh_level=True, mp_available=gpu and _library.has_library("jaxmg_mp"),
        device_bytes=_device_bytes() if gpu else None, routes=frozenset(routes),
        unable=tuple(sorted(dict(unable).items()))))
    if engine == "mp" and not concrete:
        raise ValueError(
            "jaxmg: the cuSOLVERMp engine needs a concrete Mesh (pass mesh=..., or call inside "
            "jax.set_mesh(mesh)); got an AbstractMesh")
    return engine


def for_shard(op: str, dtype, n: int, nparties: int, axes, dispatch: str) -> str:
    """The engine of a call traced inside a shard_map (the caller's, or the
    one a mesh-level call built, which passes its engine as dispatch)."""
    platform = _library.current_platform()
    gpu = platform == "gpu"
    return decide(Problem(
        op=op, dtype=dtype, n=n, nparties=nparties, platform=platform, dispatch=check(dispatch),
        axes=tuple(axes), across_nodes=_multiproc.traced_group_nodes(tuple(axes)),
        mesh_level=False, device_bytes=_device_bytes() if gpu else None))


# The engine code the C core reads (csrc/engines/engine.h, jmg_dispatch):
# the host engine has one path and ignores it.
_C_CODES = {"host": 0, "mg": 1, "single": 2}


def c_code(engine: str) -> int:
    """The `dispatch` attribute of the FFI call for a one-node engine."""
    return _C_CODES[engine]
