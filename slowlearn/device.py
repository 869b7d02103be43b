"""Where tensors and models live: the default device, moving nested batches, a model's device, the
user's model inside the DistributedDataParallel / `torch.compile` wrappers, and scalars kept on a device
until they are read in bulk (`DeviceFloats`)."""
from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["default_device", "to_device", "model_device", "bare_model", "drop_gradients", "copy_gradients",
           "put_back_gradients", "sync_time", "DeviceFloats"]


def default_device() -> torch.device:
    """The best available device: CUDA (this process's GPU under torchrun: `LOCAL_RANK`), then Apple's
    MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_device(x, device: torch.device | str):
    """Move a tensor, or the tensors inside a list, tuple or dict, to `device` (asynchronously where possible)."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def bare_model(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel and `torch.compile` wrappers, however nested.
    Checkpoints hold its state, so they load into the plain model whichever wrappers trained it."""
    while isinstance(model, DistributedDataParallel) or _compiled(model):
        model = model.module if isinstance(model, DistributedDataParallel) else model._orig_mod
    return model


def drop_gradients(model: nn.Module) -> None:
    """Free every parameter's gradient (what an optimizer's `zero_grad()` does to its own parameters)."""
    for p in model.parameters():
        p.grad = None


def copy_gradients(model: nn.Module, device: torch.device | str | None = None) -> list[torch.Tensor | None]:
    """A copy of each parameter's gradient (None where it has none), on `device` (default: where it is)."""
    return [None if p.grad is None else p.grad.detach().to(device or p.grad.device, copy=True)
            for p in model.parameters()]


def put_back_gradients(model: nn.Module, grads: list[torch.Tensor | None]) -> None:
    """Give the parameters the gradients `copy_gradients` took, on the devices the parameters are on now."""
    for p, grad in zip(model.parameters(), grads):
        p.grad = None if grad is None else grad.to(p.device)


def _compiled(model: nn.Module) -> bool:
    # torch._dynamo takes seconds to import; a compiled model means torch.compile has imported it already.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def sync_time(device: torch.device) -> float:
    """`time.perf_counter()` after the work queued on `device` has finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class DeviceFloats:
    """Scalar tensors (e.g. batch losses) kept on their device and read back to Python floats in bulk.

    `append` costs no host-device sync; `read()` does one for everything appended since the last read. A
    value on the CPU is read at once (`item()`): it is already computed there, so that costs no wait, and it
    is ~3x cheaper than keeping the tensor and stacking it later (which matters at microseconds a step).
    `max_pending` bounds the tensors waiting: when that many values wait, `append` reads them (one host sync),
    so a long epoch that nobody reads before its end does not keep thousands of tensors on the device.
    """

    def __init__(self, max_pending: int = sys.maxsize):
        self.values: list[float] = []
        self._pending: list[torch.Tensor | float] = []
        self._tensors_pending = False  # whether a value waits as a tensor (else they are all floats)
        self.max_pending = max_pending

    def append(self, x: torch.Tensor) -> int:
        """Keep `x` (detached, or its value when it is on the CPU); returns how many values wait to be read."""
        pending = self._pending
        if x.is_cpu:
            pending.append(x.item())
        else:
            pending.append(x.detach())
            self._tensors_pending = True
        if len(pending) < self.max_pending:
            return len(pending)
        self.read()
        return 0

    def append_loss(self, learn) -> int:
        """Keep the batch's loss: the float the Learner read (`learn.loss_value`, for a callback with
        `reads_loss_value`), else as `append(learn.loss)`; returns how many values wait to be read."""
        value = learn.loss_value
        if value is None:
            return self.append(learn.loss)
        self._pending.append(value)  # a float holds nothing on a device: `max_pending` need not bound it
        return len(self._pending)

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def read(self, reduce=None) -> list[float]:
        """All values so far, as floats; `reduce` maps the pending values first (e.g. a mean over ranks), as
        one float64 tensor on the device of the values (the CPU for values read at once)."""
        pending = self._pending
        if reduce is None and not self._tensors_pending:
            self.values += pending
        elif pending:
            on_device = [p for p in pending if isinstance(p, torch.Tensor)]
            device = on_device[0].device if on_device else torch.device("cpu")
            stacked = torch.stack([p.double() if isinstance(p, torch.Tensor)
                                   else torch.tensor(p, dtype=torch.float64, device=device) for p in pending])
            self.values += (reduce(stacked) if reduce is not None else stacked).tolist()
        self._pending, self._tensors_pending = [], False
        return self.values
