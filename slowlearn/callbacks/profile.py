"""Where the time goes: ProfilerCB splits training time by loop step; find_batch_size measures throughput."""
from __future__ import annotations

import resource
import sys
from functools import wraps

import torch

from ..callback import Callback
from ..device import model_device, sync_time
from ..display import format_table

__all__ = ["ProfilerCB"]

PHASES = ("data", "forward", "loss", "backward", "step", "callbacks")


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return kb / (2**20 if sys.platform == "darwin" else 2**10)


class ProfilerCB(Callback):
    """Splits training wall time into data loading, forward, loss, backward, optimizer step (with
    zero_grad) and the other callbacks, and measures samples/s and peak memory.

    On a GPU it synchronises the device at every boundary, which is what makes the split honest and
    also why it slows training down: use it to look, not while measuring speed. Only training
    batches are profiled. `report()` prints a table and returns the numbers as a dict.
    """

    order = -100  # first in every event: its marks bracket everyone else's work

    def before_fit(self, learn) -> None:
        self.times = dict.fromkeys(PHASES, 0.)
        self.samples, self.batches, self._cb_time = 0, 0, 0.
        self.device = model_device(learn.model)
        learn.dispatch.wrap(self._timed, skip=[self])  # time every other callback
        self._last = None

    def _sync(self) -> float:
        return sync_time(self.device)

    def _timed(self, method):
        @wraps(method)
        def timed(learn):
            start = self._sync()
            try:
                method(learn)
            finally:
                self._cb_time += self._sync() - start
        return timed

    def _mark(self, phase: str | None) -> None:
        now = self._sync()
        if phase is not None and self._last is not None:
            self.times[phase] += now - self._last - self._cb_time
            self.times["callbacks"] += self._cb_time
        self._cb_time, self._last = 0., now

    def before_epoch(self, learn) -> None:
        self._last = self._sync() if learn.training else None
        self._cb_time = 0.

    def before_batch(self, learn) -> None:
        if learn.training:
            self._mark("data")

    def after_predict(self, learn) -> None:
        if learn.training:
            self._mark("forward")

    def after_loss(self, learn) -> None:
        if learn.training:
            self._mark("loss")

    def after_backward(self, learn) -> None:
        self._mark("backward")

    def after_step(self, learn) -> None:
        self._mark("step")

    def after_batch(self, learn) -> None:
        if learn.training:
            self._mark("step")  # zero_grad, or the rest of a batch whose step was skipped
            self.samples += len(learn.batch[1])
            self.batches += 1

    def report(self, print_table: bool = True) -> dict:
        """Seconds per phase, their share, ms per batch, samples/s and peak memory (MB)."""
        total = sum(self.times.values())
        rows = [{"phase": phase, "seconds": round(t, 4), "share": f"{100 * t / total:.1f} %" if total else "-",
                 "ms/batch": round(1e3 * t / max(self.batches, 1), 3)} for phase, t in self.times.items()]
        result = {"times": dict(self.times), "total": total, "batches": self.batches,
                  "samples_per_s": self.samples / total if total else 0.,
                  "peak_memory_mb": _peak_memory_mb(self.device)}
        if print_table:
            memory = "GPU" if self.device.type == "cuda" else "process RSS"
            print(format_table(rows))
            print(f"{result['samples_per_s']:,.0f} samples/s over {self.batches} training batches; "
                  f"peak memory {result['peak_memory_mb']:,.0f} MB ({memory})")
        return result






