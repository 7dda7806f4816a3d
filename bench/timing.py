"""The one timing rule of the benchmarks: a warm-up call (compilation and
first-touch allocations), then the median of `reps` timed calls, each
waited for on the devices."""

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
