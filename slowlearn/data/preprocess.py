"""What a model's inputs must look like, and the one rule that turns what a user has into them.

`Preprocessing` describes a classifier's input: for images, the channels, the size, the uint8-to-float
scaling, the per-channel mean/std, and how the training data was resized (if it was). Both
`learn.predict` and an exported model's `Predictor` accept, through `to_batch`:

- a path to an image file (anything Pillow reads): converted to the model's channels (grayscale or
  RGB) and resized as the training data was;
- a PIL image: the same;
- a uint8 tensor or NumPy array with values 0-255: tensors C x H x W (torchvision's layout), arrays
  H x W x C (Pillow's and OpenCV's); H x W for one channel;
- a float tensor or array in [0, 1] (what torchvision's `ToTensor()` gives), in the same layouts.

Anything ambiguous is refused with a message saying what to pass: a float tensor far outside
[0, 1] (already normalised, or 0-255 floats), another integer dtype, a wrong channel count or rank,
an array of another size than the model's.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .decode import RESIZE_METHODS, WrongSize, fit_image, read_image_file, resize_image

__all__ = ["Preprocessing", "preprocessing_of", "to_batch", "as_items", "resize_image", "RESIZE_METHODS"]

FLOAT_TOLERANCE = 1e-3  # how far outside [0, 1] a float image may stray (rounding in the user's own resizing)


def normalising_affine(mean, std, to255: float, batch_ndim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation as one multiply-subtract, in float32: x * scale - shift == (x / to255 - mean) / std, with
    one mean and std per channel (dimension 1) of a batch of `batch_ndim` dimensions. TensorLoader and the
    exported preprocessing both use it, so a prediction matches the validation loader's to the last bit."""
    shape = (1, -1) + (1,) * (batch_ndim - 2) if batch_ndim > 1 else (-1,)
    mean = torch.as_tensor(0. if mean is None else mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(1. if std is None else std, dtype=torch.float32, device=device)
    if mean.ndim:
        mean, std = mean.reshape(shape), std.reshape(shape)
    return 1 / (to255 * std), mean / std


@dataclass
class Preprocessing:
    """A model's input. `kind` "image": uint8 images of `channels` x `size` (h, w), scaled to [0, 1] by
    `scale` (1/255) and normalised with `mean`/`std` (one value per channel, or one for all);
    `resize` says how files of other sizes are brought to `size`: {"method": "crop" (shorter side to
    the size, then centre crop) or "squish", "interpolation": "bilinear"}, or None (sizes must match).
    `kind` "tensor": items of shape `shape` given as stored in the dataset (not images)."""
    kind: str = "image"
    channels: int = 1
    size: tuple[int, int] = (28, 28)
    scale: float = 1 / 255
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: dict | None = None
    shape: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ("image", "tensor"):
            raise ValueError(f"Preprocessing kind={self.kind!r}: use 'image' or 'tensor'")
        from PIL import Image  # Pillow loads when images are used, not at `import slowlearn`
        resize = self.resize or {}
        if self.resize is not None and (resize.get("method") not in RESIZE_METHODS or
                                        resize.get("interpolation", "bilinear").upper() not in Image.Resampling.__members__):
            raise ValueError(f"Preprocessing resize={self.resize!r}: give {{'method': one of {RESIZE_METHODS}, "
                             f"'interpolation': a Pillow resampling name such as 'bilinear'}}")
        if self.kind == "image" and not self.shape:
            self.shape = [self.channels, *self.size]

    def to_dict(self) -> dict:
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{**d, "size": tuple(d["size"])})

    def affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(scale, shift) with x * scale - shift == (x * self.scale - mean) / std, as `TensorLoader` computes it."""
        if self.mean is None and self.std is None and self.scale == 1:
            return None
        return normalising_affine(self.mean, self.std, round(1 / self.scale), len(self.shape) + 1)


def preprocessing_of(dls) -> Preprocessing:
    """What the validation loader of `dls` feeds its model. A slowlearn loader (in memory or file-backed) of
    uint8 C x H x W images is "image" (with the resize rule of `dls.resize` when the loaders resized);
    anything else is "tensor": items given as the dataset stores them."""
    loader = dls.valid
    shape = getattr(loader, "item_shape", None)
    if shape is None:  # a torch DataLoader: items as its dataset returns them
        return Preprocessing(kind="tensor", shape=list(torch.as_tensor(loader.dataset[0][0]).shape), scale=1.)
    mean, std = _as_list(getattr(loader, "mean", None)), _as_list(getattr(loader, "std", None))
    if loader.dtype != torch.uint8 or len(shape) != 3:
        scale = 1 / 255 if loader.dtype == torch.uint8 else 1.
        return Preprocessing(kind="tensor", shape=list(shape), scale=scale, mean=mean, std=std)
    resize = getattr(dls, "resize", None)
    return Preprocessing(channels=shape[0], size=(shape[1], shape[2]), mean=mean, std=std,
                         resize=dict(resize) if resize else None, shape=list(shape))


def _as_list(v) -> list[float] | None:
    if v is None:
        return None
    return torch.as_tensor(v, dtype=torch.float32).reshape(-1).tolist()


def _from_pil(image: Image.Image, prep: Preprocessing, draft: bool = False) -> torch.Tensor:
    """A PIL image in the model's mode and size, as uint8 C x H x W, decoded by the training loaders' own
    `fit_image` (a JPEG file we opened is drafted as in training; a caller's image is never altered)."""
    (h, w), mode = prep.size, "L" if prep.channels == 1 else "RGB"
    if image.size != (w, h) and prep.resize is None:
        raise WrongSize(f"The model takes {h}x{w} images and its training images were not resized; got "
                         f"{image.height}x{image.width}. Resize it to that size first.")
    image = fit_image(image, mode, prep.size, **(prep.resize or {}), draft=draft)
    return torch.from_numpy(np.array(image)).reshape(h, w, -1).permute(2, 0, 1)


def _read_file(path: str | os.PathLike, prep: Preprocessing) -> torch.Tensor:
    return read_image_file(path, lambda image: _from_pil(image, prep, draft=True))


def _layout(x: torch.Tensor, prep: Preprocessing, channels_last: bool) -> torch.Tensor:
    """C x H x W from a tensor (C x H x W) or an array (H x W x C); H x W when the model takes one channel."""
    c, (h, w) = prep.channels, prep.size
    chw_array = x.ndim == 3 and x.shape[0] == c and x.shape[-1] != c  # e.g. from tensor.numpy()
    if x.ndim == 2 and c == 1:
        x = x[None]
    elif x.ndim == 3 and channels_last and not chw_array:
        x = x.permute(2, 0, 1)
    if x.ndim != 3 or tuple(x.shape) != (c, h, w):
        layout = "H x W x C" if channels_last else "C x H x W"
        raise ValueError(f"The model takes images of {c} channel(s), {h}x{w} ({layout} here, H x W for one "
                         f"channel, a batch N x C x H x W); got shape {tuple(x.shape)}. Pass an image file or PIL "
                         f"image to have it converted{' and resized' if prep.resize else ''}.")
    return x


def _as_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as they are, floats in [0, 1] as float32 in 0-255 units."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"Got a {x.dtype} image: pass uint8 (0-255) or floats in [0, 1], "
                         f"e.g. x.to(torch.uint8) or x / 255.")
    low, high = x.min().item(), x.max().item()
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        hint = ("it looks like 0-255 pixel values: pass them as uint8 (x.to(torch.uint8)) or divide by 255"
                if high > 1 + FLOAT_TOLERANCE and low >= -FLOAT_TOLERANCE else
                "it looks already normalised: pass the raw image (uint8, or floats in [0, 1]) and the model's "
                "normalisation is applied for you")
        raise ValueError(f"A float image must hold values in [0, 1] (as torchvision's ToTensor gives); this one "
                         f"spans [{low:.3g}, {high:.3g}]: {hint}.")
    return x.float() * 255


def _image_item(item, prep: Preprocessing) -> torch.Tensor:
    """One item as a C x H x W tensor in 0-255 units (the unit the normalisation expects): uint8, or float32."""
    if isinstance(item, (str, os.PathLike)):
        return _read_file(item, prep)
    from PIL import Image
    if isinstance(item, Image.Image):
        return _from_pil(item, prep)
    if isinstance(item, np.ndarray):
        return _as_pixels(_layout(torch.from_numpy(np.ascontiguousarray(item)), prep, channels_last=True))
    if isinstance(item, torch.Tensor):
        return _as_pixels(_layout(item.cpu(), prep, channels_last=False))
    raise TypeError(f"Cannot predict on a {type(item).__name__}: pass an image file path, a PIL image, a uint8 "
                    f"tensor or array (0-255) or a float one in [0, 1].")


def as_items(x, prep: Preprocessing) -> tuple[list, bool]:
    """`x` as a list of items, and whether it was one item: a list or tuple, or a tensor or array with
    one dimension more than an item (N x C x H x W for images), is a batch."""
    if isinstance(x, (list, tuple)):
        return list(x), False
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == len(prep.shape) + 1:
        return list(x), False
    return [x], True


def to_batch(items: Sequence, prep: Preprocessing, map_fn: Callable = map) -> torch.Tensor:
    """Items (see the module docs) as the normalised float32 N x C x H x W batch the model takes, each
    item converted by `map_fn` (e.g. a thread pool's `map`). For a "tensor" model, items are stacked as
    given and normalised as the training data was."""
    if prep.kind == "image":
        images = list(map_fn(lambda item: _image_item(item, prep), items))
        same_dtype = all(image.dtype == torch.uint8 for image in images)  # one conversion for the whole batch
        xb = torch.stack(images).float() if same_dtype else torch.stack([image.float() for image in images])
        scale, shift = prep.affine()
        return xb.mul_(scale).sub_(shift)
    xb = torch.stack([torch.as_tensor(item) for item in items])
    if list(xb.shape[1:]) != prep.shape:
        raise ValueError(f"The model takes items of shape {tuple(prep.shape)}; got {tuple(xb.shape[1:])}")
    affine = prep.affine()
    return xb.float() * affine[0] - affine[1] if affine else xb
