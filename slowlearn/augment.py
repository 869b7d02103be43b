"""Batch augmentation on the loader's device: whole-batch tensor ops, no per-sample Python."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "random_crop", "random_flip", "cutout"]


def random_crop(xb: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each image by up to `pad` pixels: reflect-pad, then crop back at a random offset."""
    n, _, h, w = xb.shape
    padded = F.pad(xb, (pad,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=xb.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=xb.device)
    rows = (dy + torch.arange(h, device=xb.device))[:, None, :, None]  # n, 1, h, 1
    cols = (dx + torch.arange(w, device=xb.device))[:, None, None, :]  # n, 1, 1, w
    batch = torch.arange(n, device=xb.device)[:, None, None, None]
    channels = torch.arange(xb.shape[1], device=xb.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_flip(xb: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    flip = torch.rand(len(xb), device=xb.device) < 0.5
    return torch.where(flip[:, None, None, None], xb.flip(3), xb)


def cutout(xb: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a `size` x `size` square at a random place in each image (squares may stick out of the edge)."""
    n, _, h, w = xb.shape
    cy = torch.randint(0, h, (n, 1, 1), device=xb.device)
    cx = torch.randint(0, w, (n, 1, 1), device=xb.device)
    ys, xs = torch.arange(h, device=xb.device)[None, :, None], torch.arange(w, device=xb.device)[None, None, :]
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return xb.masked_fill(inside[:, None], 0.)


class BatchAugment:
    """Training-batch augmentation: random crop (translate by up to `pad`), horizontal flip, cutout.

    Applied by the training TensorLoader to normalised batches (so cutout fills with the mean).
    Uses torch's global RNG on the batch's device, which checkpoints save and restore.
    """

    def __init__(self, pad: int = 4, flip: bool = True, cutout: int = 0):
        self.pad, self.flip, self.cutout = pad, flip, cutout

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        if self.pad:
            xb = random_crop(xb, self.pad)
        if self.flip:
            xb = random_flip(xb)
        if self.cutout:
            xb = cutout(xb, self.cutout)
        return xb

    def __repr__(self) -> str:
        return f"BatchAugment(pad={self.pad}, flip={self.flip}, cutout={self.cutout})"
