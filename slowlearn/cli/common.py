"""What the command line's modules share: the exception for a user's mistake, argument types that name a bad
value in command-line terms, the parser (which notes the options given and suggests the option meant), the
translation of the library's messages into command-line terms, and the checks that an output can be written
(made before any work, so a mistake there costs nothing)."""
from __future__ import annotations

import argparse
import difflib
import functools
import math
import os
import re
import tempfile
from pathlib import Path

from ..arguments import MAX_SEED

__all__ = ["CLIError", "positive_int", "positive_float", "integer", "number", "non_negative_int", "seed",
           "writable_folder", "created_folders", "remove_created_folders", "writable_file", "in_cli_terms",
           "nearest_option", "Parser"]

# The library's keyword arguments that are command-line options, as its messages name them (`valid_pct=0.2`)
KEYWORD_OPTIONS = {"valid_pct": "--valid-pct", "valid_col": "--valid-col", "size": "--size", "n_train": "--n-train",
                   "aug": "--aug", "bs": "--bs"}
_KEYWORD = re.compile(r"(?<![\w.-])(" + "|".join(KEYWORD_OPTIONS) + r")=([^\s,:;)]*)")


class CLIError(Exception):
    """A bad option value or unreadable input: reported as one line, exit code 2."""


def in_cli_terms(message: str) -> str:
    """A library message as the command line says it: `valid_pct=0.2` becomes `--valid-pct 0.2`, `pass
    valid_pct= (e.g. 0.2)` becomes `pass --valid-pct (e.g. 0.2)`, a folder suggested as data becomes `--data`."""
    def option(match: re.Match) -> str:
        return KEYWORD_OPTIONS[match.group(1)] + (f" {match.group(2)}" if match.group(2) else "")
    message = _KEYWORD.sub(option, message)
    return (message.replace("Did you mean the folder ", "Did you mean --data ")
            .replace("in a CSV file (image_csv)", "in a CSV file (--data FILE.csv)"))


def _parsed(value: str, kind: type, what: str):
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None


def integer(value: str) -> int:
    """A whole number from the command line (an error that says so otherwise)."""
    return _parsed(value, int, "a whole number")


def positive_int(value: str) -> int:
    """A whole number of at least 1 from the command line."""
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def number(value: str) -> float:
    """A number from the command line (an error that says so otherwise)."""
    return _parsed(value, float, "a number")


def positive_float(value: str) -> float:
    """A positive finite number from the command line."""
    result = number(value)
    if not 0 < result < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {value}")
    return result


def seed(value: str) -> int:
    """A random seed from the command line: a whole number from 0 to 2**32 - 1 (what NumPy takes)."""
    number = integer(value)
    if not 0 <= number <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SEED}, got {value}")
    return number


def non_negative_int(value: str) -> int:
    """A whole number of at least 0 from the command line."""
    number = integer(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


created_folders: list[Path] = []  # the folders writable_folder made for this command, deepest first


def writable_folder(folder: str | os.PathLike, option: str) -> Path:
    """The folder given to `option`, created if needed and checked writable (`remove_created_folders` removes the
    folders made here when the command then fails)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {folder}: that is a file; give a folder (it is created if needed)")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        created_folders.extend(missing)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise CLIError(f"{option} {folder}: cannot write there ({e.strerror or e}); give a folder you can write to")
    return path


def remove_created_folders() -> None:
    """Remove the folders writable_folder made that are still empty: a command refused after the check leaves
    nothing behind."""
    while created_folders:
        try:
            created_folders.pop(0).rmdir()
        except OSError:  # something was written into it (or it is gone): kept
            pass


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
    """argparse's parser, speaking to a user: an error ends with "(see --help)", an unknown option gets the
    nearest known one ("did you mean --bs?"), and `args.given` maps each option given on the command line
    (its dest) to how it was written, so that a command can tell a value asked for from a default."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.subcommands = None
        self.set_defaults(given=None)
        for name in (None, "store", "store_const", "store_true", "store_false"):  # argparse's registered actions
            self.register("action", name, _recording(self._registry_get("action", name)))

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.subcommands.choices.get(getattr(parsed, self.subcommands.dest)) if self.subcommands else None
            command = command or self
            command.error(f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(unknown, command)}")
        if parsed.given is None:
            parsed.given = {}
        return parsed

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@functools.cache
def _recording(action_class: type) -> type:
    """`action_class` that also notes in `namespace.given` that its option was on the command line."""
    class Recorded(action_class):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            if getattr(namespace, "given", None) is None:
                namespace.given = {}
            namespace.given[self.dest] = option_string
    Recorded.__name__ = Recorded.__qualname__ = f"Recorded{action_class.__name__}"
    return Recorded


def _did_you_mean(unknown: list[str], parser: argparse.ArgumentParser) -> str:
    known = [s for s in parser._option_string_actions if s.startswith("--")]  # argparse has no public list of them
    pairs = [(arg, hint) for arg in unknown if arg.startswith("--") and (hint := nearest_option(arg, known))]
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f"; did you mean {pairs[0][1]}?"
    return "; did you mean " + ", ".join(f"{hint} for {arg.split('=')[0]}" for arg, hint in pairs) + "?"


def nearest_option(unknown: str, known: list[str]) -> str | None:
    """The option of `known` that `unknown` (e.g. "--batch-size") most likely meant: the one its words'
    initials spell ("--bs"), one of its words ("--image-size": "--size"), a short option whose letters it
    holds in order ("--batchsize": "--bs"), or a close spelling ("--epoch": "--epochs"); None when none is near."""
    name = unknown.split("=", 1)[0].replace("_", "-").lower().removeprefix("--")
    words = [w for w in name.split("-") if w]
    if not words:
        return None
    initials = "--" + "".join(w[0] for w in words)
    if len(words) > 1 and initials in known:
        return initials
    inside = [f"--{w}" for w in words if f"--{w}" in known]
    if len(words) > 1 and inside:
        return inside[-1]
    short = [k for k in known if len(k) <= 5 and k[2] == name[0] and _in_order(k[2:], name)]
    if len(short) == 1:
        return short[0]
    close = difflib.get_close_matches(name, [k[2:] for k in known], n=1, cutoff=0.6)
    return f"--{close[0]}" if close else None


def _in_order(letters: str, word: str) -> bool:
    rest = iter(word)
    return all(letter in rest for letter in letters)
