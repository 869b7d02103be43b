"""Where tensors and models live: the default device, moving nested batches, a model's device, and the
user's model inside the DistributedDataParallel / `torch.compile` wrappers."""
from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["default_device", "to_device", "model_device", "bare_model", "sync_time"]


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


def _compiled(model: nn.Module) -> bool:
    # torch._dynamo takes seconds to import; a compiled model means torch.compile has imported it already.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def sync_time(device: torch.device) -> float:
    """`time.perf_counter()` after the work queued on `device` has finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
