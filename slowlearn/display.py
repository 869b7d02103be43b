"""Showing results: notebook detection, progress, text tables, and figures (shown once in notebooks, left
open for `plt.show()` in scripts, saved as PNG when asked)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

__all__ = ["in_notebook", "live_output", "progress", "progress_html", "subplots", "integer_xticks", "save_png",
           "finished", "TablePrinter", "format_value", "format_table"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, or a notebook executed by nbclient)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return shell is not None and "IPKernelApp" in shell.config


def live_output() -> bool:
    """True where progress can be redrawn in place: a notebook, or a terminal on stderr (where tqdm
    writes). False for a file or a pipe (a batch job's log, CI), where plain lines fit better."""
    return in_notebook() or sys.stderr.isatty()


def progress(items: Iterable, total: int, desc: str) -> Iterator:
    """Iterate over `items` showing progress: an HTML progress line in a notebook, a tqdm bar on a
    terminal, and elsewhere (a log file) one line saying what is being done."""
    if in_notebook():
        yield from _html_progress(items, total, desc)
    elif sys.stderr.isatty():
        from tqdm import tqdm
        yield from tqdm(items, total=total, desc=desc, mininterval=2.)
    else:
        print(f"{desc}: {total} item{'s' * (total != 1)}", file=sys.stderr, flush=True)
        yield from items


def progress_html(value: int, total: int, text: str) -> str:
    """A notebook's progress line: an HTML progress bar followed by `text`."""
    return f'<progress value="{value}" max="{max(total, 1)}" style="width:240px"></progress> {text}'


def _html_progress(items: Iterable, total: int, desc: str, interval: float = 0.5) -> Iterator:
    from IPython.display import HTML, display
    start = last = time.monotonic()

    def html(n: int):
        return HTML(progress_html(n, total, f"{desc}: {n}/{total} · {time.monotonic() - start:.1f} s"))
    line = display(html(0), display_id=True)
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        if time.monotonic() - last > interval:
            line.update(html(n))
            last = time.monotonic()
    line.update(html(n))


def subplots(*args, **kwargs):
    """`plt.subplots`, with pyplot imported on first use (it takes a while to import)."""
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def integer_xticks(ax) -> None:
    """Ticks at whole numbers only on the x axis (batches and epochs have no 2.5); a single point
    gets one tick in the middle instead of a 0.95..1.05 range. Call after plotting."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = ax.get_xlim()
    if high - low < 1:
        middle = round((low + high) / 2)
        ax.set_xlim(middle - 0.5, middle + 0.5)
        ax.set_xticks([middle])


def finished(fig, path: str | Path | None = None, show: bool = True):
    """Lay `fig` out, save it as a PNG at `path` if given, and return it, open in pyplot: a script's
    `plt.show()` shows it, a notebook shows it once at the end of the cell (after any change the cell
    makes to it), also when it is the cell's value. `show=False` closes it instead: for figures the
    caller displays or saves itself."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    if path is not None:
        save_png(fig, path)
    if not show:
        plt.close(fig)
    elif in_notebook():
        fig._ipython_display_ = partial(_show_once, fig)
    return fig


def _show_once(fig) -> None:
    """Show `fig` in the notebook and close it, so that the inline backend, which shows every open
    figure at the end of a cell, does not show it a second time (returning a figure as a cell's value
    otherwise shows it twice). Later cells that display it show it again."""
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure
    from IPython.display import display
    plt.close(fig)
    display({"image/png": print_figure(fig, "png", bbox_inches="tight"), "text/plain": repr(fig)}, raw=True)


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
    """A whole table as text: columns as wide as their widest cell, text left- and numbers right-aligned.

    >>> print(format_table([{"layer": "conv", "params": 208}, {"layer": "total", "params": 30282}]))
    layer  params
    conv      208
    total   30282
    """
    columns = list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()
    return "\n".join([line(columns)] + [line(r) for r in cells])
