"""Training helpers: the seed's `train(model, lr, ...)` on Fashion-MNIST."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from .callbacks.core import DeviceCB
from .callbacks.metrics import MetricsCB
from .callbacks.progress import ProgressCB
from .data import DataLoaders, fashion_mnist
from .learner import Callback, Learner

__all__ = ["train", "default_cbs"]


def default_cbs() -> list[Callback]:
    """Device placement, loss and accuracy per epoch, and progress: what `train` always uses."""
    return [DeviceCB(), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB()]


def train(model: nn.Module, lr: float, n_epochs: int = 3, bs: int = 512,
          opt_func: Callable = torch.optim.SGD, cbs: Sequence[Callback] = (), dls: DataLoaders | None = None,
          loss_func: Callable = F.cross_entropy) -> Learner:
    """Train a Fashion-MNIST model (or one on `dls`), printing accuracy and loss per epoch and phase.

    `cbs` are added to the defaults (device, metrics, progress). Returns the Learner: its
    `history` holds the table, `learn.progress.plot_loss()` draws the loss curve.
    """
    dls = dls if dls is not None else fashion_mnist(bs)
    learn = Learner(model, dls, loss_func, lr=lr, cbs=[*default_cbs(), *cbs], opt_func=opt_func)
    return learn.fit(n_epochs)
