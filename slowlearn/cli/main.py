"""The `slowlearn` command line (also `python -m slowlearn`): `train` and `lr-find` (train.py); `export`,
`predict` and `evaluate` for a trained model (deploy.py)."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from ..hardware import native_bf16_override
from ..version import __version__
from .common import CLIError, Parser, created_folders, remove_created_folders
from .deploy import add_model_commands
from .train import add_train_commands

__all__ = ["main", "parser"]


def parser() -> Parser:
    p = Parser(prog="slowlearn", description="Train image classifiers with slowlearn. Under torchrun, the same "
                                             "commands train on every process (data parallel).")
    p.add_argument("--version", action="version", version=f"slowlearn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_commands(sub)
    add_model_commands(sub)
    return p


def check_environment() -> None:
    """The environment's slowlearn settings, checked before a command runs (a mistake there is one line too)."""
    try:
        native_bf16_override()
    except ValueError as e:
        raise CLIError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what `train --nproc` runs in each process
    try:
        check_environment()
        return args.func(args)
    except (CLIError, FileNotFoundError) as e:
        remove_created_folders()  # a mistake writes nothing, not even an empty --out
        print(f"slowlearn: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        created_folders.clear()


if __name__ == "__main__":
    sys.exit(main())
