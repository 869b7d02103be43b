"""Image datasets as in-memory loaders: any `train/<class>/*` folder, and CIFAR-10.

Images are decoded once, in parallel with a progress bar, and cached as a uint8 tensor file next to
the data (`.slowlearn-cache-<split>.pt`), so later loads take seconds.
"""
from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from tqdm import tqdm

from .augment import BatchAugment
from .data import DataLoaders, TensorLoader, _data_root
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
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        if cached["n_files"] == len(files) and cached["classes"] == classes:
            return cached["x"], cached["y"]
    mode = ImageReadMode.RGB if decode_image(read_file(str(files[0][0]))).shape[0] >= 3 else ImageReadMode.GRAY
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        images = list(tqdm(pool.map(lambda f: decode_image(read_file(str(f[0])), mode=mode), files),
                           total=len(files), desc=f"decoding {split_dir.name}", disable=not is_rank0()))
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(f"Images in {split_dir} have different sizes {sorted(sizes)[:4]}: resize them to one size")
    x, y = torch.stack(images), torch.tensor([label for _, label in files])
    if is_rank0():
        tmp = cache.with_suffix(".tmp")
        torch.save({"x": x, "y": y, "classes": classes, "n_files": len(files)}, tmp)
        os.replace(tmp, cache)
    return x, y


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
                 valid: str | None = None) -> DataLoaders:
    """Loaders for `path/train/<class>/*` and `path/<valid>/<class>/*` (`valid` defaults to `valid`
    or `test`, whichever exists). Class names are the sorted folder names; images must share one size.
    Normalised per channel with the training set's statistics; `aug` augments training batches."""
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
    return _loaders(x_train, y_train, x_valid, y_valid, bs, device, aug, seed, classes)


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
            download: bool = True) -> DataLoaders:
    """CIFAR-10: 50 000 training and 10 000 test images, 3x32x32, augmented by random crop and flip.

    Looks under `root` (default `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`) for an image folder
    `cifar10/{train,test}/<class>/` or torchvision's `cifar-10-batches-py/`, else downloads the
    latter with torchvision. The official python batches are pickles: load only a copy you trust.
    """
    base = _data_root(root)
    if (base / "cifar10" / "train").is_dir():
        return image_folder(base / "cifar10", bs, device, aug, seed)
    batches = base / "cifar-10-batches-py"
    if not batches.is_dir():
        if not download:
            raise FileNotFoundError(f"CIFAR-10 not found under {base} (cifar10/train/<class>/ or "
                                    f"cifar-10-batches-py/), and download=False")
        from torchvision.datasets import CIFAR10
        with rank0_first():
            CIFAR10(str(base), download=True)
    return _loaders(*_read_python_batches(batches), bs, device, aug, seed, list(CIFAR10_CLASSES))
