"""Your own images as loaders: class folders, CSV labels, and CIFAR-10.

The files are listed and checked first (labels.py), then decoded once, in parallel, into one uint8
tensor (decode.py) that is cached in slowlearn's data folder, keyed by the files and the decode options
(cache.py); or, with `in_memory=False`, decoded batch by batch in worker processes (files.py). Loaders are
normalised per channel with the training set's statistics and augment training batches by random crop
and flip unless `aug="none"`. A table of images per class and split, and the size the images take decoded,
are printed each time a dataset is loaded. Hugging Face datasets: hf.py.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..distributed import rank0_first, rank0_print
from .augment import augment_from_spec
from .cache import cached_decode
from .common import DataNotFoundError, check_subset_size, data_root
from .decode import CHUNK, DECODER_VERSION, any_colour, decode_images, decoding_peak_images, image_size, read_headers
from .files import (
    STATS_SAMPLE,
    FileLoader,
    available_memory,
    decoded_bytes,
    default_workers,
    format_bytes,
    image_file_sets,
    sample_images,
)
from .labels import IMAGE_SUFFIXES, SPLIT_RULE, LabelledFiles, csv_files, folder_files, stable_split
from .loaders import DataLoaders, TensorLoader, check_batching
from .safe_pickle import read_cifar_batch

if TYPE_CHECKING:
    import pandas as pd  # image_csv takes a DataFrame, but slowlearn does not need pandas

__all__ = ["image_folder", "image_csv", "cifar10", "count_table", "CIFAR10_CLASSES", "IMAGE_SUFFIXES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "valid", "test")
CROP_RESIZE = {"method": "crop", "interpolation": "bilinear"}  # what decode_images does with size=
Aug = str | Callable[[torch.Tensor], torch.Tensor] | None


def image_folder(path: str | os.PathLike, *, size: int | tuple[int, int] | None = None, valid_pct: float | None = None,
                 seed: int | None = None, bs: int = 512, aug: Aug = "crop,flip", channels: int | None = None,
                 device=None, valid: str | None = None, n_train: int | None = None, n_valid: int | None = None,
                 cache_dir: str | os.PathLike | None = None, verbose: bool = True, in_memory: bool = True,
                 num_workers: int | None = None) -> DataLoaders:
    """Loaders for the images of `path`, labelled by the name of their class folder (sorted names).

    Layouts: `path/train/<class>/*` with `path/valid/<class>/*` or `path/test/<class>/*` (or the
    folder named by `valid`); or `path/<class>/*` (or `path/train/<class>/*` alone) with `valid_pct`:
    each image goes to validation when a hash of `seed` (default: as 0) and its path under the class
    folders' folder falls below `valid_pct` (`labels.stable_split`), so adding images never moves the
    others between training and validation; the validation share is about `valid_pct`, not exactly.
    `dls.split` records that rule (and exports carry it, so `slowlearn evaluate` can leave out the
    images a model trained on). Images lying directly in `path` beside class folders have no class: they
    are left out with a warning; every image is listed once, even through symbolic links, and an image linked
    (symbolic or hard link) into train/ and into the validation or test folder is an error.
    A `test/` folder that is not the validation folder becomes `dls.test`; in `path/<class>/*`, train/,
    valid/ and test/ are never classes, and a folder named like a split in another way (`Train/`, `Test/`,
    `val/`, `validation/`) is an error that says how to pass it. Subfolders of a class folder belong to that class.

    `size` (int, or (h, w)) resizes every image: scaled to cover the size, then centre-cropped.
    Without it the images must share one size. `channels` (1 or 3) sets the colour mode; by default
    the set is RGB as soon as any image is in colour (grayscale ones are converted, never the reverse).
    `aug` augments training batches: "crop,flip" (translate by up to 1/8 of the size, mirror),
    "none", or any callable on a batch (e.g. `BatchAugment`). `seed` also seeds the training order
    (default: torch's global RNG, so `set_seed` reproduces a run). `n_train`/`n_valid` keep a random
    subset of that many images (quick runs), chosen before decoding, not per class: a warning says when the
    subset leaves a class with no training image. Decoded images are cached in
    `cache_dir` (default: `image-cache/` in `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`).
    With `size`, `dls.resize` records the rule, so `learn.predict` and exports resize new images alike.

    `in_memory=False` leaves the images in their files, for data bigger than memory: each batch is read,
    decoded (as above: the same pixels) and resized by `num_workers` worker processes (default: the CPU
    count, at most 8), then normalised and augmented on the device; the normalisation statistics come from
    up to 2048 training images. Mid-epoch checkpoints of it resume exactly (see `FileLoader`). The size the
    images take decoded is printed, with a warning when in-memory data would not fit in memory.
    """
    check_batching(bs, seed)
    path = Path(path)
    items = folder_files(path, valid, valid_pct)
    return _from_files(items, f"folder {path.absolute()}", **_loader_args(locals()))


def image_csv(csv: str | os.PathLike | Sequence | pd.DataFrame, folder: str | os.PathLike | None = None, *,
              fn_col: str | int = 0, label_col: str | int = 1, valid_col: str | int | None = None,
              valid_pct: float | None = None, size: int | tuple[int, int] | None = None, seed: int | None = None,
              bs: int = 512, aug: Aug = "crop,flip", channels: int | None = None, device=None,
              n_train: int | None = None, n_valid: int | None = None, cache_dir: str | os.PathLike | None = None,
              verbose: bool = True, in_memory: bool = True, num_workers: int | None = None) -> DataLoaders:
    """Loaders for images labelled by a CSV file (a header row, then one row per image), a pandas DataFrame,
    or a list of rows (dicts, or sequences indexed by column number), as fastai's `ImageDataLoaders.from_csv`.
    An empty label (a blank cell; None, NaN or pd.NA from pandas) is an error, never a class "nan".

    `fn_col` and `label_col` (column names or numbers) give the file name, relative to `folder`
    (default: the CSV's folder), and the class. Rows whose `valid_col` is true (1, true, yes, valid)
    form the validation set; or `valid_pct` splits at random, as in `image_folder`, whose other
    arguments these are (with `valid_pct`, an image's key is its file name as the CSV gives it). Class names
    are the sorted labels (numbers in numeric order); `in_memory=False` and `num_workers` as for `image_folder`. A
    file listed twice (under two labels, in both splits, or twice alike) and labels that differ only by leading
    zeros or spaces (`1`, `01`) are errors.
    """
    check_batching(bs, seed)
    is_file = isinstance(csv, (str, os.PathLike))
    folder = Path(folder) if folder is not None else Path(csv).parent if is_file else Path.cwd()
    items = csv_files(csv, folder, fn_col, label_col, valid_col, valid_pct)
    identity = f"csv {Path(csv).absolute()}" if is_file else f"rows in {folder.absolute()}"
    return _from_files(items, identity, **_loader_args(locals()))


def _loader_args(args: dict) -> dict:
    return {k: args[k] for k in ("valid_pct", "seed", "n_train", "n_valid", "size", "channels", "bs", "aug", "device",
                                 "cache_dir", "verbose", "in_memory", "num_workers")}


def random_subset(n_total: int, n: int | None, seed: int, what: str) -> list[int] | None:
    """`n` of `n_total` indices in a random order fixed by `seed` (None: keep all)."""
    check_subset_size(n, n_total, what)
    if n is None:
        return None
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].tolist()


def _subsets(items: LabelledFiles, n_train, n_valid, seed: int) -> LabelledFiles:
    keep = []
    for split, n in (("train", n_train), ("valid", n_valid), ("test", None)):
        members = [i for i, s in enumerate(items.splits) if s == split]
        chosen = random_subset(len(members), n, seed, f"n_{split}")
        keep += members if chosen is None else [members[i] for i in chosen]
    subset = items.take(keep)
    _warn_untrained_classes(subset, n_train)
    return subset


def _warn_untrained_classes(items: LabelledFiles, n_train: int | None) -> None:
    """A random subset (`n_train`) is drawn without regard to class, so it can leave a class with no training
    image: the model would never see it. A warning, not an error: a quick run may mean it."""
    trained = {label for label, split in zip(items.labels, items.splits) if split == "train"}
    missing = [name for i, name in enumerate(items.classes) if i not in trained]
    if missing:
        them = "them" if len(missing) > 1 else "it"
        warnings.warn(f"n_train={n_train} leaves {len(missing)} of the {len(items.classes)} classes with no training "
                      f"image ({', '.join(map(repr, missing[:5]))}): the model never learns {them}; give a larger "
                      f"n_train (subsets are drawn at random, not per class)", stacklevel=4)


def _from_files(items: LabelledFiles, identity: str | None, valid_pct, seed, n_train, n_valid, size, channels, bs, aug,
                device, cache_dir, verbose, open_item: Callable | None = None, in_memory: bool = True,
                num_workers: int | None = None) -> DataLoaders:
    """Split, subset, decode (from the cache when `identity` names a cacheable set of files) and load; or,
    with `in_memory=False`, load from the files batch by batch."""
    split_seed = 0 if seed is None else seed
    augment_from_spec(aug, (32, 32))  # a bad spec is an error before anything is decoded
    _check_loading(in_memory, num_workers, open_item)
    options = {"size": image_size(size), "channels": channels, "decoder": DECODER_VERSION}
    split = None
    if valid_pct is not None:
        items.splits, moved = stable_split(items, valid_pct, split_seed)
        split = {"rule": SPLIT_RULE, "valid_pct": valid_pct, "seed": split_seed, "keys": items.key_kind,
                 **{f"moved_{k}": v for k, v in moved.items() if v}}
    if n_train is not None or n_valid is not None:
        items = _subsets(items, n_train, n_valid, split_seed)
        identity = identity and identity + f" subset {[n_train, n_valid, valid_pct, split_seed]}"

    if not in_memory:
        return _file_backed(items, channels, size, bs, device, aug, seed, num_workers, verbose, split)
    note = _decoded_size(items.files, channels, options["size"]) if open_item is None else None

    def decode() -> torch.Tensor:
        return decode_images(items.files, channels, size, desc=f"decoding {len(items.files)} images (chunks of {CHUNK})", open_item=open_item)
    if identity is None:
        x = decode()
    else:
        with rank0_first():  # in a distributed run, rank 0 decodes and caches while the others wait
            x = cached_decode(items.files, identity, options, decode, cache_dir)
    y, where = torch.tensor(items.labels), torch.tensor([SPLITS.index(s) for s in items.splits])
    parts = {s: _rows(x, y, where == i) for i, s in enumerate(SPLITS) if (where == i).any()}
    dls = make_loaders(parts, items.classes, bs, device, aug, seed, verbose)
    dls.resize = dict(CROP_RESIZE) if options["size"] else None  # read by preprocessing_of (predict, export)
    dls.split = split  # recorded by exports
    if verbose and note:
        rank0_print(note)
    return dls


def _check_loading(in_memory: bool, num_workers: int | None, open_item: Callable | None) -> None:
    if num_workers is not None and in_memory:
        raise ValueError(f"num_workers={num_workers} decodes batches in worker processes, which in-memory loading "
                         f"does not use: pass in_memory=False with it, or leave num_workers out")
    if not in_memory and open_item is not None:
        raise ValueError("in_memory=False reads images from their files; these images are in a dataset, not files: "
                         "leave in_memory out")
    if num_workers is not None and not (isinstance(num_workers, int) and num_workers >= 0):
        raise ValueError(f"num_workers={num_workers!r}: give 0 (decode in the training process) or more workers")


def _estimated_shape(files: Sequence[str], channels: int | None, hw: tuple[int, int] | None) -> tuple[int, int, int]:
    """(C, H, W) the images will decode to, guessed from the headers of a few files (nothing decoded)."""
    step = max(1, len(files) // 64)
    headers = read_headers(files[::step])
    colour = channels == 3 or (channels is None and any_colour([mode for mode, _, _ in headers]))
    return (3 if colour else 1, *(hw or headers[0][1:]))


def _decoded_size(files: Sequence[str], channels: int | None, hw: tuple[int, int] | None) -> str:
    """A line on how much memory the decoded images take, estimated before decoding them, with a warning now
    when what decoding holds at its peak (the decoded images, plus the chunks being decoded) is more than there is."""
    shape = _estimated_shape(files, channels, hw)
    size, peak = decoded_bytes(len(files), shape), decoded_bytes(decoding_peak_images(len(files)), shape)
    free = available_memory()
    if free is not None and peak > free:
        warnings.warn(f"The {len(files)} images take about {format_bytes(size)} decoded, and up to about "
                      f"{format_bytes(peak)} while they are decoded (with the chunks being decoded), more than the "
                      f"{format_bytes(free)} of memory available: leave them in their files with in_memory=False "
                      f"(--no-in-memory on the command line), which decodes each batch in worker processes, or train "
                      f"on a subset (n_train=, --n-train).", stacklevel=4)
    return f"{len(files)} images held in memory: about {format_bytes(size)} decoded"


def _file_backed(items: LabelledFiles, channels, size, bs: int, device, aug: Aug, seed: int | None,
                 num_workers: int | None, verbose: bool, split: dict | None = None) -> DataLoaders:
    """FileLoaders over the files of each split, normalised with the statistics of (a sample of) the training
    images, the training one shuffled and augmented."""
    num_workers = default_workers() if num_workers is None else num_workers
    sets = image_file_sets(items.files, items.labels, items.splits, channels, size)
    shape = sets["train"].item_shape
    if verbose:
        rank0_print(count_table(items.classes, {s: sets[s].labels for s in SPLITS if s in sets}))
        rank0_print(f"{len(items.files)} images, left in their files and decoded batch by batch by {num_workers} "
                    f"worker process{'es' * (num_workers != 1)} per loader (held in memory they would take about "
                    f"{format_bytes(decoded_bytes(len(items.files), shape))})")
    mean, std = _channel_stats(sample_images(sets["train"], STATS_SAMPLE))
    common = dict(mean=mean, std=std, device=device, num_workers=num_workers)
    train = FileLoader(sets["train"], bs, shuffle=True, seed=seed, aug=augment_from_spec(aug, shape[-2:]), **common)
    valid = FileLoader(sets["valid"], 2 * bs, **common)
    test = FileLoader(sets["test"], 2 * bs, **common) if "test" in sets else valid
    dls = DataLoaders(train, valid, test=test, classes=items.classes)
    dls.resize = dict(CROP_RESIZE) if image_size(size) else None
    dls.split = split  # recorded by exports
    return dls


def _rows(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked rows: a view when they are one run (folders list split by split), else a copy."""
    index = torch.nonzero(mask).flatten()
    first, last = index[0].item(), index[-1].item()
    if last - first + 1 == len(index):
        return x[first:last + 1], y[first:last + 1]
    return x[index], y[index]


def count_table(classes: Sequence[str], labels: dict[str, torch.Tensor], max_rows: int = 30) -> str:
    """Images per class (rows) and split (columns), with totals; empty cells and imbalance flagged."""
    counts = {s: torch.bincount(y.cpu(), minlength=len(classes)).tolist() for s, y in labels.items()}
    title = "images per class"
    width = max(len(title), *(len(c) + 2 for c in classes[:max_rows])) + 2
    lines = [title.ljust(width) + "".join(f"{s:>8}" for s in counts)]
    for i, name in enumerate(classes[:max_rows]):
        row = [counts[s][i] for s in counts]
        lines.append(f"  {name}".ljust(width) + "".join(f"{n:>8}" for n in row) + ("   <- empty" if 0 in row else ""))
    if len(classes) > max_rows:
        lines.append(f"  ... {len(classes) - max_rows} more classes")
    lines.append("  total".ljust(width) + "".join(f"{sum(c):>8}" for c in counts.values()))
    train = counts["train"]
    if min(train) and max(train) >= 3 * min(train):
        big, small = classes[train.index(max(train))], classes[train.index(min(train))]
        lines.append(f"  imbalanced: {big!r} has {max(train) / min(train):.1f}x the training images of {small!r}")
    return "\n".join(lines)


def _channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, exact (float64, from a histogram of the
    256 values: 10x faster than converting the whole set to float)."""
    counts = torch.stack([torch.bincount(x[:, c].flatten(), minlength=256) for c in range(x.shape[1])]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1)
    mean = (counts * values).sum(1) / n
    var = ((counts * values**2).sum(1) / n - mean**2) * n / (n - 1).clamp_min(1)
    return mean.tolist(), var.clamp_min(0).sqrt().tolist()


def make_loaders(parts: dict[str, tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str], bs: int, device,
                 aug: Aug, seed: int | None, verbose: bool = True) -> DataLoaders:
    """DataLoaders from uint8 image tensors per split ("train", "valid", optionally "test"): normalised
    with the training set's per-channel statistics, training batches shuffled and augmented."""
    if verbose:
        rank0_print(count_table(classes, {s: y for s, (_, y) in parts.items()}))
    x_train, y_train = parts["train"]
    mean, std = _channel_stats(x_train)
    norm = dict(mean=mean, std=std, device=device)
    train = TensorLoader(x_train, y_train, bs, shuffle=True, seed=seed, aug=augment_from_spec(aug, x_train.shape[-2:]),
                         **norm)
    valid = TensorLoader(*parts["valid"], 2 * bs, **norm)
    test = TensorLoader(*parts["test"], 2 * bs, **norm) if "test" in parts else valid
    return DataLoaders(train, valid, test=test, classes=classes)


def _read_python_batches(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    def load(name):
        data, labels = read_cifar_batch(folder / name)
        return torch.from_numpy(data).reshape(-1, 3, 32, 32), torch.tensor(labels)
    train = [load(f"data_batch_{i}") for i in range(1, 6)]
    return {"train": (torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])), "valid": load("test_batch")}


def cifar10(bs: int = 512, root: str | os.PathLike | None = None, device=None, aug: Aug = "crop,flip",
            seed: int | None = None, download: bool = True, n_train: int | None = None,
            n_valid: int | None = None, verbose: bool = True) -> DataLoaders:
    """CIFAR-10: 50 000 training and 10 000 test images, 3x32x32, augmented by random crop and flip.

    Looks under `root` (default `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`) for an image folder
    `cifar10/{train,test}/<class>/` or torchvision's `cifar-10-batches-py/`, else downloads the
    latter with torchvision. Those batches are pickles: they are read by an unpickler that allows
    only the few numpy callables the format needs, so a crafted file is refused instead of running
    code. `n_train`/`n_valid` keep a random subset of that size (quick runs).
    """
    check_batching(bs, seed)
    base = data_root(root)
    if (base / "cifar10" / "train").is_dir():
        return image_folder(base / "cifar10", bs=bs, device=device, aug=aug, seed=seed, n_train=n_train,
                            n_valid=n_valid, cache_dir=base / "image-cache", verbose=verbose)
    batches = base / "cifar-10-batches-py"
    if not batches.is_dir():
        _download_cifar10(base, download)
    parts = _read_python_batches(batches)
    for split, n in (("train", n_train), ("valid", n_valid)):
        keep = random_subset(len(parts[split][1]), n, 0 if seed is None else seed, f"n_{split}")
        if keep is not None:
            parts[split] = tuple(t[keep] for t in parts[split])
    return make_loaders(parts, list(CIFAR10_CLASSES), bs, device, aug, seed, verbose)


def _download_cifar10(base: Path, download: bool) -> None:
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
