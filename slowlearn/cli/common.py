"""What the command line's modules share: the exception for a user's mistake, argument types, and the
checks that an output can be written (made before any work, so a mistake there costs nothing)."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

__all__ = ["CLIError", "positive_int", "non_negative_int", "writable_folder", "writable_file"]


class CLIError(Exception):
    """A bad option value or unreadable input: reported as one line, exit code 2."""


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def writable_folder(folder: str | os.PathLike, option: str) -> Path:
    """The folder given to `option`, created if needed and checked writable."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {folder}: that is a file; give a folder (it is created if needed)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise CLIError(f"{option} {folder}: cannot write there ({e.strerror or e}); give a folder you can write to")
    return path


def writable_file(file: str | os.PathLike, option: str) -> Path:
    """The file given to `option`, checked writable (its folder is created if needed); nothing is written to it."""
    path = Path(file)
    if path.is_dir():
        raise CLIError(f"{option} {file}: that is a folder; give a file name")
    try:
        writable_folder(path.parent, option)
    except CLIError:
        raise CLIError(f"{option} {file}: cannot write into its folder {path.parent}; give a file you can "
                       f"write") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise CLIError(f"{option} {file}: that file cannot be written; give another file name")
    return path


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {value}")
    return number
