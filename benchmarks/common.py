"""Helpers shared by the benchmarks: timing with interleaved repeats on a noisy machine, and FLOP counting
against the machine's measured matmul peak."""
from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from slowlearn import Callback, default_device
from slowlearn.distributed import rank0_print


def timed(setup: Callable[[], Callable[[], object]], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds taken by the function that `setup()` returns (the set-up itself is not timed), on `clock`:
    wall time by default; `time.thread_time` counts only this thread's CPU time, which leaves out the time
    other processes hold the core (right for one-thread work on a shared machine, wrong for anything that
    waits or works in other threads)."""
    run = setup()
    start = clock()
    run()
    return clock() - start


def interleaved(candidates: dict[str, Callable[[], Callable[[], object]]], repeats: int,
                clock: Callable[[], float] = time.perf_counter, shuffle: bool = False) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, round-robin, so machine noise hits all of them alike (`clock`: see
    `timed`); `shuffle` runs each round in a new random order (seeded), so that no candidate always runs right
    after the same other one. Each runs once first, untimed, to warm up allocators and caches."""
    for setup in candidates.values():
        setup()()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    rng = random.Random(0)
    for _ in range(repeats):
        for name in rng.sample(list(candidates), len(candidates)) if shuffle else candidates:
            times[name].append(timed(candidates[name], clock))
    return times


def paired_ratio(times: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """How much longer than `baseline` the runs in `times` take, from each run's ratio to the baseline run of
    the same round (a machine whose speed drifts moves both alike): the median ratio - 1, and its bootstrap
    95 % interval."""
    ratios = [t / b - 1 for t, b in zip(times, baseline)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), medians[50], medians[1949]


def matmul_peak(dtype: torch.dtype, device: torch.device | str | None = None, seconds: float = 1.0,
                n: int | None = None) -> float:
    """FLOP/s of repeated n x n matmuls in `dtype` on `device` (default: the default device): the practical
    peak of this machine in that precision (n: 2048 on a CPU, 8192 on a GPU). On CUDA fp32 matmuls run in
    full fp32 unless TF32 was allowed (`torch.backends.cuda.matmul.allow_tf32`, off by default)."""
    device = torch.device(device) if device is not None else default_device()
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1 if device.type == "cpu" else 10):  # a GPU queues them: sync once per 10
            a @ b
            count += 1
        sync()
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def step_flops(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float]:
    """FLOPs of one training step (forward and backward) and of one evaluation forward pass on `xb`,
    counted by torch.utils.flop_counter on a copy of `model` (its weights, statistics and gradients stay
    as they are). The count is the same whatever the precision the step runs in."""
    model = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(xb), yb).backward()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as evaluate:
        model(xb)
    return train.get_total_flops(), evaluate.get_total_flops()


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
