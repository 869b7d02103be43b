"""Decoding image files (or PIL images) into one uint8 N x C x H x W tensor, in parallel threads.

Colour: with `channels=None` every image keeps its own kind (grayscale as 1 channel, anything else as
RGB) while decoding, then, if any image is colour, the grayscale ones are repeated to 3 channels, exactly
as Pillow's grayscale-to-RGB conversion, never the other way round. Palette, alpha, CMYK and other modes
become RGB (alpha is dropped). `channels=1` or `3` converts every image to that mode. 16-bit grayscale is
scaled to 8 bits; 32-bit integer and float images are refused (their range is unknown).

Size: `size=None` keeps the images' own size, which must then be the same for all of them. An int or
(h, w) `size` resizes by "resize and centre crop": the image is scaled (bilinear) until it covers
h x w, keeping its aspect ratio, then the centre h x w is kept (fastai's default `Resize` method).
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from ..display import progress
from ..distributed import is_rank0

T = TypeVar("T")

__all__ = ["decode_images", "image_size", "eight_bit", "fit_image", "resize_image", "read_headers", "any_colour",
           "check_same_size", "decoding_peak_images", "GRAYSCALE_MODES", "RESIZE_METHODS", "read_image_file",
           "WrongSize"]

GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
RESIZE_METHODS = ("crop", "squish")
CHUNK = 256  # images per task: fewer, larger tasks keep the pool's own overhead small
DECODE_THREADS = os.cpu_count() or 1
DECODER_VERSION = 2  # raise it when the same file and options decode to other pixels: cached decodes are then redone


def image_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`size` as (h, w), checked."""
    if size is None:
        return None
    problem = ValueError(f"size={size!r}: give a whole number of pixels (64, square images) or an (h, w) pair of "
                         f"them ((48, 64)), each at least 1")
    if isinstance(size, (str, bytes)) or not isinstance(size, (numbers.Integral, Iterable)):
        raise problem  # a float such as 2.5, which tuple() would fail on without saying what was wrong
    hw = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in hw):
        raise problem
    return int(hw[0]), int(hw[1])


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (Pillow's convert("L") clips it at 255: nearly white images);
    32-bit integer and float pixels, whose range is unknown, refused; other images as they are."""
    pixels = np.asarray(image) if image.mode == "I" else None
    if image.mode in SIXTEEN_BIT_MODES or (pixels is not None and pixels.size and 0 <= pixels.min()
                                           and pixels.max() <= 65535):  # Pillow < 10.3 reads 16-bit PNGs as "I"
        from PIL import Image
        pixels = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))  # round(x * 255 / 65535)
    if image.mode in ("I", "F"):
        kind = "32-bit integers" if image.mode == "I" else "floats"
        raise ValueError(f"its pixels are {kind} (mode {image.mode!r}), whose range is unknown: save it as an 8-bit "
                         f"(or 16-bit) image")
    return image


def resize_image(image: Image.Image, size: tuple[int, int], method: str = "crop",
                 interpolation: str = "bilinear") -> Image.Image:
    """`image` at `size` (h, w): "squish" resizes to it; "crop" resizes the largest centred region with the
    aspect ratio of `size` (the image scaled to cover `size`, then centre-cropped)."""
    from PIL import Image
    h, w = size
    resample = Image.Resampling[interpolation.upper()]
    if image.size == (w, h):
        return image
    if method == "squish":
        return image.resize((w, h), resample, reducing_gap=3.0)
    if method != "crop":
        raise ValueError(f"Unknown resize method {method!r}: use one of {RESIZE_METHODS}")
    scale = max(w / image.width, h / image.height)
    left, top = (image.width - w / scale) / 2, (image.height - h / scale) / 2
    return image.resize((w, h), resample, box=(left, top, left + w / scale, top + h / scale), reducing_gap=3.0)


def fit_image(image: Image.Image, mode: str | None, size: tuple[int, int] | None, method: str = "crop",
              interpolation: str = "bilinear", draft: bool = True) -> Image.Image:
    """`image` as the loaders (and predict) take it: 8-bit (`eight_bit`), palette transparency dropped,
    converted to `mode` (None: "L" or "RGB" by its own kind) and, with `size` (h, w), resized by
    `resize_image`. With `draft`, a JPEG not yet loaded is first decoded at a reduced scale that still
    covers the size (in its own mode: the conversion is Pillow's, as for any other image); this alters
    `image`, so it is for images opened here."""
    image = eight_bit(image)
    mode = mode or ("L" if image.mode in GRAYSCALE_MODES else "RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # as Pillow asks; the alpha is dropped below
    if size is not None and draft:
        image.draft(image.mode, (size[1], size[0]))
    image = image.convert(mode)
    return image if size is None else resize_image(image, size, method, interpolation)


def _to_array(image: Image.Image, mode: str | None, size: tuple[int, int] | None) -> np.ndarray:
    """A PIL image as an H x W x C uint8 array: `fit_image`, resizing by "crop"."""
    array = np.asarray(fit_image(image, mode, size))
    return array[..., None] if array.ndim == 2 else array


class WrongSize(ValueError):
    """An image of another size than the model takes, where nothing says how to resize it."""


def read_image_file(path: str | os.PathLike, convert: Callable[[Image.Image], T], verb: str = "read") -> T:
    """`convert(image)` of the image file at `path`, opened with Pillow. Whatever goes wrong reading it
    (a damaged or unknown file, a decompression bomb, pixels slowlearn refuses) is a ValueError naming the
    file: "Cannot {verb} image file ...". Training and prediction both read files through here."""
    from PIL import Image  # Pillow loads when images are decoded, not at `import slowlearn`
    try:
        with Image.open(path) as image:
            return convert(image)
    except WrongSize as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot {verb} image file {path}: {e}. Remove or replace it.") from None


def _decode_file(path: str, mode: str | None, size: tuple[int, int] | None) -> np.ndarray:
    return read_image_file(path, lambda image: _to_array(image, mode, size), verb="decode")


def _item_name(items: Sequence, i: int) -> str:
    """A file by its path; anything else (an in-memory dataset's image, e.g. a dict of its bytes) by its place."""
    return str(items[i]) if isinstance(items[i], (str, os.PathLike)) else f"item {i}"


def check_same_size(sizes: Sequence[tuple[int, int]], items: Sequence, start: int = 0) -> None:
    """Every (h, w) in `sizes` (of `items`, from `start` on) equals the first, or an error naming two files."""
    first = tuple(sizes[0])
    odd = next((i for i in range(start, len(sizes)) if tuple(sizes[i]) != first), None)
    if odd is not None:
        raise ValueError(f"Images have different sizes: {_item_name(items, 0)} is {first[0]}x{first[1]} (h x w) but "
                         f"{_item_name(items, odd)} is {sizes[odd][0]}x{sizes[odd][1]}. Pass size= (e.g. "
                         f"size=64, or --size 64 on the command line) to resize them all.")


def _read_header(path: str) -> tuple[str, int, int]:
    from PIL import Image
    try:
        with Image.open(path) as image:  # reads the header only
            return image.mode, image.height, image.width
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot decode image file {path}: {e}. Remove or replace it.") from None


def read_headers(files: Sequence[str], desc: str = "reading image headers") -> list[tuple[str, int, int]]:
    """(mode, height, width) of every file, from its header (no pixels decoded), in parallel threads."""
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    headers: list[tuple[str, int, int]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        done = pool.map(lambda chunk: [_read_header(f) for f in chunk], chunks)
        for chunk in (progress(done, len(chunks), desc) if is_rank0() and len(chunks) > 1 else done):
            headers += chunk
    return headers


def any_colour(modes: Sequence[str]) -> bool:
    """Whether a set of images with these modes decodes to RGB with `channels=None` (as `decode_images` does)."""
    return any(mode not in GRAYSCALE_MODES for mode in modes)


def decode_images(items: Sequence, channels: int | None = None, size: int | Sequence[int] | None = None,
                  desc: str = "decoding", open_item: Callable | None = None) -> torch.Tensor:
    """Files (or, with `open_item`, anything it turns into a PIL image) as one uint8 N x C x H x W tensor."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r}: give 1 (grayscale), 3 (RGB) or None (RGB if any image is colour)")
    mode, hw = {None: None, 1: "L", 3: "RGB"}[channels], image_size(size)
    if len(items) == 0:
        raise ValueError("No images to decode")
    if open_item is None:
        def one(item): return _decode_file(item, mode, hw)
    else:
        def one(item): return _to_array(open_item(item), mode, hw)

    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    images, sizes = _DecodedImages(len(items)), []

    def decoded_chunks(pool):
        for decoded in pool.map(lambda chunk: [one(item) for item in chunk], chunks):
            sizes.extend(a.shape[:2] for a in decoded)
            check_same_size(sizes, items, start=len(sizes) - len(decoded))  # stop at the first odd size
            images.add(decoded)
            del decoded  # copied into the tensor: not held while the next chunk is awaited
            yield
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        try:
            for _ in (progress(decoded_chunks(pool), len(chunks), desc) if is_rank0() else decoded_chunks(pool)):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return images.x


def decoding_peak_images(n: int) -> int:
    """How many images' worth of memory `decode_images` holds at most for `n` images: the tensor of all `n`,
    plus the chunks that the threads are decoding and the one being copied into the tensor."""
    return n + min(n, (DECODE_THREADS + 1) * CHUNK)


class _DecodedImages:
    """The N x C x H x W uint8 tensor, allocated once and filled in order, chunk by chunk, as chunks are
    decoded: the chunks' arrays are dropped as they are copied in, so no list of all the arrays, nor a
    stacked copy of it, is ever held. With `channels=None`, grayscale images are repeated to RGB once a
    colour image is seen (the whole set decides); the rows filled before then are copied over to 3 channels
    (for that moment the grayscale rows are held as well: at most a third of the final size more)."""

    def __init__(self, n: int):
        self.n, self.filled, self.x = n, 0, None

    def add(self, arrays: list[np.ndarray]) -> None:
        h, w, channels = arrays[0].shape
        if self.x is None:
            self.x = torch.empty((self.n, channels, h, w), dtype=torch.uint8)
        if self.x.shape[1] == 1 and any(a.shape[-1] == 3 for a in arrays):
            self._to_rgb()
        rows = self.x.numpy()  # numpy copies H x W x C into C x H x W several times faster than torch, row by row
        for array in arrays:
            rows[self.filled] = array.transpose(2, 0, 1)  # a grayscale array is broadcast to RGB
            self.filled += 1

    def _to_rgb(self) -> None:
        rgb = torch.empty((self.n, 3, *self.x.shape[2:]), dtype=torch.uint8)
        rgb[:self.filled] = self.x[:self.filled]  # as Pillow's grayscale-to-RGB: the level in each channel
        self.x = rgb
