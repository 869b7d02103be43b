"""Logging a run: CSVLoggerCB (a CSV row per epoch and phase), TensorBoardCB and MLflowCB (curves over the
training steps, hyper-parameters, final metrics), on shared bases: LoggerCB (best-effort writing on rank 0)
and ScalarLoggerCB (the step count, the step-loss cadence, the curves and their resumption)."""
from __future__ import annotations

import csv
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from ..callback import Callback
from ..deploy import confusion_matrix
from ..device import bare_model
from ..distributed import all_reduce_sum, is_rank0
from ..groups import group_lrs
from ..show import plot_confusion
from .precision import MixedPrecisionCB
from .schedule import OneCycleCB, get_hyper

__all__ = ["LoggerCB", "ScalarLoggerCB", "CSVLoggerCB", "TensorBoardCB", "MLflowCB"]

T = TypeVar("T")
POINTS_PER_EPOCH = 10  # the per-step curves get at least this many points per epoch (log_every is lowered)


class LoggerCB(Callback):
    """Base of the callbacks that write a run's numbers to files or a tracking store.

    Writing never costs the run: only rank 0 writes, and the first write that fails (a read-only or deleted
    folder, a full disk, an unreachable or unwritable tracking store) is a warning naming the callback, where
    it writes and the error; the callback then writes nothing more in that fit, while training, the other
    callbacks (checkpoints included) and the cleanup go on. The next fit tries again. Subclasses do every
    write through `attempt`.
    """

    order = 85  # after MetricsCB (its row of learn.history), before CheckpointCB (the state it saves)

    @property
    def destination(self) -> str:
        """Where the callback writes, for the warning (a folder, a file, a tracking URI)."""
        return "its destination"

    def before_fit(self, learn) -> None:
        self.failed, self.rank0 = False, is_rank0()
        self._outer_error = sys.exc_info()[1]  # a fit run inside an `except` block: that error is not the fit's

    def attempt(self, what: str, write: Callable[[], T]) -> T | None:
        """`write()` on rank 0, unless an earlier write of this fit failed; a failure is a warning (once)."""
        if getattr(self, "failed", False) or not is_rank0():
            return None
        try:
            return write()
        except Exception as e:  # noqa: BLE001 -- whatever stops a logger must not stop training
            self.failed = True
            warnings.warn(f"{type(self).__name__} could not {what} ({self.destination}): {type(e).__name__}: {e}. "
                          f"It logs nothing more in this fit; training goes on.", RuntimeWarning, stacklevel=2)
            return None

    def fit_failed(self) -> bool:
        """In `cleanup_fit`: whether the fit is ending on an error (an exception or KeyboardInterrupt, not a
        cancel such as early stopping): the loop runs the cleanup inside the `except` block that caught it."""
        error = sys.exc_info()[1]
        return error is not None and error is not getattr(self, "_outer_error", None)


class ScalarLoggerCB(LoggerCB):
    """Base of the loggers of curves over the training steps (TensorBoardCB, MLflowCB).

    Every point is written at `step`, the number of training batches so far (over all fits):
      train/step_loss     the mean training loss of the batches since the last point: every `log_every`
                          batches of an epoch and at its last batch. The losses stay on the device and are
                          read back once per point (one host sync; on the CPU the Learner's `loss_value`).
                          `log_every` is lowered where an epoch would hold fewer than 10 points (25 batches
                          per epoch: every 2nd), so that short epochs still show curves, not one point per
                          epoch.
      opt/lr/group_<i>, opt/mom/group_<i>   each param group's lr and momentum (or Adam's beta1), at the
                          same points (a one-cycle schedule shows its shape)
      train/<m>, valid/<m>  every MetricsCB column (loss, accuracy, ...) at the end of each phase
      final/<phase>_<m>   the last value of each of them, once, when the fit ends (or is stopped early)
    Checkpoints hold `step` and the losses waiting for the next point, so a resumed run writes the same
    points as an uninterrupted one, its first step loss averaging the same batches.
    """

    reads_loss_value = True

    def __init__(self, log_every: int = 50):
        if not (isinstance(log_every, int) and not isinstance(log_every, bool) and log_every >= 1):
            raise ValueError(f"log_every must be a positive number of batches, got {log_every!r}")
        self.log_every, self.step = log_every, 0
        self._losses, self._carried = [], (0., 0)  # losses (floats, or tensors on a device); (sum, count) saved
        self._rows_at_start = 0

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self._losses, self._carried, self._rows_at_start = [], (0., 0), len(learn.history)
        self.every = _cadence(self.log_every, getattr(learn.dls, "train", None))

    def after_batch(self, learn) -> None:
        if not learn.training:
            return
        self.step += 1
        if self.failed or not self.rank0:
            return
        value = learn.loss_value
        self._losses.append(value if value is not None else learn.loss.detach())
        if (learn.iter + 1) % self.every == 0 or learn.iter + 1 == learn.n_iter:
            self._write_step_point(learn)

    def after_epoch(self, learn) -> None:
        row = learn.history[-1] if len(learn.history) > self._rows_at_start else None
        phase = "train" if learn.training else "valid"
        if row is None or row.get("epoch") != learn.epoch or row.get("phase") != phase:
            return  # no MetricsCB row for this phase
        self.write({f"{phase}/{name}": value for name, value in _metrics(row).items()})

    def cleanup_fit(self, learn) -> None:
        failed = self.fit_failed()
        final = {} if failed else _final_metrics(learn.history[self._rows_at_start:])
        if final:
            self.attempt("write the final metrics", lambda: self.write_final(final, learn))
        self.attempt("finish the run", lambda: self.finish(learn, failed))

    # --- what subclasses write (each may raise: `write` and `cleanup_fit` go through `attempt`)
    def write(self, scalars: dict[str, float]) -> None:
        """Write `scalars` (tag: value) at the current step, unless writing failed earlier in this fit."""
        self.attempt("write", lambda: self.write_scalars(scalars))

    def write_scalars(self, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def write_final(self, final: dict[str, float], learn) -> None:
        """Write the final metrics, once at the end of a fit."""
        self.write_scalars(final)

    def finish(self, learn, failed: bool) -> None:
        """Close the writer or the run at the end of a fit (`failed`: it ended on an error)."""

    # --- the step loss
    def _write_step_point(self, learn) -> None:
        total, count = self._carried
        loss = (self._pending_sum() + total) / (len(self._losses) + count)
        self._losses, self._carried = [], (0., 0)
        scalars = {"train/step_loss": loss}
        for i, group in enumerate(learn.opt.param_groups):
            scalars[f"opt/lr/group_{i}"] = float(group["lr"])
            if "betas" in group or "momentum" in group:
                scalars[f"opt/mom/group_{i}"] = float(get_hyper(group, "mom"))
        self.write(scalars)

    # --- checkpoints
    def state_dict(self) -> dict:
        """The step and the training losses since the last point (read back here: a checkpoint is a sync anyway)."""
        total, count = self._carried
        total += self._pending_sum()
        return {"step": self.step, "pending_loss": total, "pending_batches": count + len(self._losses)}

    def _pending_sum(self) -> float:
        """The training losses since the last point, summed: those kept on a device with one read."""
        on_device = [loss for loss in self._losses if isinstance(loss, torch.Tensor)]
        read = torch.stack(on_device).double().sum().item() if on_device else 0.
        return read + sum(loss for loss in self._losses if not isinstance(loss, torch.Tensor))

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self._losses, self._carried = [], (state.get("pending_loss", 0.), state.get("pending_batches", 0))


def _cadence(log_every: int, loader) -> int:
    """`log_every`, lowered so that an epoch of `loader` holds at least POINTS_PER_EPOCH points."""
    n = len(loader) if loader is not None else log_every
    return max(1, min(log_every, n // POINTS_PER_EPOCH))


def _metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "phase")}


def _final_metrics(rows: list[dict]) -> dict[str, float]:
    """`final/<phase>_<metric>`: the latest row of each phase among `rows` (this fit's)."""
    final = {}
    for row in rows:
        final |= {f"final/{row.get('phase')}_{k}": v for k, v in _metrics(row).items()}
    return final


def _name(f) -> str:
    f = getattr(f, "func", f)  # functools.partial
    return getattr(f, "__name__", type(f).__name__)


def batch_size(learn) -> int | None:
    """The training batch size: the loader's `bs` or `batch_size`, else the first dimension of the batch in
    hand (any loader the Learner takes, a list of batches included); None when neither says."""
    loader = learn.dls.train
    for attr in ("bs", "batch_size"):
        if isinstance(getattr(loader, attr, None), int):
            return getattr(loader, attr)
    batch = getattr(learn, "batch", None)
    inputs = batch[0] if isinstance(batch, (list, tuple)) and batch else None
    return int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) and inputs.ndim else None


def run_params(learn) -> dict:
    """A run's hyper-parameters: model, optimizer, lr (a one-cycle fit's peak), epochs, batch size, loss,
    precision and the number of param groups."""
    cycle = next((cb for cb in learn.cbs if isinstance(cb, OneCycleCB) and cb.lr_max is not None), None)
    precision = next((cb.name_of_dtype for cb in learn.cbs if isinstance(cb, MixedPrecisionCB)), "fp32")
    found = {"model": type(bare_model(learn.model)).__name__, "opt_func": _name(learn.opt_func),
             "lr": cycle.lr_max if cycle is not None else learn.lr, "n_epochs": learn.n_epochs,
             "bs": batch_size(learn), "loss_func": _name(learn.loss_func), "precision": precision,
             "param_groups": len(learn.opt.param_groups)}
    return {k: v for k, v in found.items() if v is not None}


def group_params(learn) -> dict:
    """Each param group's peak lr (its share of `lr`), weight decay, parameter count and whether it trains."""
    groups = learn.opt.param_groups
    lr = run_params(learn)["lr"]
    try:
        lrs = group_lrs(lr, len(groups))
    except (TypeError, ValueError):  # an lr that does not spread over these groups: the groups' own
        lrs = [group["lr"] for group in groups]
    found = {}
    for i, (group, peak) in enumerate(zip(groups, lrs)):
        found |= {f"group_{i}/lr": float(peak), f"group_{i}/weight_decay": group.get("weight_decay", 0.),
                  f"group_{i}/params": sum(p.numel() for p in group["params"]),
                  f"group_{i}/trains": any(p.requires_grad for p in group["params"])}
    return found


def _plain(value) -> bool | int | float | str:
    """A hyper-parameter as a number or a string: `slice(1e-05, 0.001)` for a slice of lrs."""
    if isinstance(value, slice):
        return f"slice({', '.join(str(v) for v in (value.start, value.stop) if v is not None)})"
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardCB(ScalarLoggerCB):
    """Writes TensorBoard event files into `log_dir` (view them with `tensorboard --logdir <log_dir>`).

    The curves of ScalarLoggerCB (step loss, lrs and momentums every `log_every` batches, every metric of
    every epoch and phase, `final/<phase>_<metric>` once when the fit ends). The HParams tab shows the run's
    hyper-parameters (model, optimizer, lr, epochs, batch size, loss, precision, plus `hparams`) with its
    final metrics. With `confusion_matrix`, the last validation phase's confusion matrix is drawn as an image
    at the end of the fit (classifiers: predictions (N, classes), integer targets); it is counted on the
    device while validating, with no extra pass over the data. Only rank 0 writes, and a folder that cannot
    be written (read-only, deleted during the run) is a warning, never the end of training (LoggerCB). A
    resumed run first drops the events written after its checkpoint (TensorBoard's purge_step), so its
    curves have no doubled stretch.
    """

    def __init__(self, log_dir: str | os.PathLike = "runs/tensorboard", log_every: int = 50,
                 hparams: dict | None = None, confusion_matrix: bool = True):
        super().__init__(log_every)
        self.log_dir, self.hparams = Path(log_dir), dict(hparams or {})
        self.confusion_matrix = confusion_matrix
        self.writer, self.confusion = None, None
        self._purge_from, self._hparams_written = None, False

    @property
    def destination(self) -> str:
        return f"log_dir {self.log_dir}"

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self.confusion = None

    def after_batch(self, learn) -> None:
        super().after_batch(learn)
        if not learn.training and self.confusion_matrix:
            self._count_confusion(learn.preds, learn.batch[1])  # (inputs, targets, ...)

    def before_epoch(self, learn) -> None:
        if not learn.training:
            self._counts = None

    def after_epoch(self, learn) -> None:
        if not learn.training and self.confusion_matrix and self._counts is not None:
            self.confusion = all_reduce_sum(self._counts)  # every rank takes part; rank 0 draws it
        super().after_epoch(learn)

    # --- writing
    def write_scalars(self, scalars: dict[str, float]) -> None:
        writer = self._writer()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, self.step)

    def _writer(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imported on use: it costs 0.3 s at import
            self.writer = SummaryWriter(self.log_dir, purge_step=self._purge_from)
            self._purge_from = None
        return self.writer

    def write_final(self, final: dict[str, float], learn) -> None:
        """The final metrics, and once per run the HParams tab's hyper-parameters with those metric names."""
        writer = self._writer()
        if not self._hparams_written:
            from torch.utils.tensorboard.summary import hparams
            experiment, session_start, _ = hparams(self._hparams(learn), dict.fromkeys(final, 0.))
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session_start)
            self._hparams_written = True
        self.write_scalars(final)

    def finish(self, learn, failed: bool) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None  # a writer that failed to close is not used again
        if self.confusion is not None and not failed:
            figure = plot_confusion(self.confusion.cpu(), getattr(learn.dls, "classes", None))
            writer.add_figure("confusion_matrix", figure, self.step)
        writer.close()

    def cleanup_fit(self, learn) -> None:
        super().cleanup_fit(learn)
        if self.writer is not None:  # a write failed: close what can be closed, quietly
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 -- the failed write has been reported already
                pass

    def _count_confusion(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        if preds.ndim != 2 or targets.ndim != 1 or targets.is_floating_point():
            return
        counts = confusion_matrix(targets, preds.argmax(-1), preds.shape[-1])
        self._counts = counts if self._counts is None else self._counts + counts

    def _hparams(self, learn) -> dict:
        return {k: _plain(v) for k, v in (run_params(learn) | self.hparams).items()}

    # --- checkpoints
    def state_dict(self) -> dict:
        return super().state_dict() | {"hparams_written": self._hparams_written}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._purge_from = self.step + 1  # what the interrupted run wrote after its checkpoint
        self._hparams_written = state.get("hparams_written", False)


class CSVLoggerCB(LoggerCB):
    """Writes one CSV row per epoch and phase: the MetricsCB row, the lr and the phase's seconds.

    The callback's first fit to write a row starts a new file (unless `append`, which keeps the rows already
    there); its later fits (`fine_tune`'s unfrozen stage, another `fit`) add their rows to it, as TensorBoardCB's
    and MLflowCB's curves go on over all their fits (a column that a later fit adds, such as a new metric, is
    added to the file, blank in the earlier rows): a new CSVLoggerCB starts a new file. A resumed fit keeps the
    file as it was at its checkpoint (earlier runs' rows included) and appends after it. Only
    rank 0 writes, and a file that cannot be written is a warning, never the end of training (LoggerCB).
    The file goes into `learn.log_files`, so trackers (MLflowCB) attach it to their run.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path, self.append = Path(path), append
        self._end = 0  # the log's size in bytes after the last row of this run
        self._lines = 0  # and its lines then, the header's included: what a resume keeps (a later fit may rewrite it)
        self._started, self._resume_at = False, None  # _started: a fit of this callback has begun the file

    @property
    def destination(self) -> str:
        return str(self.path)

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self._columns = None
        self._keep_rows = self.append or self._started
        if self._resume_at is None:  # else a finished fit's checkpoint, restored before this fit (fine_tune going on
            # from the frozen stage's end), said where the file ends: its rows are kept, as if the process had lived on
            kept = self._keep_rows and self.path.is_file()
            self._end, self._lines = (self.path.stat().st_size, self._line_count()) if kept else (0, 0)
        learn.log_files.append(self.path)

    def cleanup_fit(self, learn) -> None:
        self._resume_at = None  # a resume's place in the file belongs to its fit

    def before_epoch(self, learn) -> None:
        self._start = time.perf_counter()

    def after_epoch(self, learn) -> None:
        if not learn.history:
            return
        row = {**learn.history[-1], "lr": learn.opt.param_groups[0]["lr"],
               "time": round(time.perf_counter() - self._start, 3)}
        self.attempt("write a row", lambda: self._write(row))

    def _write(self, row: dict) -> None:
        if self._columns is None:
            self._columns = list(row)
            self._open_file()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self._columns, extrasaction="ignore").writerow(row)
            self._end, self._lines = f.tell(), self._lines + 1

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = True
        if self._resume_at and self.path.exists():
            with open(self.path, "r+b") as f:  # drop the rows written after the checkpoint
                f.truncate(self._resume_at)
        elif self._resume_at is not None or not (self._keep_rows and self.path.exists()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
            self._lines = 1
            return
        self._columns = self._kept_columns()
        self._lines = self._line_count()

    def _kept_columns(self) -> list[str]:
        """The columns of the file that this fit adds rows to: its header, and at its end the columns of this fit
        that it lacks (a metric that a later fit added), for which the file is written again, blank in its rows."""
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0] if rows else []
        new = [column for column in self._columns if column not in header]
        if new:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerows([header + new, *(row + [""] * len(new) for row in rows[1:])])
        return header + new

    def state_dict(self) -> dict:
        return {"end": self._end, "lines": self._lines}

    def load_state_dict(self, state: dict) -> None:
        if "lines" in state:  # whole lines: a later fit's new column may have written the file again since
            self._lines = state["lines"]
            self._resume_at = self._end = self._size_of_lines(self._lines)
        else:  # checkpoints written before "lines" hold the size, and before "end" the number of this run's rows
            self._resume_at = self._end = state["end"] if "end" in state else self._size_of_lines(1 + state["rows"])

    def _size_of_lines(self, lines: int) -> int:
        """The size in bytes of the file's first `lines` lines (of all of them where it has fewer; 0 without it)."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return sum(len(line) for line in f.readlines()[:lines])

    def _line_count(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for _ in f)


class MLflowCB(ScalarLoggerCB):
    """Logs the run to MLflow (`pip install 'slowlearn[mlflow]'`; see it with `mlflow ui --backend-store-uri
    <tracking_uri>`): by default into a SQLite file, `runs/mlflow.db`, with the artifacts beside it.

    The run (in `experiment`, named `run_name` or by MLflow) gets:
      params     model, optimizer, lr (a one-cycle fit's peak), epochs, batch size, loss, precision, the
                 param groups (each one's lr share, weight decay, parameter count, whether it trains), plus
                 `params`; a later fit logs the values it changes as `fit_<n>/<name>`
      metrics    the curves of ScalarLoggerCB: train/step_loss and opt/lr|mom/group_<i> every `log_every`
                 batches, train/<m> and valid/<m> per epoch, final/<phase>_<m> once at the end of each fit
      artifacts  at the end of each fit, the files or folders of `artifacts` and the fit's logs (`learn.log_files`:
                 a CSVLoggerCB's) that exist; after it, `log_artifacts(path, ...)` adds more (an export, plots)
    Points are sent in batches, every `flush_secs` seconds (or 1000 points) and at the end of the fit, so
    training waits on the store rarely. One callback is one MLflow run, over all its fits. Resumable: the run
    id goes into checkpoints, and `fit(resume=...)` continues that run, writing no step twice. Only rank 0
    logs; a store that cannot be reached or written is a warning, and training goes on (LoggerCB), and when the
    fit ends the run is still sent the points buffered and ended (FINISHED, FAILED or KILLED) where it can be: HTTP
    stores get 2 retries and a 10 s timeout, unless MLFLOW_HTTP_REQUEST_MAX_RETRIES or
    MLFLOW_HTTP_REQUEST_TIMEOUT say otherwise. A new SQLite store takes a few seconds to create.
    """

    flush_secs = 30.

    def __init__(self, tracking_uri: str = "sqlite:///runs/mlflow.db", experiment: str = "slowlearn",
                 run_name: str | None = None, log_every: int = 50, params: dict | None = None,
                 artifacts: Iterable[str | os.PathLike] = ()):
        if not _has("mlflow"):
            raise ImportError("MLflowCB needs the mlflow package: pip install 'slowlearn[mlflow]' (or mlflow; "
                              "mlflow-skinny cannot write the default SQLite store).")
        if isinstance(tracking_uri, str) and tracking_uri.startswith("sqlite:") and not _has("sqlalchemy"):
            raise ImportError(f"MLflowCB(tracking_uri={tracking_uri!r}): a SQLite store needs the full mlflow "
                              f"package, and only mlflow-skinny is installed: pip install 'slowlearn[mlflow]'.")
        if not isinstance(tracking_uri, str) or not tracking_uri:
            raise ValueError(f"tracking_uri must be a store's URI such as 'sqlite:///runs/mlflow.db' or "
                             f"'http://host:5000', got {tracking_uri!r}")
        super().__init__(log_every)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.params, self.artifacts = dict(params or {}), [Path(p) for p in artifacts]
        self.run_id: str | None = None
        self._client, self._running, self._buffer, self._fits, self._resumed = None, False, [], 0, False
        self._logged: dict[str, int] = {}  # a resumed run's last step per metric in the store

    @property
    def name(self) -> str:
        return "mlflow"  # learn.mlflow

    @property
    def destination(self) -> str:
        return f"tracking store {self.tracking_uri}"

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self._running, self._buffer, self._fits = False, [], self._fits + 1
        self._learn = learn  # for the params, at the first write

    def cleanup_fit(self, learn) -> None:
        super().cleanup_fit(learn)
        if self._running:  # a write failed in this fit, so `attempt` skipped `finish`: the run must still end
            try:
                self.finish(learn, self.fit_failed())
            except Exception as e:  # noqa: BLE001 -- a logger never stops the fit, nor replaces its error
                warnings.warn(f"MLflowCB could not finish the run {self.run_id} ({self.destination}): "
                              f"{type(e).__name__}: {e}.", RuntimeWarning, stacklevel=2)
        self._learn = None

    # --- writing
    def write_scalars(self, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric
        self._start_run()
        now = int(time.time() * 1000)
        self._buffer += [Metric(tag, float(value), now, self.step) for tag, value in scalars.items()]
        if len(self._buffer) >= 1000 or time.monotonic() - self._last_flush >= self.flush_secs:
            self._flush()

    def _flush(self) -> None:
        """Send the buffered points, but those a resumed run's interrupted run has sent already."""
        points = [m for m in self._buffer if m.step > self._logged.get(m.key, -1)]
        with _bounded_http():
            for i in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per request
                self._client.log_batch(self.run_id, metrics=points[i:i + 1000])
        self._buffer, self._last_flush = [], time.monotonic()

    def finish(self, learn, failed: bool) -> None:
        """Send the buffered points and the artifacts, then end the run, whatever became of the points."""
        if not self._running:
            return
        interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        status = "FAILED" if failed and not interrupted else "KILLED" if failed else "FINISHED"
        self._running = False  # ended once: what fails below is not tried again
        try:
            self._flush()
            if not failed and not self.failed:
                self._log_artifacts([*self.artifacts, *learn.log_files], missing_ok=True)
        finally:
            with _bounded_http():
                self._client.set_terminated(self.run_id, status)

    def log_artifacts(self, *paths: str | os.PathLike) -> None:
        """Copy files or folders into the run's artifacts, e.g. an export or plots written after the fit."""
        if self.run_id is None:
            if is_rank0() and not getattr(self, "failed", False):
                warnings.warn("MLflowCB.log_artifacts: there is no MLflow run yet (fit first); nothing logged.",
                              RuntimeWarning, stacklevel=2)
            return
        self.attempt("log artifacts", lambda: self._log_artifacts([Path(p) for p in paths], missing_ok=False))

    def _log_artifacts(self, paths: list[Path], missing_ok: bool) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing and not missing_ok:
            warnings.warn(f"MLflowCB: no such file, not logged: {', '.join(missing)}", RuntimeWarning, stacklevel=3)
        client = self._client or self._make_client()
        with _bounded_http():
            for path in (p for p in paths if p.exists()):
                if path.is_dir():
                    client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
                else:
                    client.log_artifact(self.run_id, str(path))

    # --- the run
    def _make_client(self):
        from mlflow import MlflowClient
        db = _sqlite_file(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _start_run(self) -> None:
        """On the first write of a fit: create the run, or continue this callback's (or a checkpoint's)."""
        if self._running:
            return
        client = self._client or self._make_client()
        with _bounded_http():
            run = self._existing_run(client) if self.run_id is not None else None
            if run is None:
                run = client.create_run(self._experiment_id(client), run_name=self.run_name, tags=_tags())
                self.run_id = run.info.run_id
            else:
                client.update_run(self.run_id, status="RUNNING")
            self._running, self._last_flush = True, time.monotonic()  # from here on, cleanup_fit ends the run
            self._logged = self._last_steps(client, run) if self._resumed else {}  # a new run has none
            self._log_params(client, run)
        self._resumed = False

    def _existing_run(self, client):
        from mlflow.exceptions import MlflowException
        try:
            return client.get_run(self.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        warnings.warn(f"MLflowCB: the run {self.run_id} (from the checkpoint) is not in {self.tracking_uri}: "
                      f"logging into a new run.", RuntimeWarning, stacklevel=2)
        return None

    def _experiment_id(self, client) -> str:
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        db = _sqlite_file(self.tracking_uri)
        where = (db.parent.resolve() / "mlartifacts").as_uri() if db is not None else None  # beside the database
        return client.create_experiment(self.experiment, artifact_location=where)

    def _last_steps(self, client, run) -> dict[str, int]:
        """The last step of each metric the interrupted run logged: a resumed run does not log those again."""
        return {key: max(m.step for m in client.get_metric_history(self.run_id, key)) for key in run.data.metrics}

    def _log_params(self, client, run) -> None:
        from mlflow.entities import Param
        learn = self._learn
        wanted = {k: str(_plain(v))[:6000] for k, v in (run_params(learn) | group_params(learn) | self.params).items()}
        logged, new = run.data.params, {}
        for key, value in wanted.items():
            key = key if logged.get(key, value) == value else f"fit_{self._fits}/{key}"  # params cannot change
            if logged.get(key, value) == value and key not in logged:
                new[key] = value
        params = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per request
            client.log_batch(self.run_id, params=params[i:i + 100])

    # --- checkpoints
    def state_dict(self) -> dict:
        """The run id, the step, the pending step losses and the points not sent to the store yet."""
        pending = [(m.key, m.value, m.timestamp, m.step) for m in self._buffer]
        return super().state_dict() | {"run_id": self.run_id, "fits": self._fits, "unsent": pending}

    def load_state_dict(self, state: dict) -> None:
        from mlflow.entities import Metric
        super().load_state_dict(state)
        self.run_id, self._fits, self._resumed = state.get("run_id"), state.get("fits", self._fits), True
        self._buffer = [Metric(*point) for point in state.get("unsent", [])]  # sent with the next points


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


def _tags() -> dict:
    from ..version import __version__
    return {"slowlearn.version": __version__}


@contextmanager
def _bounded_http():
    """MLflow retries an HTTP store for minutes by default; a logger tries briefly and goes on. The user's
    own settings of these variables win."""
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
