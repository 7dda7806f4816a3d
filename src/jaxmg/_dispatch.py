"""Which solver runs an op on GPUs, and the automatic tile size.

Two solvers sit behind every op on GPUs: cuSolverMg over all devices of
the solve axis ("multi"), or cuSOLVER on the axis's first device after a
gather ("single"; the results are scattered back). One GPU wins until the
matrix is large enough for cuSolverMg's per-call overheads and its
block-cyclic move to pay off, and it is the only right inverse beyond 2048
columns that does not go panel by panel (see bench/README.md for the
measured crossovers on 4 x H200). `dispatch="auto"` picks by these
measurements; "multi" and "single" force one. The host (CPU) engine has a
single path and ignores the choice.
"""

from __future__ import annotations

import jax
import numpy as np

AUTO, MULTI, SINGLE = 0, 1, 2
_CODES = {"auto": AUTO, "multi": MULTI, "single": SINGLE}

# Largest N for which one GPU is faster than cuSolverMg on 4 H200 (f64:
# potrs 45 ms against 50 at 16384, 0.29 s against 0.19 at 32768; syevd
# 3.2 s against 6.0 at 16384, 22.6 against 21.8 at 32768). potri has no
# crossover: one GPU was faster at every N measured, up to 32768.
# lu_solve is not measured yet (bench/bench.py --ops lu_solve times it):
# until then it takes potrs's crossover, the closest factorisation.
SINGLE_MAX_N = {"potrs": 16384, "potri": None, "syevd": 24576, "lu_solve": 16384}

# The ops with a cuSolverMg solver; the others (least_squares, qr, gesvd,
# polar) run on one GPU after a gather until the cuSOLVERMp engine runs
# them distributed.
MULTI_OPS = frozenset(SINGLE_MAX_N)

# One GPU must hold the gathered matrix (potri: and the inverse) next to
# everything else the program keeps; use at most this share of its memory.
SINGLE_MEMORY_SHARE = 0.5

# The automatic tile: a width near this one that pads least (potrs at
# N = 32768 on 4 H200: 256 is 2.5x and 512 1.2x slower than 1024, 2048 3%
# faster; potrf at 65536: 2048 6% slower).
TILE_TARGET = 1024
TILE_MIN, TILE_MAX = 256, 2048


# "mp" (issue 17, H17): the cuSOLVERMp engine, forced; mesh-level calls on
# GPUs only (_mp_route takes them before any engine code is chosen here).
ACCEPTED = ("auto", "multi", "single", "mp")


def check(dispatch) -> str:
    if not isinstance(dispatch, str) or dispatch not in ACCEPTED:
        raise ValueError(
            f"jaxmg: dispatch must be 'auto', 'multi', 'single' or 'mp', got {dispatch!r}"
        )
    return dispatch


def engine_of(dispatch: str) -> str:
    """dispatch in _grid.choose_engine's names ("multi" is cuSolverMg, "mg")."""
    return {"multi": "mg"}.get(check(dispatch), dispatch)


def _device_memory() -> int | None:
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # a backend without memory statistics
        return None
    return stats.get("bytes_limit")


# n x n matrices the one-GPU path holds on the first device, per op (the
# general ops: the gathered matrix and their outputs, at their largest).
_SINGLE_MATRICES = {"potri": 2, "qr": 2, "gesvd": 3, "polar": 3, "least_squares": 1}


def single_bytes(op: str, n: int, dtype) -> int:
    """Bytes the one-GPU path gathers on the first device (its cuSOLVER
    workspace comes on top: at most a few n x 32 panels)."""
    return _SINGLE_MATRICES.get(op, 1) * n * n * np.dtype(dtype).itemsize


def resolve(dispatch: str, op: str, n: int, nparties: int, dtype, platform: str) -> int:
    """The solver code passed to the engine, for a padded n x n problem."""
    if check(dispatch) == "mp":  # reached only where _mp_route does not run
        raise ValueError(
            "jaxmg: dispatch='mp' (the cuSOLVERMp engine) runs mesh-level calls on GPUs only "
            "(jaxmg.potrs(A, b, T_A, mesh, ...)), not inside the caller's shard_map"
        )
    code = _CODES[dispatch]
    if code != AUTO or platform != "gpu":
        return code
    if op not in MULTI_OPS:
        return SINGLE
    limit = _device_memory()
    fits = limit is None or single_bytes(op, n, dtype) <= SINGLE_MEMORY_SHARE * limit
    if not fits:
        return MULTI
    if nparties == 1:
        return SINGLE
    cap = SINGLE_MAX_N[op]
    return SINGLE if cap is None or n <= cap else MULTI


def auto_tile(nloc: int, max_tile: int | None = None) -> int:
    """The tile for T_A=None, given the shard height nloc: the whole shard
    when it is no taller than the target; else the width in [TILE_MIN,
    TILE_MAX] (capped by max_tile) that pads the shard least (a divisor of
    nloc pads nothing), the nearest to the target among those."""
    hi = min(TILE_MAX, max_tile) if max_tile else TILE_MAX
    target = min(TILE_TARGET, hi)
    if nloc <= target:
        return nloc
    return min(range(TILE_MIN, hi + 1), key=lambda t: (-(-nloc // t) * t, abs(t - target), -t))
