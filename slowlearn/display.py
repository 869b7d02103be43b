"""Showing results: notebook detection, and figures shown in notebooks or saved as PNG elsewhere."""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["in_notebook", "show_or_save", "save_png"]


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


def save_png(fig, path: str | Path) -> Path:
    """Save `fig` as a PNG at `path`, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
