"""Core callbacks: device placement, channels-last layout, the seed's MomentumCB."""
from __future__ import annotations

import torch

from ..callback import Callback
from ..data import BatchLoader
from ..device import default_device, to_device

__all__ = ["DeviceCB", "ChannelsLastCB", "MomentumCB"]


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


