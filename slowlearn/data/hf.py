"""Hugging Face `datasets` with an image column and a label column as slowlearn's in-memory loaders.

`datasets` is an optional extra (`pip install slowlearn[hf]`): it is imported only by the caller's
own code, never here. Images are decoded in parallel from the dataset's stored bytes (or taken as PIL
images or arrays when the column holds those); the dataset keeps its own cache, so nothing is cached here.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from .images import Aug, _from_files
from .labels import LabelledFiles, _check_two_classes, _natural_order, check_distinct_names
from .loaders import DataLoaders, check_batching

__all__ = ["from_hf"]

VALID_NAMES = ("validation", "valid", "test")


def _open(item: Any) -> Image.Image:
    """An image column's value as a PIL image: undecoded {"bytes", "path"}, a PIL image, or an array."""
    from PIL import Image  # Pillow loads when images are used, not at `import slowlearn`
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, Mapping):
        return Image.open(io.BytesIO(item["bytes"])) if item.get("bytes") is not None else Image.open(item["path"])
    array = np.asarray(item)
    if array.dtype.kind not in "iub" or (array.size and (array.min() < 0 or array.max() > 255)):
        low, high = (array.min(), array.max()) if array.size else (0, 0)
        raise ValueError(f"An image array holds {array.dtype} values in [{low:.3g}, {high:.3g}]: give pixels as uint8 "
                         f"0-255 (floats in [0, 1]: (x * 255).round().astype(np.uint8); floats holding 0-255: "
                         f"x.round().astype(np.uint8)) or as PIL images")
    return Image.fromarray(array.astype(np.uint8))


def _raw_images(ds, x: str) -> list:
    """The image column without decoding it (decoding happens later, in parallel threads)."""
    feature = ds.features[x]
    if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
        ds = ds.cast_column(x, type(feature)(decode=False))
    return ds[x]


def _check_columns(ds, x: str, y: str, which: str) -> None:
    for col, what in ((x, "x"), (y, "y")):
        if col not in ds.column_names:
            raise ValueError(f"{what}={col!r} is not a column of the {which} dataset: its columns are {ds.column_names}")


def _class_names(ds, y: str, label_sets: list[list]) -> list[str]:
    names = getattr(ds.features[y], "names", None)
    if names is not None:
        return list(names)
    classes = _natural_order({str(v) for labels in label_sets for v in labels})
    check_distinct_names(classes, f"the label column {y!r}", "write each class one way (e.g. with ds.map)")
    return classes


def content_key(item: Any) -> str:
    """An image column's value named by its content (a digest of its stored bytes or pixels), for
    `stable_split`: a dataset's rows have no file path, and a digest stays the same when rows are added or
    reordered (identical images land in the same split)."""
    from PIL import Image
    if isinstance(item, Mapping):
        data = item["bytes"] if item.get("bytes") is not None else str(item.get("path")).encode()
    elif isinstance(item, Image.Image):
        data = f"{item.mode}{item.size}".encode() + item.tobytes()
    else:
        array = np.ascontiguousarray(item)
        data = f"{array.dtype}{array.shape}".encode() + array.tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _check_same_class_names(datasets: dict, y: str) -> None:
    """A `ClassLabel` in the validation set names the same classes, in the same order, as the training set's."""
    names = {which: getattr(ds.features[y], "names", None) for which, ds in datasets.items()}
    if names.get("valid") is not None and names["train"] is not None and names["valid"] != names["train"]:
        raise ValueError(f"the label feature {y!r} names other classes in the valid dataset ({names['valid'][:5]}) "
                         f"than in the train dataset ({(names['train'] or [])[:5]}): give both the same ClassLabel "
                         f"(e.g. valid.cast_column({y!r}, train.features[{y!r}]))")


def _label_indices(labels: list, classes: list[str], named: bool, which: str) -> list[int]:
    if named:  # ClassLabel: the values are already class indices
        bad = next((i for i, v in enumerate(labels) if not isinstance(v, int) or not 0 <= v < len(classes)), None)
        if bad is not None:
            raise ValueError(f"{which} row {bad}: label {labels[bad]!r} is not one of the {len(classes)} classes")
        return labels
    index = {c: i for i, c in enumerate(classes)}
    bad = next((i for i, v in enumerate(labels) if v is None or str(v).strip() == ""), None)
    if bad is not None:
        raise ValueError(f"{which} row {bad}: the label is empty: give every image a class")
    return [index[str(v)] for v in labels]


def from_hf(train, valid=None, *, x: str = "image", y: str = "label", valid_pct: float | None = None,
            size: int | tuple[int, int] | None = None, channels: int | None = None, seed: int | None = None,
            bs: int = 512, aug: Aug = "crop,flip", device=None, n_train: int | None = None,
            n_valid: int | None = None, verbose: bool = True) -> DataLoaders:
    """Loaders from a Hugging Face `datasets.Dataset` for training and one for validation (or a
    `DatasetDict` with "train" and, unless `valid_pct` is given, "validation", "valid" or "test"), as
    the fastai course loads Fashion-MNIST: `from_hf(ds["train"], ds["test"])`. `x` and `y` name the
    image and label columns; class names come from the label feature (a `ClassLabel`), else from the
    sorted label values. Without `valid`, `valid_pct` splits the training set, each image by a digest of
    its content (so adding rows moves no other image between the splits); the other arguments are
    `image_folder`'s.
    """
    check_batching(bs, seed)
    if isinstance(train, Mapping):
        if valid is None and valid_pct is None:
            valid = next((train[k] for k in VALID_NAMES if k in train), None)
        train = train["train"]
    if (valid is None) == (valid_pct is None):
        raise ValueError("give either a validation dataset or valid_pct= (a random split of train), not "
                         + ("both" if valid is not None else "neither"))
    datasets = {"train": train, **({"valid": valid} if valid is not None else {})}
    for which, ds in datasets.items():
        _check_columns(ds, x, y, which)
    labels = {which: list(ds[y]) for which, ds in datasets.items()}
    classes = _class_names(train, y, list(labels.values()))
    named = getattr(train.features[y], "names", None) is not None
    _check_same_class_names(datasets, y)
    items = LabelledFiles([], [], [], classes, keys=None if valid_pct is None else [], key_kind="content")
    for which, ds in datasets.items():
        items.files += _raw_images(ds, x)
        if valid_pct is not None:
            items.keys += [content_key(item) for item in items.files[-len(ds):]] if len(ds) else []
        items.labels += _label_indices(labels[which], classes, named, which)
        items.splits += [which] * len(ds)
    _check_training_classes(items)
    return _from_files(items, None, valid_pct, seed, n_train, n_valid, size, channels, bs, aug, device, None, verbose,
                       open_item=_open)


def _check_training_classes(items: LabelledFiles) -> None:
    in_train = {label for label, split in zip(items.labels, items.splits) if split == "train"}
    missing = [c for i, c in enumerate(items.classes) if i not in in_train]
    if missing:
        raise ValueError(f"class {missing[0]!r} has no training images: a class needs training images (drop it from "
                         f"the label feature, or add images)")
    _check_two_classes(items.classes, "the training dataset")
