"""Initialisation: GeneralReLU, Kaiming init for conv and linear layers, and seeding every RNG."""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralReLU", "init_weights", "set_seed"]


class GeneralReLU(nn.Module):
    """ReLU with options: `leak` (leaky slope), `sub` (subtracted after), `maxv` (clamped above)."""

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def init_weights(m: nn.Module, leak: float = 0.) -> None:
    """Kaiming-normal weights (gain for a leaky ReLU of slope `leak`) and zero bias for conv and linear
    layers; use as `model.apply(partial(init_weights, leak=0.1))`."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, a=leak)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's RNGs (all devices); `deterministic` also asks torch for
    deterministic kernels (slower on the GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
