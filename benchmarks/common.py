"""Helpers shared by the benchmarks: timing with interleaved repeats on a noisy machine."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from slowlearn import Callback
from slowlearn.distributed import rank0_print


def timed(setup: Callable[[], Callable[[], object]]) -> float:
    """Seconds taken by the function that `setup()` returns (the set-up itself is not timed)."""
    run = setup()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], Callable[[], object]]], repeats: int) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, round-robin, so machine noise hits all of them alike.
    Each runs once first, untimed, to warm up allocators and caches."""
    for setup in candidates.values():
        setup()()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, setup in candidates.items():
            times[name].append(timed(setup))
    return times


def report(times: dict[str, list[float]], baseline: str, unit: str = "s") -> None:
    base = statistics.median(times[baseline])
    print(f"{'':24} {'median':>10} {'min':>10} {'ratio (median)':>15} {'ratio (min)':>12}")
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(f"{name:24} {med:>9.3f}{unit} {low:>9.3f}{unit} {med / base:>15.3f} {low / min(times[baseline]):>12.3f}")


class EpochTimer(Callback):
    """Prints each epoch's wall time (training and validation) and validation accuracy, on rank 0."""

    order = 100

    def before_epoch(self, learn):
        if learn.training:
            self.start = time.perf_counter()

    def after_epoch(self, learn):
        if not learn.training:
            rank0_print(f"EPOCH {learn.epoch} {time.perf_counter() - self.start:.3f} s "
                        f"accuracy {learn.history[-1]['accuracy']:.4f}", flush=True)
