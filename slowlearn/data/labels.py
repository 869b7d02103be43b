"""Which files make up an image dataset, with their labels and splits: from class folders or a CSV.

Everything here only lists and checks (before any image is decoded): class folders without images,
classes with no training images, a single class, missing files, unknown columns and empty labels are
errors that name the folder, file or row and say how to fix it.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabelledFiles", "folder_files", "csv_files", "stable_split", "random_split", "split_fraction", "split_key",
           "in_training", "class_folder_key", "check_distinct_names", "SPLIT_RULE", "images_in", "image_files",
           "class_folder", "class_of_file", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = ("train", "valid", "test")  # folder names that hold splits, never classes
SPLIT_NAMES = ("train", "valid", "val", "validation", "test")  # in any case, a folder so named looks like a split
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "valid", "t", "y"}, {"0", "false", "no", "train", "f", "n", ""}


@dataclass
class LabelledFiles:
    """Image files (absolute paths; for in-memory datasets, their items) with their class index and split
    ("train", "valid" or "test"), in decoding order. `keys` name each item for `stable_split` (a file's path
    under the folder that holds the class folders, or under the CSV's folder; a digest of an item's content),
    and `key_kind` says which ("class-folder", "csv", "content")."""
    files: list[str]
    labels: list[int]
    splits: list[str]
    classes: list[str]
    keys: list[str] | None = None
    key_kind: str | None = None

    def take(self, keep: Sequence[int]) -> LabelledFiles:
        keys = [self.keys[i] for i in keep] if self.keys is not None else None
        return LabelledFiles([self.files[i] for i in keep], [self.labels[i] for i in keep],
                             [self.splits[i] for i in keep], self.classes, keys, self.key_kind)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


class _Listing:
    """One walk of a folder tree that lists every real folder once and every real file once: a symbolic link
    to a folder already walked (a loop such as `cat/up -> ..`, or a second way into the same images) is
    skipped, and a link to a file already listed too. Links are followed after the real tree, so an image
    is listed under its real path (and labelled by its real class folder) whenever the tree holds it."""

    def __init__(self, top: str):
        self.top, self.folders, self.found, self.skipped = top, set(), [], []
        self.files: list[str] = []
        self.ids: dict[str, tuple] = {}  # each listed file's (device, inode): the same file under another name
        self.deferred: list[str] = []  # symbolic links to folders, walked once the real tree is listed

    def walk(self) -> list[str]:
        self._folder(self.top, os.stat(self.top))
        while self.deferred:
            link = self.deferred.pop(0)
            try:
                target = os.stat(link)
            except OSError:  # a broken link to a folder: nothing to list
                continue
            if (target.st_dev, target.st_ino) in self.folders:
                self.skipped.append(link)
            else:
                self._folder(link, target)
        return self._unique_files()

    def _folder(self, folder: str, st: os.stat_result) -> None:
        self.folders.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as entries:
            entries = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                (self.deferred if entry.is_symlink() else subfolders).append(entry.path)
            elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                self.found.append((entry.path, self._file_id(entry, st.st_dev)))
        for sub in subfolders:
            self._folder(sub, os.stat(sub))

    @staticmethod
    def _file_id(entry: os.DirEntry, device: int) -> tuple:
        """(device, inode) of the file itself (a link's target); a real file's costs no system call."""
        if not entry.is_symlink():
            return device, entry.inode()
        try:
            st = os.stat(entry.path)
            return st.st_dev, st.st_ino
        except OSError:  # a broken link: listed, so that decoding names it
            return "broken", entry.path

    def _unique_files(self) -> list[str]:
        """The files in walking order, each real file once: under its first real path, else its first link."""
        first: dict[tuple, str] = {}
        for path, file_id in self.found:
            if not os.path.islink(path):
                first.setdefault(file_id, path)
        files = []
        for path, file_id in self.found:
            if first.setdefault(file_id, path) == path:
                files.append(path)
                self.ids[path] = file_id
            else:
                self.skipped.append(path)
        return files


def images_in(folder: Path) -> list[str]:
    """Image files under `folder`, subfolders included, hidden ones not, in sorted order, as absolute
    paths (strings: tens of thousands of Path objects cost more than the cached load itself).

    Symbolic links are followed, but every real folder is walked once and every real file listed once: a
    link loop (`cat/up -> ..`) or a second link to the same images lists nothing twice (with a warning that
    names the links left out)."""
    return _listing(folder).files


def _listing(folder: Path) -> _Listing:
    """The walked listing of `images_in(folder)`, with each file's (device, inode) in `.ids`."""
    listing = _Listing(os.path.abspath(folder))
    listing.files = listing.walk()
    if listing.skipped:
        n, first = len(listing.skipped), listing.skipped[0]
        example = os.path.relpath(first, listing.top) + (f" -> {os.readlink(first)}" if os.path.islink(first) else "")
        warnings.warn(f"{folder}: {n} symbolic link{'s' if n > 1 else ''} or repeated file{'s' if n > 1 else ''} "
                      f"(e.g. {example}) lead{'' if n > 1 else 's'} to folders or images already listed, so "
                      f"{'they were' if n > 1 else 'it was'} left out: each image is listed once", stacklevel=3)
    return listing


def _class_folders(split_dir: Path, not_classes: Sequence[str] = ()) -> tuple[dict[str, list[str]], dict[str, tuple]]:
    """The images of each class folder of `split_dir`, labelled by `class_folder`, and each image's (device,
    inode); images lying directly in `split_dir` beside class folders have no class: left out, with a warning
    that counts them."""
    classes = {d.name: [] for d in _visible_dirs(split_dir) if d.name not in not_classes}
    root = os.path.abspath(split_dir)
    loose = []
    listing = _listing(split_dir)
    for file in listing.files:
        name = class_folder(file, root)
        if name in classes:
            classes[name].append(file)
        elif name is None:
            loose.append(file)
    if loose and classes:
        n = len(loose)
        they = "they have" if n > 1 else "it has"
        warnings.warn(f"{n} image{'s' if n > 1 else ''} directly in {split_dir} (e.g. {loose[0]}), beside its class "
                      f"folders: {they} no class, so {n} {'are' if n > 1 else 'is'} left out; move each into its class "
                      f"folder", stacklevel=4)
    return classes, listing.ids


def _check_classes(train: dict[str, list[str]], where: Path) -> None:
    empty = [name for name, files in train.items() if not files]
    if empty:
        raise ValueError(f"Class folder {where / empty[0]} has no images (looked for {', '.join(IMAGE_SUFFIXES)}): "
                         f"a class needs training images; add some or remove the folder")
    _check_two_classes(list(train), str(where))
    check_distinct_names(list(train), f"the class folders of {where}", "rename or merge the folders")


def _name_key(name: str) -> str:
    """A class name as a reader takes it: without surrounding spaces, numbers as numbers ("01" is "1", "1.0" is
    "1")."""
    name = name.strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?", name):
        number = float(name)
        return str(int(number)) if number.is_integer() else repr(number)
    return name


def check_distinct_names(names: Sequence[str], where: str, fix: str) -> None:
    """Class names that a reader would take for one class are an error (`1` and `01`, `cat` and `cat `); names
    that differ only by case (`Cat`, `cat`) a warning (they may be meant: letters)."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(_name_key(name), name)
        if other != name:
            raise ValueError(f"{where}: the classes {other!r} and {name!r} differ only by leading zeros or spaces, so "
                             f"they would be two classes of one label: {fix}")
    by_case: dict[str, str] = {}
    for name in names:
        other = by_case.setdefault(_name_key(name).casefold(), name)
        if other != name:
            warnings.warn(f"{where}: the classes {other!r} and {name!r} differ only by case, so they are two classes; "
                          f"if they are one, {fix}", stacklevel=4)


def _check_two_classes(classes: list[str], where: str) -> None:
    if len(classes) < 2:
        raise ValueError(f"{where} has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                         f"({', '.join(classes) or 'no class folders'}): a classifier needs at least two")


def folder_files(path: Path, valid: str | None, valid_pct: float | None) -> LabelledFiles:
    """`path/train/<class>/*` with `path/<valid>/<class>/*` (valid/ or test/), or `path/<class>/*` (or
    train/ alone) to be split by `valid_pct`. A `test/` folder that is not the validation folder is the
    test split; in the flat layout `path/<class>/*`, train/, valid/ and test/ are never classes, and a folder named
    like a split in another way (`Train/`, `val/`, `validation/`: `SPLIT_NAMES` in any case) is an error."""
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
    if flat:
        _check_no_split_like_classes(path, used=set(folders))
    if valid_pct is None:
        if flat:
            raise ValueError(f"{path} has no train/ folder: use {path}/train/<class>/ and {path}/valid/<class>/ "
                             f"(or test/), or pass valid_pct= (e.g. 0.2) to split {path}/<class>/ at random."
                             f"{layout_hint(path)}")
        valid = valid or next((v for v in ("valid", "test") if v in folders), None)
        if valid is None:
            raise FileNotFoundError(f"{path} has no valid/ or test/ folder next to train/: add one, or pass valid_pct= "
                                    f"(e.g. 0.2) to split train/ at random.{_valid_hint(path)}")
        split_dirs = {"train": train_dir, "valid": folders[valid]}
    else:
        ignored = valid or ("valid" if "valid" in folders else None) or _validation_like(path, flat)
        if ignored is not None:
            raise ValueError(f"valid_pct={valid_pct} would ignore the validation folder {path / ignored}: drop "
                             f"valid_pct to use that folder (valid={ignored!r}), or remove the folder to split train/ "
                             f"at random")
        split_dirs = {"train": train_dir}
    if "test" in folders and valid != "test":
        split_dirs["test"] = folders["test"]
    return _label_folders(split_dirs, not_classes=SPLIT_FOLDERS if flat else ())


def _is_split_name(name: str) -> bool:
    return name.casefold() in SPLIT_NAMES


def _check_no_split_like_classes(path: Path, used: set[str]) -> None:
    """In the flat layout `path/<class>/*`, a class folder named like a split (`Train/`, `Test/`, `val/`,
    `validation/`) is almost surely a split folder whose name the layouts do not read: an error, never a class."""
    odd = [d.name for d in _visible_dirs(path) if _is_split_name(d.name) and d.name not in SPLIT_FOLDERS + (*used,)]
    if not odd:
        return
    named = ", ".join(f"{name}/" for name in odd)
    train = next((name for name in odd if name.casefold() == "train"), None)
    others = [name for name in odd if name != train]
    if train is not None:
        fix = (f"to split {train}/ at random, pass that folder: image_folder({str(path / train)!r}, valid_pct=0.2); to "
               f"train on {train}/ and validate on {others[0] if others else '<folder>'}/, rename {train}/ to train/ "
               f"and pass valid={others[0] if others else '<folder>'!r}")
    else:
        fix = (f"to validate on {odd[0]}/, put the class folders of the training images in {path / 'train'}/ and pass "
               f"valid={odd[0]!r}; or remove {odd[0]}/ to split {path}/<class>/ at random with valid_pct=")
    they = "the folders {} are named like splits" if len(odd) > 1 else "the folder {} is named like a split"
    raise ValueError(f"{path}: {they.format(named)} ({', '.join(SPLIT_NAMES)}, in any case), not like classes, but "
                     f"only train/, valid/ and test/ are read as split folders: {fix}")


def _validation_like(path: Path, flat: bool) -> str | None:
    """A folder next to train/ named like a validation split (`val/`, `validation/`, `Valid/`), which valid_pct
    would leave unused."""
    if flat:
        return None
    return next((d.name for d in _visible_dirs(path) if _is_split_name(d.name) and d.name.casefold() not in
                 ("train", "test")), None)


def _valid_hint(path: Path) -> str:
    """For train/ with no valid/ or test/: the folders next to it, which may hold the validation images."""
    others = [d.name for d in _visible_dirs(path) if d.name != "train"]
    if not others:
        return ""
    likely = sorted(others, key=lambda name: not _is_split_name(name))
    return f" If {likely[0]}/ holds the validation images, pass valid={likely[0]!r}."


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
    train, train_ids = _class_folders(split_dirs["train"], not_classes)
    trained_on = {train_ids[file]: file for files in train.values() for file in files}  # flat: not test/'s files
    try:
        _check_classes(train, split_dirs["train"])
    except ValueError as e:
        hint = layout_hint(split_dirs["train"]) if len(train) < 2 else ""
        raise ValueError(f"{e}.{hint}" if hint else str(e)) from None
    classes = list(train)
    files, labels, splits, keys = [], [], [], []
    for split, folder in split_dirs.items():
        found, ids = (train, train_ids) if split == "train" else _class_folders(folder)
        if split == "test" and not (found and set(found) <= set(classes)):  # e.g. Kaggle's unlabelled test/*.jpg
            warnings.warn(f"{folder} is not labelled by the training classes' folders, so it is not used as the test "
                          f"split (dls.test is the validation set); predict on it with learn.get_preds or slowlearn predict",
                          stacklevel=4)
            continue
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{folder / unknown[0]} is a class with no training images ({split_dirs['train']} has no "
                             f"{unknown[0]}/ folder): add training images for it, or remove {folder / unknown[0]}")
        if split != "train":
            _check_not_in_training(found, ids, trained_on, split)
        root = os.path.abspath(folder)
        for name, names_files in found.items():
            files += names_files
            labels += [classes.index(name)] * len(names_files)
            splits += [split] * len(names_files)
            keys += [split_key(f, root) for f in names_files]
        if split != "train" and split not in splits:
            raise ValueError(f"{folder} has no images in class folders <class>/ (looked for {', '.join(IMAGE_SUFFIXES)})")
    return LabelledFiles(files, labels, splits, classes, keys, "class-folder")


def _check_not_in_training(found: dict[str, list[str]], ids: dict[str, tuple], trained_on: dict[tuple, str],
                           split: str) -> None:
    """An image of the `split` folder that is a training image under another name (a symbolic or hard link) is
    an error, as in a CSV."""
    for files in found.values():
        for file in files:
            if ids[file] in trained_on:
                original = trained_on[ids[file]]
                raise _in_both_splits(f"{file} is the training image {original} (a link to the same file), so it is "
                                      f"listed", split, "remove one of them")


def _in_both_splits(listed: str, split: str, fix: str) -> ValueError:
    """The error for an image listed both for training and for validation (or testing): the one rule, for folders
    and CSVs."""
    use, done = ("validation", "validated") if split == "valid" else ("testing", "tested")
    return ValueError(f"{listed} both for training and for {use}: a model would be {done} on an image it trained "
                      f"on; {fix}")


def split_key(file: str | os.PathLike, root: str | os.PathLike) -> str:
    """The name `stable_split` gives a file: its path under `root` with "/" separators (the same on every
    system and wherever the dataset is copied)."""
    return Path(os.path.relpath(file, root)).as_posix()


def _read_rows(source) -> tuple[list[str] | None, list, str]:
    """(header, rows, how to name a row) from a CSV file, a pandas DataFrame or a list of rows (dicts or
    sequences)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            rows = list(csv.reader(f))
        if not rows:
            raise ValueError(f"{source} is empty: expected a header row, then one row per image")
        return [h.strip() for h in rows[0]], rows[1:], f"{source} line {{}}"
    if hasattr(source, "columns") and hasattr(source, "itertuples"):  # a pandas DataFrame, without importing pandas
        return list(source.columns), [list(row) for row in source.itertuples(index=False, name=None)], "row {}"
    rows = list(source)
    text = next((i for i, row in enumerate(rows) if isinstance(row, (str, bytes))), None)
    if text is not None:
        raise TypeError(f"row {text} is the string {rows[text]!r}, not a row: give image_csv a CSV file's path, a "
                        f"pandas DataFrame, or a list of rows (dicts, or sequences such as [file, label, is_valid])")
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


def _cell(value) -> str:
    """A cell as text, stripped; an empty cell as pandas gives it (None, NaN, pd.NA, NaT) is "". A whole float
    is written as an integer: a pandas column of numbers with a missing cell is a float column, and its 2.0 is the
    CSV file's "2" (a class, or a validation flag)."""
    nan = isinstance(value, float) and math.isnan(value)  # numpy's float64 too
    missing = value is None or nan or type(value).__name__ in ("NAType", "NaTType")  # pandas' own, not imported
    if isinstance(value, float) and not nan and value.is_integer():
        value = int(value)
    return "" if missing else str(value).strip()


def _is_valid(value, row: str) -> bool:
    word = _cell(value).lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"{row}: validation flag {value!r} is neither true (1, true, yes, valid) nor false (0, false, no, "
                     f"train, empty)")


def _natural_order(labels: set[str]) -> list[str]:
    """Sorted class names; numbers as numbers (so "10" after "9")."""
    if all(s.lstrip("-").isdigit() for s in labels):
        return sorted(labels, key=lambda s: (int(s), s))  # "01" and "1" in a fixed order
    return sorted(labels)


def csv_files(source, folder: Path, fn_col, label_col, valid_col, valid_pct: float | None) -> LabelledFiles:
    """Files and labels listed in a CSV (a header row, then one row per image), a pandas DataFrame or a list of
    rows. A blank cell, None, NaN or pd.NA is empty: an error as a label, false as a validation flag."""
    if (valid_col is None) == (valid_pct is None):
        raise ValueError("give either valid_col= (a column that marks validation rows) or valid_pct= (a random "
                         "split), not " + ("both" if valid_col is not None else "neither"))
    header, rows, row_name = _read_rows(source)
    first_line = 2 if header is not None and isinstance(source, (str, os.PathLike)) else 0
    cols = [_column(c, header, what) for c, what in ((fn_col, "fn_col"), (label_col, "label_col"))]
    valid_at = _column(valid_col, header, "valid_col") if valid_col is not None else None
    files, names, splits, keys, lines, ids = [], [], [], [], [], []
    for i, row in enumerate(rows):
        where = row_name.format(i + first_line)
        if not row:  # a blank line, which pandas skips too
            continue
        if len(row) <= max(cols + [valid_at or 0]):
            raise ValueError(f"{where}: has {len(row)} columns, fewer than the header's")
        name, label = (_cell(row[c]) for c in cols)
        if not label:
            raise ValueError(f"{where}: the label ({label_col!r}) is empty: give every image a class")
        file = os.path.normpath(os.path.join(os.path.abspath(folder), name))
        st = _stat(file) if name else None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(f"{where}: image file {file} does not exist (file names are relative to {folder})")
        ids.append((st.st_dev, st.st_ino))
        files.append(file)
        names.append(label)
        splits.append("valid" if valid_at is not None and _is_valid(row[valid_at], where) else "train")
        keys.append(split_key(file, os.path.abspath(folder)))
        lines.append(i + first_line)
    _check_each_file_once(files, ids, names, splits, lines, row_name)
    if not files:
        raise ValueError(f"{row_name.format('s')} list no images")
    classes = _natural_order(set(names))
    check_distinct_names(classes, f"the labels ({label_col!r})", "write each class one way")
    missing = sorted(set(classes) - {n for n, s in zip(names, splits) if s == "train"})
    if missing:
        raise ValueError(f"class {missing[0]!r} has no training rows (all its rows are marked valid): a class needs "
                         f"training images")
    if valid_at is not None and "valid" not in splits:
        raise ValueError(f"valid_col={valid_col!r} marks no row as valid (1, true, yes, valid): mark the validation "
                         f"rows, or use valid_pct= for a random split")
    _check_two_classes(classes, "the CSV")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledFiles(files, [index[n] for n in names], splits, classes, keys, "csv")


def _stat(file: str) -> os.stat_result | None:
    try:
        return os.stat(file)
    except OSError:
        return None


def _check_each_file_once(files: list[str], ids: list[tuple], labels: list[str], splits: list[str], lines: list[int],
                          row_name: str) -> None:
    """A CSV that lists one image twice (under two names too, such as `a.jpg` and `./a.jpg` or a link to it:
    `ids` are the files' (device, inode)) is an error naming the image and both rows: under two labels, in
    both splits, or twice alike."""
    first: dict[tuple, int] = {}
    for i, file_id in enumerate(ids):
        file = files[i]
        j = first.setdefault(file_id, i)
        if j == i:
            continue
        rows = row_name.format(f"{lines[j]} and {lines[i]}")  # e.g. "labels.csv line 3 and 7"
        same = file if files[j] == file else f"{files[j]} (also listed as {file})"
        if labels[i] != labels[j]:
            raise ValueError(f"{rows} list the image {same} under two labels, {labels[j]!r} and {labels[i]!r}: an "
                             f"image has one class; keep the right row")
        if splits[i] != splits[j]:
            raise _in_both_splits(f"{rows} list the image {same}", "valid", "keep one row")
        raise ValueError(f"{rows} list the image {same} twice: list each image once (a repeated row counts the "
                         f"image twice in training or validation)")


SPLIT_RULE = "blake2b-64('{seed}:{key}') / 2**64 < valid_pct"  # recorded with exports: change it, change its name


def split_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by `key` and `seed` alone, evenly spread: `stable_split` puts the item in
    validation when it is below `valid_pct`."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stable_split(items: LabelledFiles, valid_pct: float, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """Mark about `valid_pct` of the training items as "valid", each decided by its own key and `seed`
    (`split_fraction(key, seed) < valid_pct`), so that adding or removing items never moves another one
    between training and validation. The share is `valid_pct` on average, not exactly, and per class too.

    Two fixes for tiny sets, which are the only exceptions to that stability: a class whose every item fell
    in validation keeps its last one (the highest fraction) for training, and a set with no validation item
    gets the training item with the lowest fraction from a class that keeps another. Returns the splits and
    the keys moved so ({"to_train": [...], "to_valid": [...]}, which an export records)."""
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct={valid_pct}: give a fraction between 0 and 1 (e.g. 0.2)")
    if items.keys is None:
        raise ValueError("stable_split needs a key per item (LabelledFiles.keys)")
    fraction = {i: split_fraction(items.keys[i], seed) for i, s in enumerate(items.splits) if s == "train"}
    splits = ["valid" if i in fraction and fraction[i] < valid_pct else s for i, s in enumerate(items.splits)]
    moved: dict[str, list[str]] = {"to_train": [], "to_valid": []}
    by_class: dict[int, list[int]] = {}
    for i in fraction:
        by_class.setdefault(items.labels[i], []).append(i)
    spare = [i for members in by_class.values() if len(members) > 1 for i in members]
    if not spare:
        raise ValueError(f"valid_pct={valid_pct} leaves no validation images ({len(items.files)} images, one per "
                         f"class): add images")
    emptied = []
    for c, members in by_class.items():
        if all(splits[i] == "valid" for i in members):
            keep = max(members, key=fraction.get)
            splits[keep] = "train"
            moved["to_train"].append(items.keys[keep])
            emptied.append(f"{items.classes[c]!r} ({len(members)})")
    if emptied:
        warnings.warn(f"valid_pct={valid_pct} put every training image of {len(emptied)} class"
                      f"{'es' if len(emptied) > 1 else ''} in validation ({', '.join(emptied[:5])}); one of each is "
                      f"kept for training ({', '.join(moved['to_train'][:5])}), and may move to validation when "
                      f"its class grows: add images to small classes", stacklevel=3)
    if "valid" not in splits:
        first = min(spare, key=fraction.get)
        splits[first] = "valid"
        moved["to_valid"].append(items.keys[first])
    return splits, moved


def random_split(items: LabelledFiles, valid_pct: float, seed: int) -> list[str]:
    """The splits of `stable_split` (the name this module had before splits were stable)."""
    return stable_split(items, valid_pct, seed)[0]


def in_training(key: str, split: dict) -> bool:
    """Whether the item named `key` was a training item under a split that an export records
    ({"rule", "valid_pct", "seed", "moved_to_train", "moved_to_valid"}, as `_from_files` writes it)."""
    if split.get("rule") != SPLIT_RULE:
        raise ValueError(f"the split rule {split.get('rule')!r} is not this slowlearn's ({SPLIT_RULE}): upgrade "
                         f"slowlearn to tell which images the model trained on")
    if key in split.get("moved_to_train", ()):
        return True
    if key in split.get("moved_to_valid", ()):
        return False
    return split_fraction(key, split["seed"]) >= split["valid_pct"]


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


def class_folder_key(file: Path, root: Path | None, classes) -> str:
    """The `stable_split` key that `image_folder` gave `file` if it trained on the folder it lies in: its path
    under `root` when `root` holds its class folder (as `class_of_file` decides), else "<its folder>/<name>"."""
    if root is not None and class_folder(file, root) in classes:
        return split_key(file, root)
    return f"{file.parent.name}/{file.name}"


def class_of_file(file: Path, root: Path | None, classes) -> str:
    """The class an image file is labelled with at prediction, as in training: its class folder under the
    folder given (`root`) when that is a class; else (a dataset root's train/<class>/, a file given, a file
    directly in the folder) its own folder."""
    name = class_folder(file, root) if root is not None else None
    return name if name in classes else file.parent.name
