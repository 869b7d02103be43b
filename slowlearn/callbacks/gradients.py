"""Gradient callbacks: clipping the global norm, and accumulating gradients over several batches."""
from __future__ import annotations

import torch

from ..arguments import check_range
from ..callback import Callback, CancelStepException
from .core import DeviceFloats

__all__ = ["GradientClipCB", "GradientAccumulationCB", "steps_after_this_batch"]


def steps_after_this_batch(learn) -> bool:
    """Whether the optimizer steps after the current training batch: at the end of each group of
    `learn.accumulate` micro-batches of an epoch, and after the epoch's last batch."""
    return (learn.iter + 1) % learn.accumulate == 0 or learn.iter == learn.n_iter - 1


class GradientAccumulationCB(Callback):
    """Steps the optimizer every `n_steps` batches, on the average of their gradients, so that 4
    batches of 128 give the update of one batch of 512 (exactly, for a model without BatchNorm).

    The last, partial accumulation of an epoch is stepped too (averaged over its own batches).
    Schedulers stepped in `after_step` advance once per optimizer step. `n_steps` is shared as
    `learn.accumulate` during the fit (DistributedCB synchronises gradients only before a step).
    """

    order = -1  # before GradientClipCB, which must see the averaged gradients
    sweep = True

    def __init__(self, n_steps: int):
        check_range("n_steps", n_steps, 1, integer=True, owner="GradientAccumulationCB")
        self.n_steps = n_steps

    def before_fit(self, learn) -> None:
        learn.accumulate = self.n_steps

    def cleanup_fit(self, learn) -> None:
        learn.accumulate = 1

    def after_backward(self, learn) -> None:
        if not steps_after_this_batch(learn):
            raise CancelStepException()
        count = learn.iter % self.n_steps + 1  # micro-batches in this group (fewer in an epoch's last one)
        grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
        if count > 1 and grads:
            torch._foreach_div_(grads, count)


class GradientClipCB(Callback):
    """Clips the global gradient norm to `max_norm` before each step (un-scaling first under fp16
    loss scaling). `norms` holds the pre-clip norm of every step, read in bulk."""

    sweep = True

    def __init__(self, max_norm: float = 1., norm_type: float = 2.):
        # a max_norm < 0 would flip the gradients (gradient ascent), 0 would zero them
        check_range("max_norm", max_norm, 0., low_open=True, owner="GradientClipCB")
        if norm_type != float("inf"):
            check_range("norm_type", norm_type, 0., low_open=True, owner="GradientClipCB")
        self.max_norm, self.norm_type = max_norm, norm_type
        self._norms = DeviceFloats()

    @property
    def norms(self) -> list[float]:
        return self._norms.read()

    def before_fit(self, learn) -> None:
        self._norms = DeviceFloats()

    def after_backward(self, learn) -> None:
        if learn.grad_scaler is not None:
            learn.grad_scaler.unscale_(learn.opt)
        norm = torch.nn.utils.clip_grad_norm_(learn.model.parameters(), self.max_norm, self.norm_type)
        self._norms.append(norm)
