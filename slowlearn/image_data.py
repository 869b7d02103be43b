"""Image datasets as in-memory loaders: any `train/<class>/*` folder, and CIFAR-10.

Images are decoded once, in parallel with a progress bar, and cached as a uint8 tensor file next to
the data (`.slowlearn-cache-<split>.pt`), so later loads take seconds.
"""
from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .augment import BatchAugment
from .display import progress
from .data import DataLoaders, DataNotFoundError, TensorLoader, _data_root
from .distributed import is_rank0, rank0_first

__all__ = ["image_folder", "cifar10", "load_image_split", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def load_image_split(split_dir: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of `split_dir/<class>/*` as (uint8 N x C x H x W, int64 labels), from the cache when fresh."""
    cache = split_dir.parent / f".slowlearn-cache-{split_dir.name}.pt"
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((split_dir / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"No images in {split_dir}/<class>/ (looked for {sorted(IMAGE_SUFFIXES)})")
    signature = [len(files), max(f.stat().st_mtime_ns for f, _ in files)]  # any added or changed file
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        if cached.get("signature") == signature and cached.get("classes") == classes:
            return cached["x"], cached["y"]
    with Image.open(files[0][0]) as first:
        mode = "L" if first.mode in ("1", "L", "I;16") else "RGB"
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        decoded = pool.map(lambda f: _decode(f[0], mode), files)
        images = list(progress(decoded, len(files), f"decoding {split_dir}") if is_rank0() else decoded)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(f"Images in {split_dir} have different sizes {sorted(sizes)[:4]}: resize them to one size")
    x, y = torch.stack(images), torch.tensor([label for _, label in files])
    if is_rank0():
        tmp = cache.with_suffix(".tmp")
        torch.save({"x": x, "y": y, "classes": classes, "signature": signature}, tmp)
        os.replace(tmp, cache)
    return x, y


def _decode(path: Path, mode: str) -> torch.Tensor:
    """One image file as a uint8 C x H x W tensor (Pillow decodes; grayscale or RGB for the whole folder)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert(mode))
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot decode image file {path}: {e}. Remove or replace it.") from None
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def _channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    xf = x.float() / 255
    return xf.mean((0, 2, 3)).tolist(), xf.std((0, 2, 3)).tolist()


def _loaders(x_train, y_train, x_valid, y_valid, bs, device, aug, seed, classes) -> DataLoaders:
    mean, std = _channel_stats(x_train)
    norm = dict(mean=mean, std=std, device=device)
    train = TensorLoader(x_train, y_train, bs, shuffle=True, seed=seed, aug=aug, **norm)
    valid = TensorLoader(x_valid, y_valid, 2 * bs, **norm)
    return DataLoaders(train, valid, test=valid, classes=classes)


def image_folder(path: str | os.PathLike, bs: int = 512, device=None, aug=None, seed: int | None = None,
                 valid: str | None = None, n_train: int | None = None, n_valid: int | None = None) -> DataLoaders:
    """Loaders for `path/train/<class>/*` and `path/<valid>/<class>/*` (`valid` defaults to `valid`
    or `test`, whichever exists). Class names are the sorted folder names; images must share one size.
    Normalised per channel with the training set's statistics; `aug` augments training batches.
    `n_train`/`n_valid` keep a fixed random subset of that size (quick runs)."""
    path = Path(path)
    if not (path / "train").is_dir():
        raise FileNotFoundError(f"{path} has no train/ folder: expected {path}/train/<class>/*.jpg and "
                                f"{path}/test/<class>/*.jpg (or valid/)")
    valid = valid or next((v for v in ("valid", "test") if (path / v).is_dir()), None)
    if valid is None:
        raise FileNotFoundError(f"{path} has no valid/ or test/ folder next to train/")
    classes = _class_dirs(path / "train")
    with rank0_first():
        x_train, y_train = load_image_split(path / "train", classes)
        x_valid, y_valid = load_image_split(path / valid, classes)
    return _subset(_loaders(x_train, y_train, x_valid, y_valid, bs, device, aug, seed, classes), n_train, n_valid)


def _read_python_batches(folder: Path) -> tuple[torch.Tensor, ...]:
    def load(name):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        return (torch.from_numpy(batch[b"data"]).reshape(-1, 3, 32, 32), torch.tensor(batch[b"labels"]))
    train = [load(f"data_batch_{i}") for i in range(1, 6)]
    x_valid, y_valid = load("test_batch")
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), x_valid, y_valid


def cifar10(bs: int = 512, root: str | os.PathLike | None = None, device=None,
            aug: BatchAugment | None = BatchAugment(pad=4, flip=True), seed: int | None = None,
            download: bool = True, n_train: int | None = None, n_valid: int | None = None) -> DataLoaders:
    """CIFAR-10: 50 000 training and 10 000 test images, 3x32x32, augmented by random crop and flip.

    Looks under `root` (default `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`) for an image folder
    `cifar10/{train,test}/<class>/` or torchvision's `cifar-10-batches-py/`, else downloads the
    latter with torchvision. The official python batches are pickles: load only a copy you trust.
    `n_train`/`n_valid` keep a random subset of that size (quick runs).
    """
    base = _data_root(root)
    if (base / "cifar10" / "train").is_dir():
        return image_folder(base / "cifar10", bs, device, aug, seed, n_train=n_train, n_valid=n_valid)
    batches = base / "cifar-10-batches-py"
    if not batches.is_dir():
        def missing(why: str) -> DataNotFoundError:
            return DataNotFoundError(f"CIFAR-10 was not found under {base} (as image folders cifar10/train/<class>/ "
                                     f"and cifar10/test/<class>/, or torchvision's cifar-10-batches-py/), and {why}.",
                                     "Put it there, or pass root= or set SLOWLEARN_DATA to where it is.")
        if not download:
            raise missing("download=False")
        from torchvision.datasets import CIFAR10
        try:
            with rank0_first():
                CIFAR10(str(base), download=True)
        except OSError as e:  # no network: URLError, socket errors
            raise missing(f"torchvision's download failed ({e})") from e
    return _subset(_loaders(*_read_python_batches(batches), bs, device, aug, seed, list(CIFAR10_CLASSES)),
                   n_train, n_valid)


def _subset(dls: DataLoaders, n_train: int | None, n_valid: int | None) -> DataLoaders:
    """A fixed random subset of each split (the folder layout stores images class by class)."""
    for dl, n in ((dls.train, n_train), (dls.valid, n_valid)):
        if n is not None:
            keep = torch.randperm(len(dl.x), generator=torch.Generator().manual_seed(0))[:n].to(dl.x.device)
            dl.x, dl.y = dl.x[keep], dl.y[keep]
    return dls
