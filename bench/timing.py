"""The one timing rule of the benchmarks: a warm-up call (compilation and
first-touch allocations), then the median of `reps` timed calls, each
waited for on the devices.

One exception, for calls that take tens of seconds (an SVD at N = 16384 on
one GPU): `first_or_median` compiles ahead of time, so that the first call
holds no compilation, and takes that call alone as the measurement when it
ran for `slow_s` or longer; a second or third call of that length would
cost more device time than the spread it removes."""

import math
import statistics
import time

import jax


def median_time(fn, *args, reps):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_or_median(fn, *args, reps, slow_s=math.inf):
    """(seconds, "first" or "median", the last call's outputs) of a jitted
    fn: the first call after compiling if it took slow_s or longer, else
    the median of `reps` calls after it (the first is then the warm-up).
    A fn that cannot be compiled ahead (no `lower`) compiles in its first
    call, which is then never the measurement."""
    if hasattr(fn, "lower"):
        call = fn.lower(*args).compile()
    else:
        jax.block_until_ready(fn(*args))
        call, slow_s = fn, math.inf
    t0 = time.perf_counter()
    out = jax.block_until_ready(call(*args))
    first = time.perf_counter() - t0
    if first >= slow_s:
        return first, "first", out
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(call(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), "median", out
