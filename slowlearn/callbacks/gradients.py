"""Gradient callbacks: clipping the global norm, accumulating gradients over several batches, and multiplying
some parameters' gradients (a larger SGD learning rate for them)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..arguments import check_range
from ..callback import Callback, CancelStepException
from ..device import DeviceFloats, drop_gradients

__all__ = ["GradientClipCB", "GradientAccumulationCB", "GradientMultiplierCB", "batchnorm_shifts",
           "steps_after_this_batch"]


def steps_after_this_batch(learn) -> bool:
    """Whether the optimizer steps after the current training batch: at the end of each group of
    `learn.accumulate` micro-batches of an epoch, and after the epoch's last batch."""
    return (learn.iter + 1) % learn.accumulate == 0 or learn.iter == learn.n_iter - 1


class GradientAccumulationCB(Callback):
    """Steps the optimizer every `n_steps` batches, on the average of their gradients, so that 4
    batches of 128 give the update of one batch of 512 (exactly, for a model without BatchNorm).

    The last, partial accumulation of an epoch is stepped too (averaged over its own batches); a batch
    that a callback cancelled before its backward pass is left out of its group's average. A group that a
    cancel or an error cuts short (CancelEpochException, an interrupted fit) is dropped: its gradients do
    not carry into the next epoch's or fit's first step. Schedulers stepped in `after_step` advance once
    per optimizer step. `n_steps` is shared as `learn.accumulate` during the fit (DistributedCB
    synchronises gradients only before a step).
    """

    order = -1  # before GradientClipCB, which must see the averaged gradients
    sweep = True

    def __init__(self, n_steps: int):
        check_range("n_steps", n_steps, 1, integer=True, owner="GradientAccumulationCB")
        self.n_steps = n_steps
        self._accumulated = 0  # backward passes since the last step: the gradients p.grad holds the sum of

    def before_fit(self, learn) -> None:
        learn.accumulate = self.n_steps
        self._accumulated = 0

    def cleanup_epoch(self, learn) -> None:
        if learn.training and self._accumulated:  # a cancel or an error cut the group short: drop its gradients
            drop_gradients(learn.model)
            self._accumulated = 0

    def cleanup_fit(self, learn) -> None:
        learn.accumulate = 1

    def after_backward(self, learn) -> None:
        self._accumulated += 1
        if not steps_after_this_batch(learn):
            raise CancelStepException()
        count, self._accumulated = self._accumulated, 0  # micro-batches in this group (fewer in an epoch's last one)
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


def batchnorm_shifts(model: nn.Module) -> list[nn.Parameter]:
    """The trainable shifts (biases) of the model's BatchNorm layers."""
    return [m.bias for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None and m.bias.requires_grad]


class GradientMultiplierCB(Callback):
    """Multiplies the gradients of `params(model)` (default: the BatchNorm shifts) by `factor` before each
    optimizer step. With SGD, momentum or not, that is a `factor` times larger learning rate for those
    parameters while their weight decay stays as it was: for a parameter p with gradient g,

        p <- p - lr * (factor * g + wd * p)

    airbench's `bias_scaler` (64 for the BatchNorm shifts of a net whose BatchNorm scales are frozen). Adam-like
    optimizers divide each gradient by its own running size, so a constant factor would change nothing there: they
    get a warning. The gradients are multiplied once per optimizer step (after GradientAccumulationCB's last
    micro-batch) and before GradientClipCB measures them.
    """

    order = -1  # before GradientClipCB (0); GradientAccumulationCB (-1) divides, which commutes with this

    def __init__(self, factor: float, params: Callable[[nn.Module], Iterable[nn.Parameter]] = batchnorm_shifts):
        check_range("factor", factor, 0., low_open=True, owner="GradientMultiplierCB")
        self.factor, self.params = factor, params

    def before_fit(self, learn) -> None:
        self._chosen = list(self.params(learn.model))
        if not self._chosen:
            warnings.warn(f"GradientMultiplierCB: {getattr(self.params, '__name__', self.params)} found no "
                          f"trainable parameters in the model: nothing to multiply", stacklevel=2)
        if any("betas" in group for group in learn.opt.param_groups):
            warnings.warn(f"GradientMultiplierCB({self.factor}) with {type(learn.opt).__name__}: an Adam-like "
                          f"optimizer normalises each gradient by its running size, so multiplying gradients changes "
                          f"nothing; use it with SGD, or give those parameters their own lr (a param group)",
                          stacklevel=2)

    def after_backward(self, learn) -> None:
        if not steps_after_this_batch(learn):
            return
        grads = [p.grad for p in self._chosen if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, self.factor)
