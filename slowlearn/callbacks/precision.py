"""MixedPrecisionCB: autocast to bf16 or fp16, with loss scaling for fp16; `speed_cbs`: the precision
and layout callbacks that the hardware at hand runs fastest."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..callback import Callback, defaults_not_given
from ..device import default_device, model_device
from ..hardware import speed_settings
from .core import ChannelsLastCB

__all__ = ["MixedPrecisionCB", "speed_cbs"]

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class MixedPrecisionCB(Callback):
    """Runs the forward pass and loss under `torch.autocast` in `dtype` ("bf16" or "fp16") on the
    batch's device type (CPU bf16 works too).

    For fp16 a `torch.amp.GradScaler` scales the loss before `backward` and unscales before the step,
    which it skips when gradients overflowed; `skipped_steps` counts those (read without a host sync
    per step). Checkpoints hold the scale, its growth tracker and `skipped_steps`: a resumed run goes on
    with them. The scaler is shared as `learn.grad_scaler` during the fit, for callbacks that must
    unscale gradients before looking at them (GradientClipCB). Replaces the Learner's `backward` and `step`.
    """

    order = -5  # after DeviceCB has moved the batch, before callbacks that look at predictions
    sweep = True
    state_per_fit = True  # each fit creates its loss scaler

    def __init__(self, dtype: str = "bf16"):
        if dtype not in DTYPES:
            raise ValueError(f"MixedPrecisionCB dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.dtype = DTYPES[dtype]
        self.name_of_dtype = "bf16" if self.dtype == torch.bfloat16 else "fp16"
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
        if self.scaler is not None and self.scaler._per_optimizer_states:
            # a callback cancelled the step after unscaling the gradients (GradientClipCB): without an update
            # the next batch's unscale_ would be refused; the update also backs off the scale on inf gradients
            self.scaler.update()

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

    def state_dict(self) -> dict:
        """The fp16 loss scale with its growth tracker, and the steps skipped so far (read at saves only)."""
        if self.scaler is None:
            return {}
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        """Continue a resumed run's loss scaling (called after `before_fit` has created the scaler)."""
        if self.scaler is not None and state.get("scaler"):  # a disabled scaler saved {}
            self.scaler.load_state_dict(state["scaler"])
            self._skipped = torch.tensor(state["skipped_steps"])

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped because of inf/NaN gradients (fp16 only)."""
        return int(self._skipped) if getattr(self, "_skipped", None) is not None else 0


def speed_cbs(model: nn.Module, precision: str = "auto", device: torch.device | str | None = None,
              channels_last: bool | None = None, verbose: bool = True,
              given: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks for training `model` on `device` (default: the default device) in `precision`:
    "auto" is bf16 autocast where the hardware runs bf16 natively (a CUDA GPU with bf16, a CPU with AMX
    or AVX-512 bf16) for wide models and fp32 elsewhere, with channels-last layout where
    `slowlearn.hardware.pays_channels_last`; "fp32", "bf16", "fp16" as asked, in the contiguous layout
    unless `channels_last`. Prints the choice once.
    Callbacks of `given` (the user's own MixedPrecisionCB, ChannelsLastCB) win: none of their kind is added."""
    if any(isinstance(cb, MixedPrecisionCB) for cb in given):
        precision = next(cb.name_of_dtype for cb in given if isinstance(cb, MixedPrecisionCB))
    if any(isinstance(cb, ChannelsLastCB) for cb in given):
        channels_last = True
    settings = speed_settings(model, device if device is not None else default_device(), precision,
                              channels_last, verbose)
    cbs: list[Callback] = [ChannelsLastCB()] if settings.channels_last else []
    cbs += [MixedPrecisionCB(settings.precision)] if settings.precision != "fp32" else []
    return defaults_not_given(cbs, given)
