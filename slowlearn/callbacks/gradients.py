"""Gradient callbacks: clipping the global norm, and accumulating gradients over several batches."""
from __future__ import annotations

import torch

from ..learner import Callback, CancelStepException
from .core import DeviceFloats

__all__ = ["GradientClipCB", "GradientAccumulationCB"]


def _scaler(learn):
    """The fp16 GradScaler of a MixedPrecisionCB on the learner, if any."""
    return getattr(getattr(learn, "mixed_precision", None), "scaler", None)


class GradientAccumulationCB(Callback):
    """Steps the optimizer every `n_steps` batches, on the average of their gradients, so that 4
    batches of 128 give the update of one batch of 512 (exactly, for a model without BatchNorm).

    The last, partial accumulation of an epoch is stepped too (averaged over its own batches).
    Schedulers stepped in `after_step` advance once per optimizer step.
    """

    order = -1  # before GradientClipCB, which must see the averaged gradients

    def __init__(self, n_steps: int):
        if n_steps < 1:
            raise ValueError(f"GradientAccumulationCB needs n_steps >= 1, got {n_steps}")
        self.n_steps, self.count = n_steps, 0

    def before_epoch(self, learn) -> None:
        self.count = 0

    def after_backward(self, learn) -> None:
        self.count += 1
        if self.count < self.n_steps and learn.iter < learn.n_iter - 1:
            raise CancelStepException()
        grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
        if self.count > 1 and grads:
            torch._foreach_div_(grads, self.count)
        self.count = 0


class GradientClipCB(Callback):
    """Clips the global gradient norm to `max_norm` before each step (un-scaling first under fp16
    loss scaling). `norms` holds the pre-clip norm of every step, read in bulk."""

    def __init__(self, max_norm: float = 1., norm_type: float = 2.):
        self.max_norm, self.norm_type = max_norm, norm_type
        self._norms = DeviceFloats()

    @property
    def norms(self) -> list[float]:
        return self._norms.read()

    def before_fit(self, learn) -> None:
        self._norms = DeviceFloats()

    def after_backward(self, learn) -> None:
        scaler = _scaler(learn)
        if scaler is not None:
            scaler.unscale_(learn.opt)
        norm = torch.nn.utils.clip_grad_norm_(learn.model.parameters(), self.max_norm, self.norm_type)
        self._norms.append(norm)
