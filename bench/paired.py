"""Paired timing for the benches that compare us with a peer on this shared machine.

The functions take turns call by call, so a change of load hits all of them alike, and a
peer's time is divided by ours from the same turn.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` turns in which each runs once, in
    the dict's order. Warm up (compile) before calling this."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_summary(peer_times: list[float], our_times: list[float], digits: int = 3) -> dict:
    """Median, min and max of the per-turn ratios ``peer / ours`` (> 1: we are faster)."""
    ratios = [p / o for p, o in zip(peer_times, our_times, strict=True)]
    return {
        "median": round(statistics.median(ratios), digits),
        "min": round(min(ratios), digits),
        "max": round(max(ratios), digits),
        "turns": len(ratios),
    }
