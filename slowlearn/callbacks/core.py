"""Core callbacks (device placement, channels-last layout, the seed's MomentumCB) and `DeviceFloats`,
which other callbacks use to collect per-batch scalars without a host sync per batch."""
from __future__ import annotations

import torch

from ..callback import Callback
from ..data import BatchLoader
from ..device import default_device, to_device

__all__ = ["DeviceCB", "ChannelsLastCB", "MomentumCB", "DeviceFloats"]


class DeviceCB(Callback):
    """Moves the model to the fit's device before fit and every batch to it before the model sees it.

    The fit's device is `learn.device`: this process's device when DistributedCB has set it, else
    `device` (`None` picks CUDA, then MPS, then the CPU), which this callback puts in the slot for the
    fit. Batches already on the device (a GPU-resident loader) are not copied.
    """

    order = -10
    sweep = True

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self._claimed = False

    def before_fit(self, learn) -> None:
        self._claimed = learn.device is None
        if self._claimed:
            learn.device = self.device
        learn.model.to(learn.device)

    def before_epoch(self, learn) -> None:
        # slowlearn's loaders hand out batches on their own device: when that is the fit's, none is moved and
        # `before_batch` is not even called in this phase
        move = not (isinstance(learn.dl, BatchLoader) and learn.dl.device == learn.device)
        learn.dispatch.set_active(self, "before_batch", move)

    def before_batch(self, learn) -> None:
        learn.batch = to_device(learn.batch, learn.device)

    def cleanup_fit(self, learn) -> None:
        if self._claimed:
            learn.device, self._claimed = None, False


class ChannelsLastCB(Callback):
    """Puts the model and every batch of images (4-D inputs) in channels-last memory layout (NHWC).

    Convolutions run faster that way with oneDNN on CPUs and with tensor cores on GPUs: the CIFAR
    ResNet trains about 1.3x faster on a 2-core CPU (`benchmarks/channels_last.py`). A very small
    CNN such as the seed's can get slower, so measure before making it a habit.
    """

    # Before DistributedCB (-20): DistributedDataParallel must wrap the model in its final layout.
    # Batches are converted before DeviceCB moves them, and the move keeps their layout.
    order = -21
    sweep = True

    def before_fit(self, learn) -> None:
        learn.model.to(memory_format=torch.channels_last)

    def before_batch(self, learn) -> None:
        x = learn.batch[0]
        if x.ndim == 4:
            learn.batch = (x.contiguous(memory_format=torch.channels_last), *learn.batch[1:])


class MomentumCB(Callback):
    """Momentum without a momentum optimizer: instead of zeroing gradients, multiply them by `mom`.

    The next backward pass adds the new gradient to the decayed old one, so a plain SGD step uses
    g_t = grad_t + mom * g_{t-1}, the heavy-ball momentum of `torch.optim.SGD(momentum=mom)`.
    Replaces the Learner's `zero_grad` step.
    """

    sweep = True  # it replaces zero_grad: the update rule itself

    def __init__(self, mom: float = 0.85):
        if not 0 <= mom < 1:
            raise ValueError(f"MomentumCB needs 0 <= mom < 1, got mom={mom}")
        self.mom = mom

    def zero_grad(self, learn) -> None:
        grads = [p.grad for p in learn.model.parameters() if p.grad is not None]
        if grads:
            with torch.no_grad():
                torch._foreach_mul_(grads, self.mom)


class DeviceFloats:
    """Scalar tensors (e.g. batch losses) kept on their device and read back to Python floats in bulk.

    `append` costs no host-device sync; `read()` does one for everything appended since the last read. A
    value on the CPU is read at once (`item()`): it is already computed there, so that costs no wait, and it
    is ~3x cheaper than keeping the tensor and stacking it later (which matters at microseconds a step).
    """

    def __init__(self):
        self.values: list[float] = []
        self._pending: list[torch.Tensor | float] = []

    def append(self, x: torch.Tensor) -> int:
        """Keep `x` (detached, or its value when it is on the CPU); returns how many values wait to be read."""
        self._pending.append(x.item() if x.is_cpu else x.detach())
        return len(self._pending)

    def append_loss(self, learn) -> int:
        """Keep the batch's loss: the float the Learner read (`learn.loss_value`, for a callback with
        `reads_loss_value`), else as `append(learn.loss)`; returns how many values wait to be read."""
        value = learn.loss_value
        if value is None:
            return self.append(learn.loss)
        self._pending.append(value)
        return len(self._pending)

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def read(self, reduce=None) -> list[float]:
        """All values so far, as floats; `reduce` maps the pending values first (e.g. a mean over ranks), as
        one float64 tensor on the device of the values (the CPU for values read at once)."""
        pending = self._pending
        on_device = [p for p in pending if isinstance(p, torch.Tensor)]
        if reduce is None and not on_device:
            self.values += pending
        elif pending:
            device = on_device[0].device if on_device else torch.device("cpu")
            stacked = torch.stack([p.double() if isinstance(p, torch.Tensor)
                                   else torch.tensor(p, dtype=torch.float64, device=device) for p in pending])
            self.values += (reduce(stacked) if reduce is not None else stacked).tolist()
        self._pending = []
        return self.values
