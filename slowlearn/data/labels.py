"""Which files make up an image dataset, with their labels and splits: from class folders or a CSV.

Everything here only lists and checks (before any image is decoded): class folders without images,
classes with no training images, a single class, missing files, unknown columns and empty labels are
errors that name the folder, file or row and say how to fix it.
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["LabelledFiles", "folder_files", "csv_files", "random_split", "images_in", "image_files", "class_folder",
           "class_of_file", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = ("train", "valid", "test")  # folder names that hold splits, never classes
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "valid", "t", "y"}, {"0", "false", "no", "train", "f", "n", ""}


@dataclass
class LabelledFiles:
    """Image files (absolute paths; for in-memory datasets, their items) with their class index and split
    ("train", "valid" or "test"), in decoding order."""
    files: list[str]
    labels: list[int]
    splits: list[str]
    classes: list[str]

    def take(self, keep: Sequence[int]) -> LabelledFiles:
        return LabelledFiles([self.files[i] for i in keep], [self.labels[i] for i in keep],
                             [self.splits[i] for i in keep], self.classes)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def images_in(folder: Path) -> list[str]:
    """Image files under `folder`, subfolders included, hidden ones not, in sorted order, as absolute
    paths (strings: tens of thousands of Path objects cost more than the cached load itself)."""
    found = []
    for root, dirs, names in os.walk(os.path.abspath(folder), followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _class_folders(split_dir: Path, not_classes: Sequence[str] = ()) -> dict[str, list[str]]:
    """The images of each class folder of `split_dir`, labelled by `class_folder`."""
    classes = {d.name: [] for d in _visible_dirs(split_dir) if d.name not in not_classes}
    root = os.path.abspath(split_dir)
    for file in images_in(split_dir):
        name = class_folder(file, root)
        if name in classes:
            classes[name].append(file)
    return classes


def _check_classes(train: dict[str, list[str]], where: Path) -> None:
    empty = [name for name, files in train.items() if not files]
    if empty:
        raise ValueError(f"Class folder {where / empty[0]} has no images (looked for {', '.join(IMAGE_SUFFIXES)}): "
                         f"a class needs training images; add some or remove the folder")
    _check_two_classes(list(train), str(where))


def _check_two_classes(classes: list[str], where: str) -> None:
    if len(classes) < 2:
        raise ValueError(f"{where} has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                         f"({', '.join(classes) or 'no class folders'}): a classifier needs at least two")


def folder_files(path: Path, valid: str | None, valid_pct: float | None) -> LabelledFiles:
    """`path/train/<class>/*` with `path/<valid>/<class>/*` (valid/ or test/), or `path/<class>/*` (or
    train/ alone) to be split by `valid_pct`. A `test/` folder that is not the validation folder is the
    test split; in the flat layout `path/<class>/*`, train/, valid/ and test/ are never classes."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder: expected one holding train/<class>/*.jpg with valid/<class>/"
                                f" (or test/), or <class>/*.jpg with valid_pct=")
    flat = not (path / "train").is_dir()
    train_dir = path if flat else path / "train"
    folders = {n: d for n in ("valid", "test") if (d := path / n).is_dir()}
    if valid is not None and valid not in folders:
        folders[valid] = path / valid
        if not folders[valid].is_dir():
            raise FileNotFoundError(f"valid={valid!r}: {path / valid} is not a folder")
    if valid_pct is None:
        if flat:
            raise ValueError(f"{path} has no train/ folder: use {path}/train/<class>/ and {path}/valid/<class>/ "
                             f"(or test/), or pass valid_pct= (e.g. 0.2) to split {path}/<class>/ at random."
                             f"{layout_hint(path)}")
        valid = valid or next((v for v in ("valid", "test") if v in folders), None)
        if valid is None:
            raise FileNotFoundError(f"{path} has no valid/ or test/ folder next to train/: add one, or pass valid_pct= "
                                    f"(e.g. 0.2) to split train/ at random")
        split_dirs = {"train": train_dir, "valid": folders[valid]}
    else:
        if valid is not None or "valid" in folders:
            raise ValueError(f"valid_pct={valid_pct} would ignore the validation folder {folders.get(valid or 'valid')}"
                             f": drop valid_pct to use that folder, or remove the folder to split train/ at random")
        split_dirs = {"train": train_dir}
    if "test" in folders and valid != "test":
        split_dirs["test"] = folders["test"]
    return _label_folders(split_dirs, not_classes=SPLIT_FOLDERS if flat else ())


def _has_images(folder: Path) -> bool:
    """Whether `folder` holds an image file itself (not in a subfolder): a look at its entries only."""
    with os.scandir(folder) as entries:
        return any(e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith(".") and e.is_file()
                   for e in entries)


def _looks_like_classes(folder: Path) -> bool:
    return sum(_has_images(d) for d in _visible_dirs(folder)[:50]) >= 2


def layout_hint(path: Path) -> str:
    """A sentence for a layout error at `path` that says what the folder looks like instead: the dataset one
    folder further down (a wrapper folder around train/ or around class folders), or images that lie in
    `path` itself with no class folders. Empty when nothing stands out."""
    subdirs = [d for d in _visible_dirs(path) if d.name not in SPLIT_FOLDERS]
    with_train = [d for d in subdirs if (d / "train").is_dir()]
    if len(with_train) == 1:
        return f" Did you mean the folder {with_train[0]}, which holds train/?"
    if len(subdirs) == 1 and _looks_like_classes(subdirs[0]):
        return f" Did you mean the folder {subdirs[0]}, whose folders look like classes?"
    if not subdirs and _has_images(path):
        return (f" {path} holds images but no class folders: the class of an image is the name of its folder "
                f"({path}/<class>/*.jpg); to give classes another way, list the images with their classes in a CSV "
                f"file (image_csv).")
    return ""


def _label_folders(split_dirs: dict[str, Path], not_classes: Sequence[str] = ()) -> LabelledFiles:
    train = _class_folders(split_dirs["train"], not_classes)
    try:
        _check_classes(train, split_dirs["train"])
    except ValueError as e:
        hint = layout_hint(split_dirs["train"]) if len(train) < 2 else ""
        raise ValueError(f"{e}.{hint}" if hint else str(e)) from None
    classes = list(train)
    files, labels, splits = [], [], []
    for split, folder in split_dirs.items():
        found = train if split == "train" else _class_folders(folder)
        if split == "test" and not (found and set(found) <= set(classes)):  # e.g. Kaggle's unlabelled test/*.jpg
            warnings.warn(f"{folder} is not labelled by the training classes' folders, so it is not used as the test "
                          f"split (dls.test is the validation set); predict on it with learn.get_preds or slowlearn predict",
                          stacklevel=4)
            continue
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{folder / unknown[0]} is a class with no training images ({split_dirs['train']} has no "
                             f"{unknown[0]}/ folder): add training images for it, or remove {folder / unknown[0]}")
        for name, names_files in found.items():
            files += names_files
            labels += [classes.index(name)] * len(names_files)
            splits += [split] * len(names_files)
        if split != "train" and split not in splits:
            raise ValueError(f"{folder} has no images in class folders <class>/ (looked for {', '.join(IMAGE_SUFFIXES)})")
    return LabelledFiles(files, labels, splits, classes)


def _read_rows(source: str | os.PathLike | Sequence) -> tuple[list[str] | None, list, str]:
    """(header, rows, how to name a row) from a CSV file or a list of rows (dicts or sequences)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            rows = list(csv.reader(f))
        if not rows:
            raise ValueError(f"{source} is empty: expected a header row, then one row per image")
        return [h.strip() for h in rows[0]], rows[1:], f"{source} line {{}}"
    rows = list(source)
    if rows and isinstance(rows[0], dict):
        header = list(rows[0])
        return header, [[row.get(h) for h in header] for row in rows], "row {}"
    return None, [list(r) for r in rows], "row {}"


def _column(col: str | int, header: list[str] | None, what: str) -> int:
    if isinstance(col, int) and (header is None or 0 <= col < len(header)):
        return col
    if header is not None and col in header:
        return header.index(col)
    raise ValueError(f"{what}={col!r} is not a column: the columns are {header if header else '(numbered from 0)'}")


def _is_valid(value, row: str) -> bool:
    word = str(value if value is not None else "").strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"{row}: validation flag {value!r} is neither true (1, true, yes, valid) nor false (0, false, no, "
                     f"train, empty)")


def _natural_order(labels: set[str]) -> list[str]:
    """Sorted class names; numbers as numbers (so "10" after "9")."""
    if all(s.lstrip("-").isdigit() for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def csv_files(source, folder: Path, fn_col, label_col, valid_col, valid_pct: float | None) -> LabelledFiles:
    """Files and labels listed in a CSV (a header row, then one row per image) or in a list of rows."""
    if (valid_col is None) == (valid_pct is None):
        raise ValueError("give either valid_col= (a column that marks validation rows) or valid_pct= (a random "
                         "split), not " + ("both" if valid_col is not None else "neither"))
    header, rows, row_name = _read_rows(source)
    first_line = 2 if header is not None and isinstance(source, (str, os.PathLike)) else 0
    cols = [_column(c, header, what) for c, what in ((fn_col, "fn_col"), (label_col, "label_col"))]
    valid_at = _column(valid_col, header, "valid_col") if valid_col is not None else None
    files, names, splits = [], [], []
    for i, row in enumerate(rows):
        where = row_name.format(i + first_line)
        if len(row) <= max(cols + [valid_at or 0]):
            raise ValueError(f"{where}: has {len(row)} columns, fewer than the header's")
        name, label = (str(row[c] if row[c] is not None else "").strip() for c in cols)
        if not label:
            raise ValueError(f"{where}: the label ({label_col!r}) is empty: give every image a class")
        file = os.path.join(os.path.abspath(folder), name)
        if not name or not os.path.isfile(file):
            raise FileNotFoundError(f"{where}: image file {file} does not exist (file names are relative to {folder})")
        files.append(file)
        names.append(label)
        splits.append("valid" if valid_at is not None and _is_valid(row[valid_at], where) else "train")
    if not files:
        raise ValueError(f"{row_name.format('s')} list no images")
    classes = _natural_order(set(names))
    missing = sorted(set(classes) - {n for n, s in zip(names, splits) if s == "train"})
    if missing:
        raise ValueError(f"class {missing[0]!r} has no training rows (all its rows are marked valid): a class needs "
                         f"training images")
    if valid_at is not None and "valid" not in splits:
        raise ValueError(f"valid_col={valid_col!r} marks no row as valid (1, true, yes, valid): mark the validation "
                         f"rows, or use valid_pct= for a random split")
    _check_two_classes(classes, "the CSV")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledFiles(files, [index[n] for n in names], splits, classes)


def random_split(items: LabelledFiles, valid_pct: float, seed: int) -> list[str]:
    """Mark a random `valid_pct` of each class's training items as "valid" (stratified, reproducible by
    `seed`); every class keeps at least one training item."""
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct={valid_pct}: give a fraction between 0 and 1 (e.g. 0.2)")
    g = torch.Generator().manual_seed(seed)
    splits = list(items.splits)
    labels = torch.tensor(items.labels)
    train = torch.tensor([s == "train" for s in splits])
    for c in range(len(items.classes)):
        members = torch.nonzero(train & (labels == c)).flatten()
        n_valid = min(round(len(members) * valid_pct), len(members) - 1)
        for i in members[torch.randperm(len(members), generator=g)[:n_valid]].tolist():
            splits[i] = "valid"
    if "valid" not in splits:
        raise ValueError(f"valid_pct={valid_pct} leaves no validation images ({len(items.files)} images): raise it")
    return splits


def image_files(folder_or_files: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The image files in a folder and its subfolders, listed as training lists them (hidden files and
    folders left out, sorted), or the given files."""
    if isinstance(folder_or_files, (str, os.PathLike)):
        root = Path(folder_or_files)
        if root.is_dir():
            absolute = os.path.abspath(root)
            return [root / os.path.relpath(f, absolute) for f in images_in(root)]
        folder_or_files = [root]
    files = [Path(f) for f in folder_or_files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"No such image file: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                       if len(missing) > 1 else ""))
    return files


def class_folder(file: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """The rule of which folder labels an image: the top-level folder under `root` (a split's folder) that
    holds the file, at any depth (images in a class folder's subfolders belong to it); None for a file
    lying directly in `root`."""
    parts = Path(os.path.relpath(file, root)).parts
    return parts[0] if len(parts) > 1 else None


def class_of_file(file: Path, root: Path | None, classes) -> str:
    """The class an image file is labelled with at prediction, as in training: its class folder under the
    folder given (`root`) when that is a class; else (a dataset root's train/<class>/, a file given, a file
    directly in the folder) its own folder."""
    name = class_folder(file, root) if root is not None else None
    return name if name in classes else file.parent.name
