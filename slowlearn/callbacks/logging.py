"""TensorBoardCB: a run's curves, hyper-parameters, final metrics and confusion matrix for TensorBoard."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch

from ..callback import Callback
from ..deploy import confusion_matrix
from ..device import bare_model
from ..distributed import all_reduce_sum, is_rank0
from ..show import plot_confusion
from .schedule import get_hyper

__all__ = ["CSVLoggerCB", "TensorBoardCB"]

class TensorBoardCB(Callback):
    """Writes TensorBoard event files into `log_dir` (view them with `tensorboard --logdir <log_dir>`).

    Every scalar is written at the global step, the number of training batches so far (over all fits):
      train/step_loss     the mean training loss since the last logged step, at every `log_every`-th step and
                          at the end of each training phase (read back in one host sync each time)
      opt/lr/group_<i>, opt/mom/group_<i>   each param group's lr and momentum (or Adam's beta1), at
                          the same steps
      train/<m>, valid/<m>  every MetricsCB column (loss, accuracy, ...) at the end of each phase
    The HParams tab shows the run's hyper-parameters (model, optimizer, lr, epochs, batch size, loss,
    plus `hparams`) with its final metrics, `final/<phase>_<metric>`: they are rewritten after every
    epoch, so an early stop or a crash still shows the latest values. With `confusion_matrix`, the
    last validation phase's confusion matrix is drawn as an image at the end of the fit (classifiers:
    predictions (N, classes), integer targets); it is counted on the device while validating, with no
    extra pass over the data. Only rank 0 writes. A resumed run first drops the events written after
    its checkpoint (TensorBoard's purge_step), so its curves have no doubled stretch.
    """

    order = 85  # after MetricsCB (its row of learn.history), before CheckpointCB (the step count it saves)

    def __init__(self, log_dir: str | os.PathLike = "runs/tensorboard", log_every: int = 50,
                 hparams: dict | None = None, confusion_matrix: bool = True):
        if not (isinstance(log_every, int) and log_every >= 1):
            raise ValueError(f"log_every must be a positive number of batches, got {log_every!r}")
        self.log_dir, self.log_every, self.hparams = Path(log_dir), log_every, dict(hparams or {})
        self.confusion_matrix = confusion_matrix
        self.step, self.writer, self.confusion = 0, None, None
        self._purge_from = None

    def before_fit(self, learn) -> None:
        self._losses, self._metric_names, self.confusion = [], None, None

    def after_batch(self, learn) -> None:
        if learn.training:
            self._losses.append(learn.loss.detach())
            self.step += 1
            if self.step % self.log_every == 0:
                self._write_training_scalars(learn)
        elif self.confusion_matrix:
            self._count_confusion(learn.preds, learn.batch[-1])

    def before_epoch(self, learn) -> None:
        if not learn.training:
            self._counts = None

    def after_epoch(self, learn) -> None:
        if learn.training and self._losses:
            self._write_training_scalars(learn)
        if not learn.training and self.confusion_matrix and self._counts is not None:
            self.confusion = all_reduce_sum(self._counts)  # every rank takes part; rank 0 draws it
        row = learn.history[-1] if learn.history else None
        phase = "train" if learn.training else "valid"
        if row is None or row.get("epoch") != learn.epoch or row.get("phase") != phase:
            return  # no MetricsCB row for this phase
        for name, value in _metrics(row).items():
            self._scalar(f"{phase}/{name}", value)
        if learn.in_last_phase:
            self._write_final_metrics(learn)

    def cleanup_fit(self, learn) -> None:
        if self.writer is None:
            return
        if self.confusion is not None:
            classes = getattr(learn.dls, "classes", None)
            self.writer.add_figure("confusion_matrix", plot_confusion(self.confusion.cpu(), classes), self.step)
        self.writer.close()
        self.writer = None

    # --- writing
    def _scalar(self, tag: str, value: float) -> None:
        writer = self._writer()
        if writer is not None:
            writer.add_scalar(tag, value, self.step)

    def _writer(self):
        if self.writer is None and is_rank0():
            from torch.utils.tensorboard import SummaryWriter  # imported on use: it costs 0.3 s at import
            self.writer = SummaryWriter(self.log_dir, purge_step=self._purge_from)
            self._purge_from = None
        return self.writer

    def _write_training_scalars(self, learn) -> None:
        loss = torch.stack(self._losses).float().mean().item()
        self._losses = []
        self._scalar("train/step_loss", loss)
        for i, group in enumerate(learn.opt.param_groups):
            self._scalar(f"opt/lr/group_{i}", group["lr"])
            if "betas" in group or "momentum" in group:
                self._scalar(f"opt/mom/group_{i}", get_hyper(group, "mom"))

    def _count_confusion(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        if preds.ndim != 2 or targets.ndim != 1 or targets.is_floating_point():
            return
        counts = confusion_matrix(targets, preds.argmax(-1), preds.shape[-1])
        self._counts = counts if self._counts is None else self._counts + counts

    def _write_final_metrics(self, learn) -> None:
        """The latest row of each phase of this fit as `final/<phase>_<metric>`, and the run's hparams
        with those metric names once (the HParams tab shows each metric's latest value)."""
        final = {}
        for row in learn.history[-2:]:
            if row.get("epoch") == learn.epoch:
                final |= {f"final/{row['phase']}_{k}": v for k, v in _metrics(row).items()}
        writer = self._writer()
        if writer is None:
            return
        if self._metric_names is None:
            from torch.utils.tensorboard.summary import hparams
            self._metric_names = list(final)
            experiment, session_start, _ = hparams(self._hparams(learn), dict.fromkeys(final, 0.))
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session_start)
        for tag, value in final.items():
            writer.add_scalar(tag, value, self.step)

    def _hparams(self, learn) -> dict:
        loader = learn.dls.train
        found = {"model": type(bare_model(learn.model)).__name__, "opt_func": _name(learn.opt_func),
                 "lr": learn.lr, "n_epochs": learn.n_epochs, "bs": getattr(loader, "bs", None) or loader.batch_size,
                 "loss_func": _name(learn.loss_func)} | self.hparams
        return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in found.items()}

    # --- checkpoints
    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self._purge_from = self.step + 1  # what the interrupted run wrote after its checkpoint


def _metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "phase")}


def _name(f) -> str:
    f = getattr(f, "func", f)  # functools.partial
    return getattr(f, "__name__", type(f).__name__)


class CSVLoggerCB(Callback):
    """Writes one CSV row per epoch and phase: the MetricsCB row, the lr and the phase's seconds.

    A new fit starts a new file (unless `append`, which keeps the rows already there); a resumed fit
    keeps the file as it was at its checkpoint (earlier runs' rows included) and appends after it.
    """

    order = 90

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path, self.append = Path(path), append
        self._end = 0  # the log's size in bytes after the last row of this run: what a resume keeps

    def before_fit(self, learn) -> None:
        self._columns, self._resume_at = None, None
        self._end = self.path.stat().st_size if self.append and self.path.exists() else 0

    def before_epoch(self, learn) -> None:
        self._start = time.perf_counter()

    def after_epoch(self, learn) -> None:
        if not learn.history:
            return
        row = {**learn.history[-1], "lr": learn.opt.param_groups[0]["lr"],
               "time": round(time.perf_counter() - self._start, 3)}
        self._write(row)

    def _write(self, row: dict) -> None:
        if not is_rank0():
            return
        if self._columns is None:
            self._columns = list(row)
            self._open_file()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self._columns, extrasaction="ignore").writerow(row)
            self._end = f.tell()

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._resume_at and self.path.exists():
            with open(self.path, "r+b") as f:  # drop the rows written after the checkpoint
                f.truncate(self._resume_at)
        elif self._resume_at is not None or not (self.append and self.path.exists()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)

    def state_dict(self) -> dict:
        return {"end": self._end}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = self._end = state["end"] if "end" in state else self._legacy_end(state["rows"])

    def _legacy_end(self, rows: int) -> int:
        """Checkpoints written before "end" hold the number of rows this run had written."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return sum(len(line) for line in f.readlines()[:1 + rows])
