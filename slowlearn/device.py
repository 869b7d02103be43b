"""Where tensors live: picking the default device and moving nested batches to it."""
from __future__ import annotations

import os

import torch

__all__ = ["default_device", "to_device"]


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
