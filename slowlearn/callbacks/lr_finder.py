"""The learning-rate finder: an exponential lr sweep that leaves the Learner exactly as it found it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..callback import Callback, CancelFitException
from ..display import finished, subplots
from ..distributed import all_reduce_mean
from ..groups import geometric

__all__ = ["LRFinderCB", "SuggestedLRs"]


class SuggestedLRs(NamedTuple):
    """Learning rates suggested by the sweep: `valley` (the default choice) and `steep`."""
    valley: float
    steep: float


class LRFinderCB(Callback):
    """Raises the lr geometrically from `start_lr` to `end_lr` over `num_it` training batches.

    Records the loss of each batch (one host sync per batch: the sweep must see divergence) and
    its exponentially smoothed value; stops at `num_it`, at a NaN/inf loss, or, with `stop_div`,
    when the smoothed loss exceeds 4 x its minimum. In a distributed run the loss is the mean over the
    ranks, so every rank stops at the same batch and suggests the same lr. In a fit with validation (LRFinderCB
    used on its own; `lr_find` sweeps without), validation batches are left out of the sweep.
    """

    order = 90
    sets_lr = True

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100, stop_div: bool = True,
                 beta: float = 0.98):
        if not 0 < start_lr < end_lr:
            raise ValueError(f"lr_find needs 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
        if num_it < 2:
            raise ValueError(f"lr_find needs num_it >= 2, got {num_it}")
        self.start_lr, self.end_lr, self.num_it, self.stop_div, self.beta = start_lr, end_lr, num_it, stop_div, beta

    def before_fit(self, learn) -> None:
        self.lrs, self.losses, self.smooth_losses = [], [], []
        self._avg, self._best = 0., math.inf

    def before_batch(self, learn) -> None:
        if not learn.training:
            return
        lr = geometric(self.start_lr, self.end_lr, len(self.lrs) / (self.num_it - 1))
        for group in learn.opt.param_groups:
            group["lr"] = lr
        self.lrs.append(lr)

    def after_batch(self, learn) -> None:
        if not learn.training:
            return
        loss = all_reduce_mean(learn.loss.detach().float().reshape(1).clone()).item()  # the same on every rank
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (len(self.losses) + 1))
        self.losses.append(loss)
        self.smooth_losses.append(smooth)
        if not math.isfinite(smooth) or (self.stop_div and smooth > 4 * self._best):
            raise CancelFitException()
        self._best = min(self._best, smooth)
        if len(self.lrs) >= self.num_it:
            raise CancelFitException()

    def suggest(self) -> SuggestedLRs:
        """Both from the descent, found by the longest run of ever-lower smoothed losses (which may
        step over bumps, so noise is not mistaken for progress): `valley` is the lr halfway through
        it (fastai's default suggestion), `steep` where inside it the smoothed loss falls fastest per
        unit of log lr."""
        losses = np.array([l for l in self.smooth_losses if math.isfinite(l)])
        lrs = np.array(self.lrs[:len(losses)])
        if len(losses) < 3:
            raise RuntimeError(f"lr_find saw only {len(losses)} batches before stopping: lower start_lr or "
                               f"give it more batches")
        start, end = _descent(losses)
        valley = lrs[(start + end) // 2]
        slopes = np.gradient(losses[start:end + 1], np.log(lrs[start:end + 1])) if end > start else np.zeros(1)
        steep = lrs[start + int(slopes.argmin())]
        return SuggestedLRs(valley=float(valley), steep=float(steep))

    def plot(self, suggestion: SuggestedLRs | None = None, path: str | Path | None = None):
        """Loss against lr on a log axis, with the suggestions marked (a Figure, saved as PNG at `path`)."""
        fig, ax = subplots(figsize=(7.5, 3.5))
        n = len(self.losses)
        ax.plot(self.lrs[:n], self.losses, alpha=0.3, label="loss")
        ax.plot(self.lrs[:n], self.smooth_losses, label="smoothed loss")
        suggestion = suggestion or self.suggest()
        for (name, lr), marker in zip(suggestion._asdict().items(), ("o", "^")):
            ax.plot(lr, np.interp(np.log(lr), np.log(self.lrs[:n]), self.smooth_losses), marker, ms=8,
                    label=f"{name}: {lr:.2e}")
        low, start = min(self.smooth_losses), self.smooth_losses[0]
        if start > low:  # keep the divergence at the end from flattening the rest
            ax.set_ylim(low - 0.1 * (start - low), start + 0.5 * (start - low))
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="LR finder")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # beside the curve, not on it
        return finished(fig, path)


def _descent(losses: np.ndarray) -> tuple[int, int]:
    """Where the loss comes down: the longest strictly decreasing subsequence of `losses` ends at
    `end`; the stretch is that many steps back from there. (Counting back, rather than from the
    subsequence's first element, ignores the lucky low points of a flat, noisy start.)"""
    length = [1] * len(losses)
    for i in range(len(losses)):
        for j in range(i):
            if losses[j] > losses[i]:
                length[i] = max(length[i], length[j] + 1)
    end = int(np.argmax(length))
    return end - length[end] + 1, end








