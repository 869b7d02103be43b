"""Pictures of data: `show_batch`, and the image grid that the pictures of results draw on too. Each function
returns a matplotlib Figure: shown once in a notebook, left open for `plt.show()` in a script, and saved as a
PNG when given `path=`."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..display import finished, subplots
from ..randomness import peek_batch

__all__ = ["show_batch", "image_grid", "show_image", "for_display", "class_name"]


def class_name(classes, i: int) -> str:
    return classes[i] if classes else str(i)


def image_grid(n: int, size: float = 1.6):
    """A near-square grid of n image panels (9 as 3x3, 16 as 4x4), at most 8 columns."""
    cols = min(math.ceil(math.sqrt(n)), 8)
    rows = math.ceil(n / cols)
    fig, axs = subplots(rows, cols, figsize=(size * cols, (size + 0.6) * rows), squeeze=False)
    for ax in axs.flat:
        ax.axis("off")
    return fig, list(axs.flat)


def show_image(ax, image: torch.Tensor) -> None:
    """A CxHxW image in [0, 1] (1 channel: grey, 3: RGB, 4: RGBA)."""
    image = image.clamp(0, 1).cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def for_display(loader, xb: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1]: the loader's `decode` undoes its normalisation; for other loaders (a torch
    DataLoader), uint8 images are scaled and float images are stretched, each to its own range. Anything but
    a batch of images (N x C x H x W, 1, 3 or 4 channels: grey, RGB, RGBA) is refused: there is no picture to draw."""
    if xb.ndim != 4 or xb.shape[1] not in (1, 3, 4):
        raise ValueError(f"Only images can be pictured: batches of N x C x H x W images with 1, 3 or 4 channels; got "
                         f"items of shape {tuple(xb.shape[1:])}. For other data, read the predictions with "
                         f"learn.get_preds() (and the batches with next(iter(dls.train))).")
    if hasattr(loader, "decode"):
        return loader.decode(xb)
    if xb.dtype == torch.uint8:
        return xb.float() / 255
    dims = tuple(range(1, xb.ndim))
    low, high = xb.amin(dims, keepdim=True), xb.amax(dims, keepdim=True)
    return (xb - low) / (high - low).clamp_min(1e-12)


def show_batch(dls, n: int = 16, split: str = "train", path: str | Path | None = None):
    """The first `n` images of a batch from `dls[split]`, de-normalised, titled with their class names. Looking
    draws no random numbers that training would: the loaders' generators and the global RNGs are left as they were,
    so a seeded run is the same with or without it."""
    loader = dls[split]
    xb, yb = peek_batch(dls, loader)
    n = min(n, len(xb))
    images, classes = for_display(loader, xb[:n]), getattr(dls, "classes", None)
    fig, axs = image_grid(n)
    for ax, image, label in zip(axs, images, yb[:n].tolist()):
        show_image(ax, image)
        ax.set_title(class_name(classes, label), fontsize=8)
    return finished(fig, path)
