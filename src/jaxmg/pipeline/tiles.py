"""The automatic tile size (T_A=None).

Which engine runs a call is decided elsewhere, in one place (pipeline/decide.py).
"""

from __future__ import annotations

# The automatic tile: a width near this one that pads least (potrs at
# N = 32768 on 4 H200: 256 is 2.5x and 512 1.2x slower than 1024, 2048 3%
# faster; potrf at 65536: 2048 6% slower).
TILE_TARGET = 1024
TILE_MIN, TILE_MAX = 256, 2048


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
