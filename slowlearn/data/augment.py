"""Batch augmentation on the loader's device: whole-batch tensor ops, no per-sample Python."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "random_crop", "random_flip", "cutout", "augment_from_spec", "check_aug_spec", "AUG_NAMES"]

AUG_NAMES = ("crop", "flip")


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


def check_aug_spec(spec: str) -> set[str]:
    """The augmentations named in "crop,flip" or "none", or a ValueError that lists the valid names."""
    names = {name.strip() for name in spec.lower().split(",") if name.strip()}
    if names == {"none"}:
        return set()
    unknown = sorted(names - set(AUG_NAMES))
    if unknown or not names:
        raise ValueError(f"aug={spec!r}: unknown augmentation {', '.join(unknown) or '(empty)'}; give a comma-separated "
                         f"list of {', '.join(AUG_NAMES)}, or none")
    return names


def augment_from_spec(aug: str | Callable | None, image_hw: tuple[int, int]) -> Callable | None:
    """A training augmentation from `aug`: a callable or None as given, or a spec such as "crop,flip" or
    "none". "crop" translates by up to 1/8 of the image's shorter side (4 pixels at 32 x 32)."""
    if aug is None or callable(aug):
        return aug
    names = check_aug_spec(aug)
    if not names:
        return None
    return BatchAugment(pad=max(1, round(min(image_hw) / 8)) if "crop" in names else 0, flip="flip" in names)
