"""Tracking a run: checkpoints, early stopping, the NaN guard, lr on plateau, and a CSV log."""
from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim import lr_scheduler

from ..callback import Callback, CancelFitException
from ..checkpoint import CheckpointError, check_mid_epoch_resumable, save_checkpoint
from ..checkpoint_io import check_checkpoint_file
from ..device import bare_model
from ..distributed import all_reduce_sum, rank0_print
from .gradients import steps_after_this_batch
from .schedule import BaseSchedulerCB

__all__ = ["latest_metric", "MonitorCB", "CheckpointCB", "EarlyStoppingCB", "TerminateOnNaNCB", "ReduceLROnPlateauCB",
           "Preempted"]


def latest_metric(learn, name: str) -> float:
    """The latest value of a MetricsCB column: `valid_loss`, `train_loss`, `valid_accuracy`, ..."""
    phase, _, key = name.partition("_")
    for row in reversed(learn.history):
        if row.get("phase") == phase and key in row:
            return row[key]
    names = sorted({f"{r.get('phase')}_{k}" for r in learn.history for k in r if k not in ("epoch", "phase")})
    raise KeyError(f"No metric '{name}' in learn.history (needs MetricsCB); available: {names or 'none yet'}")


LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "perplexity")
HIGHER_IS_BETTER = ("accuracy", "acc", "auc", "auroc", "f1", "fbeta", "precision", "recall", "r2", "iou", "jaccard",
                    "dice", "bleu", "rouge", "psnr", "ssim")


def _mode(monitor: str, mode: str | None, owner: str) -> str:
    """`mode` when given, else the direction the monitor's name tells (a part of the name, any case, of
    `LOWER_IS_BETTER` or `HIGHER_IS_BETTER`); a name that tells neither is refused rather than guessed."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        return mode
    name = monitor.lower()
    if any(word in name for word in LOWER_IS_BETTER):
        return "min"
    if any(word in name for word in HIGHER_IS_BETTER):
        return "max"
    raise ValueError(f"{owner}(monitor='{monitor}') cannot tell from the name whether a higher or a lower value is "
                     f"better: pass mode='min' (lower is better) or mode='max' (higher is better).")


class MonitorCB(Callback):
    """Base of the callbacks that watch one metric: `monitor` names a phase and a MetricsCB column
    ("valid_loss", "train_accuracy", ...), `mode` says whether "min" or "max" is better. By default the name
    tells: "min" for losses and errors (a name holding loss, error, mse, mae, rmse or perplexity, in any case),
    "max" for scores such as accuracy, acc, auc, f1, precision, recall, r2, iou or dice (`HIGHER_IS_BETTER`);
    any other name is refused when the callback is made, asking for `mode`. A NaN or infinite value is never an
    improvement (a diverged epoch never becomes the best). At `before_fit` the name is checked against the
    columns this fit will produce (`learn.metric_names`, for the phases it runs), so a wrong name fails before any
    training, listing the available ones (subclasses therefore run after MetricsCB: `order` > 50).
    `monitor=None` watches nothing.
    The values come from MetricsCB's rows, which hold the metrics reduced over the ranks of a distributed
    run, so every rank takes the same decision (stop, save, cut the lr) at the same epoch."""

    def __init__(self, monitor: str | None, mode: str | None = None):
        self.monitor, self.mode = monitor, _mode(monitor, mode, type(self).__name__) if monitor else None

    def before_fit(self, learn) -> None:
        if self.monitor is not None:
            phases = ["train", "valid"] if learn.valid_phase else ["train"]
            available = [f"{phase}_{name}" for phase in phases for name in learn.metric_names]
            if self.monitor not in available:
                raise ValueError(f"{type(self).__name__} monitors '{self.monitor}', which this fit does not "
                                 f"compute; available: {', '.join(available) or 'none (add a MetricsCB)'}.")
        if hasattr(super(), "before_fit"):  # e.g. BaseSchedulerCB's, for ReduceLROnPlateauCB
            super().before_fit(learn)

    def monitored_value(self, learn) -> float | None:
        """The monitored metric's latest value at the end of its phase; None at the end of the other."""
        if learn.training != self.monitor.startswith("train_"):
            return None
        return latest_metric(learn, self.monitor)

    def improved(self, value: float, best: float | None, min_delta: float = 0.) -> bool:
        """Whether `value` beats `best` by more than `min_delta`; NaN or infinity never does."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best - min_delta if self.mode == "min" else value > best + min_delta


class Preempted(SystemExit):
    """The fit stopped on SIGTERM after saving a checkpoint; as an uncaught exception it ends the program with
    exit code 143 (128 + SIGTERM, what a process killed by SIGTERM reports), without a traceback."""

    def __init__(self, message: str):
        super().__init__(143)
        self.message = message


class _StopRequest:
    """SIGTERM, caught during a fit as a request to stop at an optimizer step: the same step on every process of
    a distributed run. There each process sends its flag with an all-reduce that runs while the next batch trains
    (on a CPU gloo group, so nothing waits for the GPU) and reads the sum one step later: every process reads the
    same sums at the same steps. The flags travel on a gloo group of their own, so they never share a queue with
    DDP's gradient all-reduces. The previous SIGTERM handler is put back when the fit ends."""

    def __init__(self):
        self.requested, self._installed, self._previous, self._pending, self._sum = False, False, None, None, None
        self._group = None  # made once: a new process group every fit would pile up

    def install(self) -> None:
        self.requested, self._pending = False, None
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self._previous, self._installed = signal.signal(signal.SIGTERM, self._handler), True
        distributed = dist.is_initialized() and dist.get_world_size() > 1
        if distributed and self._group is None:  # its own group: never interleaved with DDP's gradient all-reduces
            self._group = dist.new_group(backend="gloo")
        self._agree = distributed

    def _handler(self, signum, frame) -> None:
        self.requested = True

    def finish(self) -> None:
        """Wait for the last flag's all-reduce, so that none is left running when the fit ends (a process that
        exits with one running can abort)."""
        if self._pending is not None:
            self._pending.wait()
            self._pending = None

    def uninstall(self) -> None:
        if self._installed:  # None: a handler set outside Python, which signal cannot put back; the default then
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        self._installed, self._previous, self._pending = False, None, None

    def agreed(self) -> bool:
        """Whether to stop now (in a distributed run: whether any process had been asked one step earlier)."""
        if not self._agree:
            return self.requested
        stop = False
        if self._pending is not None:
            self._pending.wait()
            stop = bool(self._sum.item())
        self._sum = torch.tensor([int(self.requested)])
        self._pending = dist.all_reduce(self._sum, group=self._group, async_op=True)
        return stop


def _resumable_mid_epoch(dl) -> bool:
    try:
        check_mid_epoch_resumable(dl, "")
    except CheckpointError:
        return False
    return True


class CheckpointCB(MonitorCB):
    """Saves complete checkpoints (see `slowlearn.checkpoint`) during training.

    `keep="last"` (the default without `monitor`) writes `path` at the end of every epoch, and with
    `every` (an int) every `every` training batches too (a mid-epoch checkpoint resumes
    mid-epoch; with gradient accumulation a save inside an accumulation window waits for the window's
    optimizer step; a shuffling torch DataLoader cannot resume mid-epoch, so `every=N` with one is
    refused at the start of the fit). `keep="best"` (the default with `monitor`, e.g. "valid_loss")
    writes `path` at the end of an epoch only when that metric improved (`mode` "min"/"max", by
    default from the metric's name: see `MonitorCB`).
    `keep="both"` keeps both side by side in the folder `path`: `last.pt` and `best.pt`. A path that could
    never be written (a folder where a checkpoint file goes, a file where its folder goes) is refused when the
    fit starts, before any training.
    The best value carries over from fit to fit (unlike EarlyStoppingCB's count): the best file stays
    the best of all of them, e.g. over both stages of `fine_tune`; a new CheckpointCB starts afresh.
    Continue a run with `learn.fit(n_epochs, resume=path)`, or `resume="auto"` (from the last checkpoint
    when there is one, else afresh: the same script for the first start and every restart).

    With `on_sigterm` (the default), SIGTERM (what schedulers and spot instances send before they stop a job)
    saves a checkpoint at the next optimizer step (or the end of the epoch's validation; the end of the epoch
    with a shuffling torch DataLoader, which cannot resume mid-epoch) to the last checkpoint's path
    (`<path>-preempted.pt` with keep="best"), says so, and ends the program with exit code 143 (`Preempted`);
    resuming from it continues exactly. In a distributed run every process stops at the same step (CheckpointCB
    must be on all of them). The previous SIGTERM handler is back after the fit.
    """

    order = 90  # after MetricsCB, the schedulers and the loggers (85): the checkpoint holds their latest state

    def __init__(self, path: str | os.PathLike, every: str | int = "epoch", monitor: str | None = None,
                 mode: str | None = None, keep: str | None = None, on_sigterm: bool = True):
        if every != "epoch" and not (isinstance(every, int) and every > 0):
            raise ValueError(f"every must be 'epoch' or a positive number of batches, got {every!r}")
        keep = keep or ("best" if monitor else "last")
        if keep not in ("last", "best", "both"):
            raise ValueError(f"keep must be 'last', 'best' or 'both', got {keep!r}")
        if keep != "last" and monitor is None:
            raise ValueError(f"CheckpointCB(keep={keep!r}) needs monitor= (e.g. 'valid_loss') to know what is best")
        if keep == "best" and every != "epoch":
            raise ValueError(f"every={every} batches writes the last checkpoint: use keep='last' or keep='both'")
        super().__init__(monitor, mode)
        path = Path(path)
        self.last_path = (path / "last.pt" if keep == "both" else path) if keep != "best" else None
        self.best_path = (path / "best.pt" if keep == "both" else path) if keep != "last" else None
        self.path, self.every, self.keep = path, every, keep
        self.best: float | None = None
        self._due = False
        self.on_sigterm, self._stop = on_sigterm, _StopRequest() if on_sigterm else None

    @property
    def resume_path(self) -> Path | None:
        """The file `fit(resume="auto")` continues from: the last checkpoint (None with keep="best")."""
        return self.last_path

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self._check_paths()
        if isinstance(self.every, int):
            check_mid_epoch_resumable(learn.dls.train, f"CheckpointCB(every={self.every})")
        self._due = False
        if self._stop is not None:
            self._stop.install()
            self._stop_mid_epoch = _resumable_mid_epoch(learn.dls.train)

    def after_batch(self, learn) -> None:
        if not learn.training:
            return
        if isinstance(self.every, int):
            self._due = self._due or (learn.iter + 1) % self.every == 0
        if not steps_after_this_batch(learn):  # save at optimizer steps only: no gradient half-accumulated
            return
        stop = self._stop is not None and self._stop.agreed() and self._stop_mid_epoch
        if self._due or stop:
            save_checkpoint(learn, self._preempted_path, epoch=learn.epoch, iter=learn.iter + 1)
            self._due = False
        if stop:
            self._preempted(learn, f"after batch {learn.iter + 1} of epoch {learn.epoch}")

    def _check_paths(self) -> None:
        owner = f"CheckpointCB('{self.path}', keep='{self.keep}')"
        if self.keep == "both":
            owner += f", which keeps last.pt and best.pt in the folder {self.path},"
        files = [self.last_path, self.best_path, self._preempted_path if self.on_sigterm else None]
        for file in dict.fromkeys(file for file in files if file is not None):
            check_checkpoint_file(file, owner)

    @property
    def _preempted_path(self) -> Path:
        """Where mid-epoch and SIGTERM checkpoints go: the last checkpoint's path (keep="best": beside it)."""
        return self.last_path or self.path.with_name(f"{self.path.stem}-preempted{self.path.suffix or '.pt'}")

    def _preempted(self, learn, where: str) -> None:
        message = (f"SIGTERM received: saved a checkpoint {where} to {self._preempted_path} and stopped; continue "
                   f"with fit(..., resume='auto') or resume='{self._preempted_path}' (--resume on the command line)")
        rank0_print(message, flush=True)
        self._stop.finish()  # every process stops here: none leaves its last all-reduce running
        raise Preempted(message)

    def after_fit(self, learn) -> None:
        if self._stop is not None:
            self._stop.finish()

    def cleanup_fit(self, learn) -> None:
        if self._stop is not None:
            self._stop.uninstall()

    def after_epoch(self, learn) -> None:
        if self.best_path is not None:
            value = self.monitored_value(learn)
            if value is not None and self.improved(value, self.best):
                self.best = value
                self._save_epoch(learn, self.best_path)
        if self.last_path is not None and learn.in_last_phase:
            self._save_epoch(learn, self.last_path)
        if learn.in_last_phase and self._stop is not None and self._stop.agreed():
            if self.last_path is None:  # else just saved
                self._save_epoch(learn, self._preempted_path)
            self._preempted(learn, f"at the end of epoch {learn.epoch}")

    def _save_epoch(self, learn, path: Path) -> None:
        if learn.in_last_phase:
            save_checkpoint(learn, path, epoch=learn.epoch + 1)
        else:  # a monitor on train_* fires before the valid phase: a resume goes on with that phase
            save_checkpoint(learn, path, epoch=learn.epoch, iter=learn.n_iter, train_done=True)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


class EarlyStoppingCB(MonitorCB):
    """Stops training when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    It stops at the end of that epoch, once every callback has handled it: it sets `learn.stop_reason`, which
    the Learner honours after the epoch's phases and `after_epoch` handlers (so with a `train_*` monitor the
    epoch's validation still runs). A CheckpointCB thus saves the stopping epoch with this callback's count,
    and records the stop: resuming that checkpoint is refused, as the run is over.

    With `restore_best`, the weights of the best epoch (a copy on the model's device, taken when the
    metric improves) are put back into the model when the fit ends, however it ends (Keras'
    `restore_best_weights`); `best_epoch` says which. With WeightAveragingCB validating on the average,
    that average is what was scored and what comes back. Each fit starts its own count (best, wait,
    weights): a later fit, such as `fine_tune`'s unfrozen stage, gets its full patience even when it
    starts worse than an earlier fit ended. After restoring, `learn.weights_epoch` is the best epoch, so
    that `learn.export` records that epoch's metrics with its weights.
    """

    order = 88  # after the loggers (85), before CheckpointCB (90): its checkpoint holds this epoch's count and stop
    state_per_fit = True  # each fit starts its own count

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, min_delta: float = 0., mode: str | None = None,
                 restore_best: bool = False):
        super().__init__(monitor, mode)
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self._reset()
        self._in_fit = False  # cleanup_fit restores only this fit's best weights, not an earlier fit's

    def _reset(self) -> None:
        self.best, self.wait, self.stopped_epoch, self.best_epoch, self.best_weights = None, 0, None, None, None

    def before_fit(self, learn) -> None:
        super().before_fit(learn)
        self._reset()
        self._in_fit = True

    def after_epoch(self, learn) -> None:
        value = self.monitored_value(learn)
        if value is None:
            return
        if self.improved(value, self.best, self.min_delta):
            self.best, self.wait, self.best_epoch = value, 0, learn.epoch
            if self.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in bare_model(learn.model).state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = learn.epoch
            learn.stop_reason = f"{self.monitor} has not improved on {self.best:.4g} for {self.patience} epochs"
            rank0_print(f"Early stopping at epoch {learn.epoch}: {learn.stop_reason}")

    def cleanup_fit(self, learn) -> None:
        if self._in_fit and self.best_weights is not None:
            bare_model(learn.model).load_state_dict(self.best_weights)
            learn.weights_epoch = self.best_epoch  # so that an export reports this epoch's metrics, not the last's
        self._in_fit = False

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.best_epoch, self.best_weights = state.get("best_epoch"), state.get("best_weights")


class TerminateOnNaNCB(Callback):
    """Stops the fit at the first NaN or infinite loss, saying at which epoch and batch.

    Checks every training batch, so it reads the loss back each batch (a host sync). Steps that an
    fp16 GradScaler skips for overflowing gradients have a finite loss and do not stop the fit. `stopped_at` is the
    (epoch, batch) where the last fit stopped, None when it did not.
    """

    order = 0

    def __init__(self):
        self.stopped_at: tuple[int, int] | None = None

    def before_fit(self, learn) -> None:
        self.stopped_at = None

    def after_loss(self, learn) -> None:
        if not learn.training:
            return
        bad = all_reduce_sum((~torch.isfinite(learn.loss.detach())).float().reshape(1))  # every rank stops together
        if bad.item():
            self.stopped_at = (learn.epoch, learn.iter)
            rank0_print(f"Terminating: the loss is {learn.loss.item()} at epoch {learn.epoch}, batch {learn.iter}")
            raise CancelFitException()


class ReduceLROnPlateauCB(MonitorCB, BaseSchedulerCB):
    """torch's ReduceLROnPlateau, stepped with `monitor` at the end of each epoch (kwargs: factor, patience, ...)."""

    order = BaseSchedulerCB.order

    def __init__(self, monitor: str = "valid_loss", mode: str | None = None, **kwargs):
        MonitorCB.__init__(self, monitor, mode)
        BaseSchedulerCB.__init__(self, lr_scheduler.ReduceLROnPlateau, mode=self.mode, **kwargs)

    def after_epoch(self, learn) -> None:
        value = self.monitored_value(learn)
        if value is not None:
            self.scheduler.step(value)


