"""ProgressCB: progress bars, the metrics table and a loss plot, without a host sync per batch."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..callback import Callback
from ..device import DeviceFloats, model_device
from ..display import (
    TablePrinter,
    finished,
    format_value,
    in_notebook,
    integer_xticks,
    live_output,
    progress_html,
    subplots,
)
from ..distributed import is_rank0
from ..groups import group_lrs

__all__ = ["ProgressCB"]


class ProgressCB(Callback):
    """Progress of epochs and batches, the metrics table, and the training loss per batch.

    `verbose` says how much is shown, as Keras' `fit(verbose=)`:
      0     nothing;
      1     progress bars: in a terminal tqdm bars, with the MetricsCB table printed above them; in a
            notebook one HTML progress line, an HTML table and, unless `plot=False`, a live plot of
            the training loss per batch and the validation loss per epoch (redrawn at most every
            `plot_interval` seconds);
      2     plain lines, for log files: one at the start saying what runs, then the table, one row
            per epoch and phase, with no carriage returns or escape sequences (nothing if `table=False`);
      None  (default) 1 in a notebook or when the output is a terminal, 2 otherwise (a file, a pipe,
            a batch job's log).
    The training losses are the Learner's record of the fit (`learn.batch_losses`): on a device they wait
    there and are read together (one host sync per read, not per batch), every `loss_every` batches where
    a bar or the notebook shows the loss, otherwise at the end of each epoch. A batch calls this callback
    only where a bar counts batches or shows the loss. `table=False` hides the metrics table. `plot_loss()`
    draws the loss plot at any time.
    """

    order = 60  # shows the rows MetricsCB sends to `learn.metrics_log`, which it fills for the fit
    reads_loss_value = True  # so the Learner keeps the losses (learn.batch_losses)

    def __init__(self, loss_every: int = 10, plot: bool | None = None, plot_interval: float = 2.0,
                 table: bool = True, verbose: int | None = None):
        if verbose not in (None, 0, 1, 2):
            raise ValueError(f"ProgressCB(verbose={verbose!r}): use 0 (nothing), 1 (progress bars), 2 (one line "
                             f"per epoch and phase) or None (bars on a terminal or in a notebook, lines otherwise)")
        self.loss_every, self.plot, self.plot_interval, self.table = loss_every, plot, plot_interval, table
        self.verbose = verbose
        self._losses = DeviceFloats()
        self.valid_losses: list[tuple[int, float]] = []
        self._valid_after: list[int] = []  # for each validation loss, the training batches of the fit before it
        self.view = None
        self._in_fit = False

    @property
    def train_losses(self) -> list[float]:
        """The training loss of every batch so far."""
        return self._losses.read()

    def before_fit(self, learn) -> None:
        notebook = in_notebook()
        verbose = self.verbose if self.verbose is not None else (1 if live_output() else 2)
        if not is_rank0() or verbose == 0:
            self.view = NullView()
        elif verbose == 2:  # the start line introduces the table: neither without it
            self.view = PlainView(learn) if self.table else NullView()
        elif notebook:
            self.view = NotebookView(learn.n_epochs, self.table)
        else:
            self.view = TerminalView(learn.n_epochs)
        self.live_plot = notebook and verbose == 1 and self.plot is not False
        self._shows_batches, self._shows_loss = self.view.shows_batches, self.view.shows_loss
        self._losses, self.valid_losses, self._valid_after = learn.batch_losses, [], []
        self._last_plot, self._plot_handle = 0., None
        learn.metrics_log = self._log_row
        self._in_fit = True

    def before_epoch(self, learn) -> None:
        phase = "train" if learn.training else "valid"
        self.view.start_phase(f"{phase} {learn.epoch}", learn.n_iter)
        # a batch that no bar counts and whose loss nothing shows leaves nothing to do: no call per batch
        learn.dispatch.set_active(self, "after_batch", self._shows_batches or (learn.training and self._shows_loss))

    def after_batch(self, learn) -> None:
        if self._shows_batches:
            self.view.advance()
        if learn.training and self._shows_loss and self._losses.n_pending >= self.loss_every:
            self._read_losses()
            if self.live_plot and time.monotonic() - self._last_plot > self.plot_interval:
                self._update_plot()

    def after_epoch(self, learn) -> None:
        self._read_losses()
        self.view.epochs_done(learn.epoch + 1)
        if self.live_plot:
            self._update_plot()

    def cleanup_epoch(self, learn) -> None:
        self.view.end_phase()

    def cleanup_fit(self, learn) -> None:
        if not self._in_fit:  # an earlier callback's before_fit failed: this fit showed nothing
            return
        learn.metrics_log = None
        self._read_losses()
        self.view.close()
        self._in_fit = False

    def _read_losses(self) -> None:
        if self._losses.n_pending:
            self.view.show_loss(self._losses.read()[-1])

    def _log_row(self, row: dict) -> None:
        if row.get("phase") == "valid" and "loss" in row:
            self.valid_losses.append((row["epoch"], row["loss"]))
            self._valid_after.append(len(self._losses.values) + self._losses.n_pending)
        if self.table:
            self.view.row(row)

    def plot_loss(self, path: str | Path | None = None, show: bool = True):
        """A Figure of the training loss per batch and the validation loss at the end of each epoch
        (saved as PNG at `path`; `show=False` makes it without showing it)."""
        fig, ax = subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(self.train_losses) + 1), self.train_losses, label="train (per batch)", lw=1)
        if self.valid_losses:
            ax.plot(self._valid_after, [loss for _, loss in self.valid_losses], "o-", label="valid (per epoch)")
        ax.set(xlabel="training batch", ylabel="loss", title="Loss")
        integer_xticks(ax)
        ax.legend()
        return finished(fig, path, show)

    def _update_plot(self) -> None:
        from IPython.display import display
        fig = self.plot_loss(show=False)
        if self._plot_handle is None:
            self._plot_handle = display(fig, display_id=True)
        else:
            self._plot_handle.update(fig)
        self._last_plot = time.monotonic()


class NullView:
    """What ranks other than 0 show: nothing."""

    shows_loss = shows_batches = False

    def advance(self) -> None:  # written out: it runs every batch
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class PlainView:
    """Plain lines for log files: what runs, then one table row per epoch and phase."""

    shows_loss = shows_batches = False

    def __init__(self, learn):
        phases = [f"{len(learn.dls.train)} training"] if learn.train_phase else []
        if learn.valid_phase:
            phases.append(f"{len(learn.dls.valid)} validation")
        device = learn.device or model_device(learn.model)
        training = f", {type(learn.opt).__name__} at {_lr_text(learn)}" if learn.train_phase else ""
        self.write(f"fit: {learn.n_epochs} epoch{'s' * (learn.n_epochs != 1)} of {' and '.join(phases)} batches, "
                   f"{type(learn.model).__name__} on {device}{training}")
        self.row = TablePrinter(self.write)

    @staticmethod
    def write(line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    def advance(self) -> None:  # progress within an epoch is not shown
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _lr_text(learn) -> str:
    """The lrs the fit trains at (`learn.fit_lrs`: a one-cycle fit's peaks), as one number, or one per param group
    where they differ, and which groups are frozen (a frozen group's BatchNorm layers may still train)."""
    groups = learn.opt.param_groups
    lrs = list(getattr(learn, "fit_lrs", None) or group_lrs(learn.lr, len(groups)))
    text = f"lr {lrs[0]:g}" if len(set(lrs)) == 1 else "lrs " + ", ".join(f"{lr:g}" for lr in lrs)
    frozen = [str(i + 1) for i, group in enumerate(groups) if any(not p.requires_grad for p in group["params"])]
    if frozen:
        text += f" (param group{'s' * (len(frozen) > 1)} {', '.join(frozen)} of {len(groups)} frozen)"
    return text


class TerminalView:
    """tqdm bars for epochs and batches; table rows are written above the bars."""

    shows_loss = shows_batches = True

    def __init__(self, n_epochs: int):
        self.epochs = tqdm(total=n_epochs, desc="epochs", unit="epoch", dynamic_ncols=True)
        self.batches = None
        self.table = TablePrinter(self.epochs.write)

    def start_phase(self, desc: str, total: int) -> None:
        self.batches = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def advance(self) -> None:
        self.batches.update(1)

    def show_loss(self, loss: float) -> None:
        if self.batches is not None:
            self.batches.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def epochs_done(self, n: int) -> None:
        self.epochs.update(n - self.epochs.n)

    def row(self, row: dict) -> None:
        self.table(row)

    def end_phase(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None

    def close(self) -> None:
        self.end_phase()
        self.epochs.close()


class NotebookView:
    """One HTML progress line and an HTML metrics table, updated in place (no widgets needed)."""

    shows_loss = shows_batches = True

    def __init__(self, n_epochs: int, table: bool = True, interval: float = 0.2):
        from IPython.display import HTML, display
        self.html, self.interval = HTML, interval
        self.n_epochs, self.done, self.desc, self.n, self.total, self.loss = n_epochs, 0, "", 0, 0, None
        self.start, self.last = time.monotonic(), 0.
        self.line = display(HTML(""), display_id=True)
        self.table = display(HTML(""), display_id=True) if table else None
        self.rows = []

    def start_phase(self, desc: str, total: int) -> None:
        self.desc, self.n, self.total = desc, 0, total
        self._render()

    def advance(self) -> None:
        self.n += 1
        if time.monotonic() - self.last > self.interval:
            self._render()

    def show_loss(self, loss: float) -> None:
        self.loss = loss

    def epochs_done(self, n: int) -> None:
        self.done = n
        self._render()

    def row(self, row: dict) -> None:
        self.rows.append(row)
        head = "".join(f"<th>{c}</th>" for c in self.rows[0])
        body = "".join("<tr>" + "".join(f"<td>{format_value(r.get(c))}</td>" for c in self.rows[0]) + "</tr>"
                       for r in self.rows)
        self.table.update(self.html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"))

    def end_phase(self) -> None:
        pass

    def close(self) -> None:
        self.desc = ""
        self._render()

    def _render(self) -> None:
        elapsed = time.monotonic() - self.start
        parts = [f"epoch {self.done}/{self.n_epochs}"]
        if self.desc:
            parts.append(f"{self.desc}: {self.n}/{self.total}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        parts.append(f"{elapsed:.1f} s")
        value, total = (self.n, self.total) if self.desc else (self.done, self.n_epochs)
        self.line.update(self.html(progress_html(value, total, " · ".join(parts))))
        self.last = time.monotonic()
