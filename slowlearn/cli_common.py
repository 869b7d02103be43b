"""What the command line's modules share: the exception for a user's mistake and argument types."""
from __future__ import annotations

import argparse

__all__ = ["CLIError", "positive_int"]


class CLIError(Exception):
    """A bad option value or unreadable input: reported as one line, exit code 2."""


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number
