"""The command line's data options: which images, their size, validation split, augmentation, subset.

Every combination is checked before anything is decoded; a user's mistake is a `CLIError`, which
the command line prints as one line with exit code 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import CLIError, in_cli_terms, non_negative_int, number, positive_int

__all__ = ["add_data_args", "load_data", "CLIError", "check_data_args"]

BUILT_IN = ("fashion_mnist", "cifar10")


def _size(value: str) -> int | tuple[int, int]:
    try:
        sides = [int(v) for v in value.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"give a positive number of pixels (64) or HxW (48x64), got {value}")
    return sides[0] if len(sides) == 1 else tuple(sides)


def _fraction(value: str) -> float:
    fraction = number(value)
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.2), got {value}")
    return fraction


def _aug(value: str) -> str:
    from ..data import check_aug_spec
    try:
        check_aug_spec(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
    return value


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion_mnist",
                   help="fashion_mnist, cifar10, a folder of images (train/<class>/* with valid/<class>/* or "
                        "test/<class>/*, or <class>/* with --valid-pct), or a CSV file of labels (default: "
                        "fashion_mnist)")
    p.add_argument("--images", metavar="FOLDER",
                   help="with --data FILE.csv: the folder the CSV's file names are relative to (default: the CSV's "
                        "folder). The CSV has a header; its first column is the file name, its second the class")
    p.add_argument("--valid-col", metavar="COLUMN",
                   help="with --data FILE.csv: the column that marks validation rows (1/true/yes/valid)")
    p.add_argument("--size", type=_size, help="resize images to SIZE (square) or HxW: scaled to cover, centre-cropped "
                                              "(needed when a folder's images differ in size)")
    p.add_argument("--valid-pct", type=_fraction,
                   help="validation fraction (folders of <class>/*, or a CSV): each image goes to validation by a "
                        "hash of its name, the same on every run, so adding images moves no other; not stratified by "
                        "class")
    p.add_argument("--aug", type=_aug, help="training augmentation: crop,flip (translate by up to 1/8 of the size, "
                                            "mirror), crop, flip or none (default: crop,flip; none for fashion_mnist)")
    p.add_argument("--n-train", type=positive_int, metavar="N",
                   help="train on N of the training images (a quick run): a random subset of your images or "
                        "cifar10 (only those are decoded), the first N of fashion_mnist")
    p.add_argument("--in-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="decode your images once and hold them in memory (the fastest; the default), or, with "
                        "--no-in-memory, leave them in their files and decode each batch in worker processes (for "
                        "image sets bigger than memory: the size they take decoded is printed when they load)")
    p.add_argument("--workers", type=non_negative_int, metavar="N",
                   help="with --no-in-memory: worker processes that decode batches, per loader (default: the CPU "
                        "count, at most 8; 0 decodes in the training process)")


def check_data_args(args) -> str:
    """The kind of data ("built-in", "folder" or "csv"), after checking which options go with it."""
    is_csv = args.data.lower().endswith(".csv")
    kind = "built-in" if args.data in BUILT_IN else "csv" if is_csv else "folder"
    if kind == "csv" and not Path(args.data).is_file():
        raise CLIError(f"--data {args.data}: no such CSV file")
    if kind == "folder" and not Path(args.data).is_dir():
        raise CLIError(f"--data {args.data}: not fashion_mnist, cifar10, or a readable folder (or a .csv file of "
                       f"labels)")
    for option, value in (("--images", args.images), ("--valid-col", args.valid_col)):
        if value is not None and kind != "csv":
            raise CLIError(f"{option} {value}: only goes with --data FILE.csv, not --data {args.data}")
    _check_loading_args(args, kind)
    for option, value in (("--size", args.size), ("--valid-pct", args.valid_pct)):
        if value is not None and kind == "built-in":
            raise CLIError(f"{option}: {args.data} has fixed images and a fixed validation set; {option} applies to "
                           f"your own folder or CSV of images")
    if kind == "csv" and (args.valid_pct is None) == (args.valid_col is None):
        raise CLIError(f"--data {args.data}: give --valid-pct 0.2 (a random split) or --valid-col COLUMN (rows "
                       f"marked for validation), " + ("not both" if args.valid_pct is not None else "one of them"))
    if kind == "csv" and args.images is not None and not Path(args.images).is_dir():
        raise CLIError(f"--images {args.images}: no such folder")
    return kind


def _check_loading_args(args, kind: str) -> None:
    in_memory, workers = getattr(args, "in_memory", True), getattr(args, "workers", None)
    if not in_memory and kind == "built-in":
        raise CLIError(f"--no-in-memory: {args.data} is held in memory (it is small); --no-in-memory applies to your "
                       f"own folder or CSV of images")
    if workers is not None and in_memory:
        raise CLIError(f"--workers {workers}: worker processes decode batches of images left in their files; add "
                       f"--no-in-memory, or leave --workers out")


def load_data(args):
    """The DataLoaders the data options ask for (checked first, then decoded)."""
    from ..data import DataNotFoundError, cifar10, fashion_mnist, image_csv, image_folder
    kind = check_data_args(args)
    aug = args.aug or "crop,flip"
    try:
        if args.data == "fashion_mnist":
            dls = fashion_mnist(bs=args.bs, n_train=args.n_train)
            dls.train.aug = None if args.aug is None else _augment(args.aug, dls)
            return dls
        if args.data == "cifar10":
            return cifar10(bs=args.bs, aug=aug, n_train=args.n_train)
        common = dict(size=args.size, valid_pct=args.valid_pct, bs=args.bs, aug=aug, n_train=args.n_train,
                      in_memory=getattr(args, "in_memory", True), num_workers=getattr(args, "workers", None))
        if kind == "csv":
            return image_csv(args.data, args.images, valid_col=args.valid_col, **common)
        return image_folder(args.data, **common)
    except DataNotFoundError as e:
        raise CLIError(f"--data {args.data}: {e.problem} Put the data where slowlearn looked, set SLOWLEARN_DATA "
                       f"to the folder that holds it, or train on your own images with --data PATH") from e
    except (ValueError, FileNotFoundError) as e:  # an image that does not decode, images of different sizes, a bad CSV row, ...
        raise CLIError(f"--data {args.data}: {in_cli_terms(str(e))}") from e


def _augment(spec: str, dls):
    from ..data import augment_from_spec
    return augment_from_spec(spec, tuple(dls.train.x.shape[-2:]))
