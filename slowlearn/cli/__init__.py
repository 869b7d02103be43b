"""The `slowlearn` command line: `main(argv)` runs it, `parser()` defines it."""
from .main import main, parser

__all__ = ["main", "parser"]
