"""What every dataset source shares: where slowlearn keeps data, the error for data that is missing, and the
check of a subset size."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "data_root", "check_subset_size"]


class DataNotFoundError(FileNotFoundError):
    """A dataset that is not where slowlearn looked and could not be downloaded. `problem` (one line)
    says where it looked and why the download did not happen; the message adds how to get the data
    from Python, front ends such as the command line add their own."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem} {fix}")
        self.problem = problem


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: `root` when given, else `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`."""
    if root is not None:
        return Path(root)
    # An empty SLOWLEARN_DATA (`export SLOWLEARN_DATA=`) is unset: Path("") would put the data in the current folder.
    return Path(os.environ.get("SLOWLEARN_DATA") or Path.home() / ".cache" / "slowlearn")


def check_subset_size(n: int | None, n_total: int, what: str) -> None:
    """`n` images to keep of `n_total` (None: all), or an error naming `what`."""
    if n is not None and not 0 < n <= n_total:
        raise ValueError(f"{what}={n}: there are {n_total} images to choose from; give 1 to {n_total}, or leave it out")
