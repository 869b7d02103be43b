"""Showing results: notebook detection, text tables, and figures shown in notebooks or saved as PNG elsewhere."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["in_notebook", "show_or_save", "save_png", "finished", "TablePrinter", "format_value", "format_table"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, or a notebook executed by nbclient)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return shell is not None and "IPKernelApp" in shell.config


def show_or_save(fig, path: str | Path) -> Path | None:
    """Display `fig` in a notebook; elsewhere save it as a PNG at `path` and return that path."""
    if in_notebook():
        from IPython.display import display
        display(fig)
        return None
    return save_png(fig, path)


def finished(fig):
    """Lay `fig` out and detach it from pyplot, so that it shows once (as the value returned) in notebooks."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    plt.close(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Save `fig` as a PNG at `path`, creating its folder (on rank 0 only, in a distributed run)."""
    from .distributed import is_rank0
    path = Path(path)
    if not is_rank0():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


class TablePrinter:
    """Prints dict rows as a fixed-width text table, the header before the first row."""

    def __init__(self, write: Callable[[str], None] = print, width: int = 8):
        self.write, self.width, self.columns = write, width, None

    def __call__(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.widths = [max(self.width, len(c)) for c in self.columns]
            self.write("  ".join(c.rjust(w) for c, w in zip(self.columns, self.widths)))
        self.write("  ".join(format_value(row.get(c)).rjust(w) for c, w in zip(self.columns, self.widths)))


def format_value(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_table(rows: list[dict]) -> str:
    """A whole table as text: columns as wide as their widest cell, text left- and numbers right-aligned."""
    columns = list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()
    return "\n".join([line(columns)] + [line(r) for r in cells])
