"""ProgressCB: progress bars, the metrics table and a loss plot, without a host sync per batch."""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from ..display import in_notebook
from ..learner import Callback
from .metrics import MetricsCB, TablePrinter, format_value

__all__ = ["ProgressCB"]


def _bar_class():
    if in_notebook():
        try:
            from tqdm.notebook import tqdm as notebook_tqdm
            import ipywidgets  # noqa: F401  (tqdm's notebook bars need it)
            return notebook_tqdm
        except ImportError:
            pass
    return tqdm


class ProgressCB(Callback):
    """Bars for epochs and batches, the metrics table, and the training loss per batch.

    Batch losses stay on the device and are read together every `loss_every` batches (one host
    sync per read, not per batch). In a terminal the MetricsCB table is printed above the bars;
    in a notebook it is an HTML table and, unless `plot=False`, a live plot shows
    the training loss per batch and the validation loss per epoch. `plot_loss()` draws that plot.
    """

    order = 60  # after MetricsCB, whose table output this callback takes over

    def __init__(self, loss_every: int = 10, plot: bool | None = None, plot_interval: float = 2.0):
        self.loss_every, self.plot, self.plot_interval = loss_every, plot, plot_interval
        self.train_losses: list[float] = []
        self.valid_losses: list[tuple[int, float]] = []

    def before_fit(self, learn) -> None:
        self.notebook = in_notebook()
        self.live_plot = self.notebook and self.plot is not False
        self.train_losses, self.valid_losses, self._pending = [], [], []
        self._n_train_batches, self._last_plot, self._plot_handle, self._table = 0, 0., None, None
        self.bar_cls = _bar_class()
        self.epoch_bar = self.bar_cls(total=learn.n_epochs, desc="epochs", unit="epoch", dynamic_ncols=True)
        self.batch_bar = None
        for cb in learn.cbs:
            if isinstance(cb, MetricsCB):
                cb.log = self._log_row
        self._printer = TablePrinter(self.epoch_bar.write)
        self._rows: list[dict] = []

    def before_epoch(self, learn) -> None:
        phase = "train" if learn.training else "valid"
        self.batch_bar = self.bar_cls(total=learn.n_iter, desc=f"{phase} {learn.epoch}", leave=False,
                                      dynamic_ncols=True)
        if learn.training:
            self._n_train_batches = learn.n_iter

    def after_batch(self, learn) -> None:
        self.batch_bar.update(1)
        if learn.training:
            self._pending.append(learn.loss.detach())
            if len(self._pending) >= self.loss_every:
                self._read_losses()
                if self.live_plot and time.monotonic() - self._last_plot > self.plot_interval:
                    self._update_plot()

    def after_epoch(self, learn) -> None:
        self._read_losses()
        self.epoch_bar.update(learn.epoch + 1 - self.epoch_bar.n)
        if self.live_plot:
            self._update_plot()

    def cleanup_epoch(self, learn) -> None:
        if self.batch_bar is not None:
            self.batch_bar.close()
            self.batch_bar = None

    def cleanup_fit(self, learn) -> None:
        self._read_losses()
        self.cleanup_epoch(learn)
        self.epoch_bar.close()

    def _read_losses(self) -> None:
        if self._pending:
            self.train_losses += torch.stack(self._pending).float().tolist()
            self._pending = []
            if self.batch_bar is not None:
                self.batch_bar.set_postfix(loss=f"{self.train_losses[-1]:.3f}", refresh=False)

    def _log_row(self, row: dict) -> None:
        if row.get("train") == "eval" and "loss" in row:
            self.valid_losses.append((row["epoch"], row["loss"]))
        if not self.notebook:
            self._printer(row)
            return
        from IPython.display import HTML, display
        self._rows.append(row)
        html = _html_table(self._rows)
        if self._table is None:
            self._table = display(HTML(html), display_id=True)
        else:
            self._table.update(HTML(html))

    def plot_loss(self):
        """A Figure of the training loss per batch and the validation loss at the end of each epoch."""
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(self.train_losses) + 1), self.train_losses, label="train (per batch)", lw=1)
        if self.valid_losses:
            xs = [(epoch + 1) * self._n_train_batches for epoch, _ in self.valid_losses]
            ax.plot(xs, [loss for _, loss in self.valid_losses], "o-", label="valid (per epoch)")
        ax.set(xlabel="training batch", ylabel="loss", title="Loss")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        return fig

    def _update_plot(self) -> None:
        from IPython.display import display
        fig = self.plot_loss()
        if self._plot_handle is None:
            self._plot_handle = display(fig, display_id=True)
        else:
            self._plot_handle.update(fig)
        self._last_plot = time.monotonic()


def _html_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{c}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{format_value(row.get(c))}</td>" for c in rows[0]) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
