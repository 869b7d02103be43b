"""MixedPrecisionCB: autocast to bf16 or fp16, with loss scaling for fp16."""
from __future__ import annotations

import torch

from ..callback import Callback
from ..device import model_device

__all__ = ["MixedPrecisionCB"]

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class MixedPrecisionCB(Callback):
    """Runs the forward pass and loss under `torch.autocast` in `dtype` ("bf16" or "fp16") on the
    batch's device type (CPU bf16 works too).

    For fp16 a `torch.amp.GradScaler` scales the loss before `backward` and unscales before the step,
    which it skips when gradients overflowed; `skipped_steps` counts those (read without a host sync
    per step). The scaler is shared as `learn.grad_scaler` during the fit, for callbacks that must
    unscale gradients before looking at them (GradientClipCB). Replaces the Learner's `backward` and `step`.
    """

    order = -5  # after DeviceCB has moved the batch, before callbacks that look at predictions
    sweep = True

    def __init__(self, dtype: str = "bf16"):
        if dtype not in DTYPES:
            raise ValueError(f"MixedPrecisionCB dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.dtype = DTYPES[dtype]
        self.scaler: torch.amp.GradScaler | None = None
        self._autocast = None

    def before_fit(self, learn) -> None:
        self._skipped = None
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(model_device(learn.model).type)
            learn.grad_scaler = self.scaler

    def before_batch(self, learn) -> None:
        self._autocast = torch.autocast(learn.batch[0].device.type, dtype=self.dtype)
        self._autocast.__enter__()

    def after_loss(self, learn) -> None:
        self._exit_autocast()

    def cleanup_batch(self, learn) -> None:
        self._exit_autocast()

    def cleanup_fit(self, learn) -> None:
        learn.grad_scaler = None

    def _exit_autocast(self) -> None:
        if self._autocast is not None:
            self._autocast.__exit__(None, None, None)
            self._autocast = None

    def backward(self, learn) -> None:
        loss = learn.loss if self.scaler is None else self.scaler.scale(learn.loss)
        loss.backward()

    def step(self, learn) -> None:
        if self.scaler is None:
            learn.opt.step()
            return
        before = self.scaler._scale.clone()  # the scale tensor itself: get_scale() would sync every step
        self.scaler.step(learn.opt)
        self.scaler.update()
        skipped = (self.scaler._scale < before).int()  # the scale backs off exactly when a step was skipped
        self._skipped = skipped if self._skipped is None else self._skipped + skipped

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped because of inf/NaN gradients (fp16 only)."""
        return int(self._skipped) if getattr(self, "_skipped", None) is not None else 0
