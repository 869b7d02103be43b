"""The Learner: a training loop whose every step is an event that callbacks can hook or replace.

```
fit(n_epochs)
  before_fit
  for epoch:  train phase, then valid phase (no_grad), each:
    before_epoch
      for batch: before_batch, predict, after_predict, get_loss, after_loss,
                 [train: backward, after_backward, step, after_step, zero_grad], after_batch
    after_epoch
  after_fit
cleanup_fit / cleanup_epoch / cleanup_batch always run, also after an error or a cancel.
An event that no callback of the fit handles is skipped without a call.
```
The callback protocol is in `callback.py`; the first batch of each phase is checked (`checks.py`). Every
public method of the Learner is written out here; where the work lives in a feature module (param groups
in `groups.py`, one-cycle and fine-tuning in `callbacks/schedule.py`, `lr_find` in `tuning.py`, checkpoints
in `checkpoint.py`, inference and export in `deploy/`), its body is one call to that module.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, checks, data, deploy, groups, models, tuning
from .arguments import check_range
from .callback import (
    VERBS,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelException,
    CancelFitException,
    CancelStepException,
    Dispatch,
    misplaced_cancel,
    note_origin,
)
from .callbacks import SuggestedLRs, schedule
from .checkpoint import (
    batches_from,
    check_resume,
    restore_setup,
    restore_weights,
    resume_point,
    resume_state,
    undo_point,
)
from .deploy import Prediction, Preds
from .device import DeviceFloats, drop_gradients
from .groups import check_lr, default_splitter

__all__ = ["Learner"]

# The fit's and the epoch's three events, named once (the batch level's are written out in `Learner._batches`).
LEVEL_EVENTS = {level: (f"before_{level}", f"after_{level}", f"cleanup_{level}") for level in ("fit", "epoch")}


class Learner:
    """Trains `model` on `dls` (a `DataLoaders`) with `loss_func`, an optimizer from `opt_func` and callbacks.

    The optimizer gets one param group per list of parameters that `splitter(model)` returns (default:
    everything but the last layer, and the last layer); `lr` is a number, `slice(lo, hi)` spread over
    the groups, or one lr per group (`groups.py`, which also has freeze/unfreeze and fine_tune).

    During a fit callbacks read `model, dls, opt, loss_func, n_epochs, epoch, training, dl, n_iter, iter,
    batch, preds, loss, loss_value` (the loss as a float from `after_loss` on, or None: see
    `Callback.reads_loss_value`), `pct_train` (fraction of training done), `train_phase` and `valid_phase` (whether
    the fit runs each: `fit(train=, valid=)`), `cbs` and `dispatch` (the fit's
    handlers, which `dispatch.wrap` can wrap, e.g. to time them, and `dispatch.set_active` switch off for a phase).
    What callbacks share lives in these slots, each set by one callback for the fit and put back after it:
      device        the device the fit trains on: this process's under DistributedCB, else DeviceCB's
      grad_scaler   the fp16 GradScaler (MixedPrecisionCB): unscale with it before touching gradients
      metrics_log   where MetricsCB sends each history row (ProgressCB's display); None: it prints a table
      metric_names  the columns MetricsCB adds to the history ("loss", "accuracy", ...)
      accumulate    micro-batches per optimizer step (GradientAccumulationCB); 1: a step every batch
      fit_lrs       each param group's lr this fit trains at (set at fit start from the optimizer; a one-cycle
                    fit's peaks, by OneCycleCB), for display
    And slots that outlive the fit (until the next one):
      batch_losses  the training loss of every batch of the fit, which the Learner keeps when a callback of
                    the fit reads losses (`reads_loss_value`): a `DeviceFloats` (`batch_losses.read()`
                    gives the floats; on a device the values wait there and are read in bulk), e.g. what
                    ProgressCB plots; empty otherwise
      fine_tune_stage "frozen" or "unfrozen" during the fits of `fine_tune`, else None: checkpoints record it, so
                    that resume="auto" goes on with the stage a file comes from
      weights_epoch the epoch whose weights the model holds when that is not the last one trained
                    (EarlyStoppingCB(restore_best=True) sets it; each fit clears it): exports report that
                    epoch's metrics
      stop_reason   why the fit stopped before `n_epochs` (EarlyStoppingCB sets it in `after_epoch`; each fit
                    clears it), None while it goes on: the Learner ends the fit once the epoch's phases and all
                    their handlers have run, so every callback sees that epoch (a CheckpointCB saves it, and its
                    checkpoint records the stop). Raising CancelFitException instead stops at once
      log_files     the files the fit's loggers write (CSVLoggerCB adds its log at `before_fit`; each fit starts
                    it empty), which trackers attach to their run (MLflowCB, as artifacts, when the fit ends)
    """

    def __init__(self, model: nn.Module, dls, loss_func: Callable = F.cross_entropy, lr: float = 0.1,
                 cbs: Iterable[Callback] = (), opt_func: Callable = torch.optim.SGD,
                 splitter: Callable[[nn.Module], list] = default_splitter):
        self.model, self.dls, self.loss_func, self.lr, self.opt_func = model, dls, loss_func, lr, opt_func
        self.splitter = splitter
        self.opt: torch.optim.Optimizer | None = None
        self.history: list[dict] = []
        self.training = False
        self.device = self.grad_scaler = self.metrics_log = None  # the shared slots, empty between fits
        self.metric_names, self.accumulate = (), 1
        self.weights_epoch: int | None = None
        self.fine_tune_stage: str | None = None
        self.stop_reason: str | None = None
        self.log_files: list[Path] = []
        self._fitting = False  # a fit started from inside a fit (by a callback) is refused
        self.fit_lrs: list[float] = []
        self.batch_losses = DeviceFloats()
        self._position = (0, 0)  # (epochs done, batches of the next one stepped on): what `save` records
        self._train_done = False  # the next epoch's training phase is over, its handlers run: `save` records it
        self.cbs = list(cbs)  # last: a callback's name never hides one of the attributes above

    def __repr__(self) -> str:
        cbs = ", ".join(type(cb).__name__ for cb in self.cbs)
        opt_func = getattr(self.opt_func, "__name__", self.opt_func)
        return f"Learner({type(self.model).__name__}, lr={self.lr}, opt_func={opt_func}, cbs=[{cbs}])"

    # The default loop verbs; a callback that defines `predict`, `get_loss`, ... replaces one.
    def _predict(self) -> None:
        self.preds = self.model(self.batch[0])

    def _get_loss(self) -> None:
        self.loss = self.loss_func(self.preds, *self.batch[1:])

    def _backward(self) -> None:
        self.loss.backward()

    def _step(self) -> None:
        self.opt.step()

    def _zero_grad(self) -> None:
        self.opt.zero_grad()  # torch's default frees the gradients (set_to_none=True); a keyword costs a dict a step

    def fit(self, n_epochs: int = 1, lr: float | slice | Sequence[float] | None = None, cbs: Sequence[Callback] = (), train: bool = True,
            valid: bool = True, reset_opt: bool = False, resume: str | os.PathLike | None = None) -> Learner:
        """Train for `n_epochs`; `cbs` are used for this fit only; `lr` sets the param groups' lrs (a number,
        `slice(lo, hi)` or one per group; else the optimizer keeps the lrs it has, e.g. where a one-cycle fit
        ended). `resume=path` continues the run saved at `path` up to a total of `n_epochs`; `resume="auto"`
        continues from the file of the fit's CheckpointCB when there is one, else starts afresh (see
        `checkpoint.resume_state`)."""
        check_range("n_epochs", n_epochs, 1, integer=True, owner="fit")
        if lr is not None:
            check_lr(lr, owner="fit")
        if self._fitting:
            raise RuntimeError("Learner.fit was called while this Learner is fitting (from a callback, or from a "
                               "method such as lr_find or fine_tune called in one): a Learner runs one fit at a time. "
                               "Call it after the running fit returns; to end the running fit early, raise "
                               "CancelFitException in the callback.")
        cbs = list(cbs)
        self.cbs += cbs
        self._fitting, self.weights_epoch, self.stop_reason, self.log_files = True, None, None, []
        self._undo_resume = None  # until a resumed checkpoint is accepted: puts back what restoring it changed
        try:
            checks.check_loaders(self.dls, train, valid)
            state = resume_state(self, resume)
            if state is not None:
                check_resume(self, state, n_epochs, lr)
                self._undo_resume = undo_point(self)
            self._prepare(lr, reset_opt)
            if state is not None:
                restore_weights(self, state)
                restore_setup(self, state)
            self.n_epochs, self.epoch, self.pct_train = n_epochs, 0, 0.
            self.train_phase, self.valid_phase = train, valid
            self.fit_lrs = [group["lr"] for group in self.opt.param_groups]
            self._run_level("fit", CancelFitException, lambda: self._epochs(train, valid, state))
        except BaseException as error:
            if self._undo_resume is not None:  # refused (or failed) before training on from the checkpoint
                self._undo_resume()
            if isinstance(error, CancelException):  # raised where no level catches it (a batch's in before_epoch)
                raise misplaced_cancel(error) from error
            raise
        finally:
            self._fitting, self._undo_resume = False, None
            for cb in cbs:  # the last of each (one in learn.cbs too is refused, and stays), unless it removed itself
                if cb in self.cbs:
                    del self.cbs[len(self.cbs) - 1 - self.cbs[::-1].index(cb)]
            self._name_callbacks()
        return self

    @property
    def in_last_phase(self) -> bool:
        """True during an epoch's last phase: valid, or train when fitting with `valid=False`."""
        return not self.training or not self.valid_phase

    def _prepare(self, lr, reset_opt: bool) -> None:
        if lr is not None:
            self.set_lr(lr)
        if self.opt is None or reset_opt:
            check_lr(self.lr, owner="Learner")
            self.opt = self.make_optimizer()
        self.dispatch = Dispatch(self.cbs)
        # The events some callback handles: the loop calls only those (an empty call costs about half a microsecond).
        self._handled = self.dispatch.handled
        # What runs each loop verb during this fit, in VERBS order: the callback that replaces it, or the
        # Learner's default; bound once per fit, so a batch pays no lookup for it.
        self._verbs = tuple(self.dispatch.bind_verb(verb, self, getattr(self, "_" + verb)) for verb in VERBS)
        # Whether a callback reads losses: then the first loss is checked, and the training losses are kept once
        # for all such callbacks (at most 1024 wait on a device).
        self.batch_losses, self._loss_readers = DeviceFloats(max_pending=1024), self.dispatch.reads_loss_value

    def callback(self, event: str) -> None:
        """Run every callback's handler of `event` (e.g. "after_batch"), in order; an error other than a cancel
        gets a note naming the callback and the event."""
        for cb, handler in self.dispatch.handlers[event]:  # written out (not `callback.call`): it runs 6x a batch
            try:
                handler(self)
            except CancelException:
                raise
            except Exception as error:
                note_origin(error, cb, event)
                raise

    def _run_level(self, level: str, cancel: type[CancelException], body: Callable[[], None]) -> None:
        before, after, cleanup = LEVEL_EVENTS[level]
        handled = self._handled
        try:
            if before in handled:
                self.callback(before)
            body()
            if after in handled:
                self.callback(after)
        except cancel:
            pass
        except BaseException as error:  # every cleanup runs; the error that ended the level stays the one raised
            self.dispatch.cleanup(cleanup, self, error)
            raise
        if cleanup in handled:
            self.dispatch.cleanup(cleanup, self)

    def _epochs(self, train: bool, valid: bool, resume_state: dict | None) -> None:
        start_epoch, start_iter = resume_point(self, resume_state)
        self._undo_resume = None  # accepted: from here on the Learner holds the resumed run
        self._position = (start_epoch, start_iter)
        self._train_done = bool(resume_state and resume_state.get("train_done"))  # saved before its validation
        for self.epoch in range(start_epoch, self.n_epochs):
            if train and self._train_done and self.epoch == start_epoch:  # over: its validation comes next
                self.pct_train = (self.epoch + 1) / self.n_epochs
            elif train:
                self._one_epoch(True, start_iter if self.epoch == start_epoch else 0)
            if valid:
                with torch.no_grad():
                    self._one_epoch(False)
            if self.stop_reason is not None:
                break

    def _one_epoch(self, training: bool, start_iter: int = 0) -> None:
        self.training = training
        self.model.train(training)
        self.dl = self.dls.train if training else self.dls.valid
        self.n_iter = len(self.dl)
        self._read_loss, self.loss_value = False, None  # decided at the phase's first loss (_one_batch)
        self._run_level("epoch", CancelEpochException, lambda: self._batches(start_iter))
        if self.in_last_phase:  # also after a callback cancelled the rest of the epoch
            self._position, self._train_done = (self.epoch + 1, 0), False
        elif training:
            self._train_done = True  # a resume from here goes on with this epoch's validation

    def _batches(self, start_iter: int) -> None:
        first_batch, one_batch, handled = self._first_batch, self._one_batch, self._handled
        for self.iter, self.batch in batches_from(self.dl, start_iter):
            if self.training:
                self.pct_train = (self.epoch + self.iter / self.n_iter) / self.n_epochs
            # The batch level as `_run_level` runs the others, written out: it runs every batch, and the call
            # and lookups of `_run_level` would cost about 1k CPU instructions each time.
            try:
                if "before_batch" in handled:
                    self.callback("before_batch")
                (first_batch if self.iter == start_iter else one_batch)()
                if "after_batch" in handled:
                    self.callback("after_batch")
            except CancelBatchException:
                pass
            except BaseException as error:
                self.dispatch.cleanup("cleanup_batch", self, error)
                raise
            if "cleanup_batch" in handled:
                self.dispatch.cleanup("cleanup_batch", self)
        if self.training:
            self.pct_train = (self.epoch + 1) / self.n_epochs
        if self.in_last_phase:
            self._position = (self.epoch + 1, 0)

    def _first_batch(self) -> None:
        with checks.first_batch(self):
            self._one_batch(first=True)

    def _one_batch(self, first: bool = False) -> None:
        handled = self._handled
        predict, get_loss, backward, step, zero_grad = self._verbs
        predict()
        if first:
            checks.check_targets(self.preds, self.batch, self.loss_func, getattr(self.dls, "classes", None))
        if "after_predict" in handled:
            self.callback("after_predict")
        get_loss()
        if "after_loss" in handled:
            self.loss_value = None  # not the last batch's: read below, after these handlers (they may change it)
            self.callback("after_loss")
        if first and self._loss_readers:
            checks.check_loss(self.loss)
            self._read_loss = self.loss.is_cpu
        if self._read_loss:  # one read for every callback that wants the float (Callback.reads_loss_value)
            self.loss_value = self.loss.item()
        if self.training:
            if self._loss_readers:
                self.batch_losses.append_loss(self)
            try:
                backward()
                if "after_backward" in handled:
                    self.callback("after_backward")
                step()
                self._position = (self.epoch, self.iter + 1)
                if "after_step" in handled:
                    self.callback("after_step")
                zero_grad()
            except CancelStepException:
                pass
            except CancelBatchException:  # the rest of the batch skipped, as before (its gradients left as they are)
                raise
            except BaseException:  # cut short between its backward pass and zero_grad: its gradients go into no step
                drop_gradients(self.model)
                raise

    # Callbacks: `learn.<name>` finds a callback of the list by its `name` (e.g. `learn.recorder`).
    @property
    def cbs(self) -> list[Callback]:
        """The callbacks of every fit: change them with `add_cb` and `remove_cb`, or assign a new list (a list
        changed in place gives its callbacks their `learn.<name>` at the next fit)."""
        return self._cbs

    @cbs.setter
    def cbs(self, cbs: list[Callback]) -> None:
        self._cbs = cbs
        self._name_callbacks()

    def _name_callbacks(self) -> None:
        """Set `learn.<cb.name>` for each callback (the first of a name; never over a real attribute). These are
        entries of the instance, not a `__getattr__`: a class with one makes every attribute read on it slow
        (Python 3.11 cannot specialise them), and a training step reads dozens."""
        own = self.__dict__
        for name, cb in own.pop("_named_cbs", {}).items():
            if own.get(name) is cb:
                del own[name]
        named: dict[str, Callback] = {}
        for cb in self._cbs:
            if cb.name not in named and cb.name not in own and not hasattr(type(self), cb.name):
                named[cb.name] = cb
        own.update(named)
        self._named_cbs = named

    def add_cb(self, cb: Callback) -> Learner:
        """Add `cb` to the callbacks of every later fit."""
        self.cbs.append(cb)
        self._name_callbacks()
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        """Remove `cb` from the callbacks of every later fit (a running fit calls it to its end)."""
        self.cbs.remove(cb)
        self._name_callbacks()
        return self

    # Training recipes on top of `fit` (callbacks/schedule.py, tuning.py).
    def fit_one_cycle(self, n_epochs: int, lr_max: float | slice | Sequence[float] | None = None,
                      pct_start: float = 0.3, div: float = 25., div_final: float = 1e4,
                      moms: tuple[float, float] | None = (0.95, 0.85), cbs: Sequence[Callback] = (),
                      precision: str | None = None, **fit_kwargs) -> Learner:
        """`fit(n_epochs)` under `OneCycleCB(lr_max, ...)` (`lr_max` defaults to `learn.lr`); `fit_kwargs`
        go to `fit` (`resume=path` continues a run). `precision` ("auto", "fp32", "bf16", "fp16") trains this
        fit in it, as `train_1cycle` does. See OneCycleCB for what the next fit trains at."""
        return schedule.fit_one_cycle(self, n_epochs, lr_max, pct_start, div, div_final, moms, cbs, precision,
                                      **fit_kwargs)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5., **kwargs) -> Learner:
        """fastai's transfer-learning recipe: `freeze_epochs` of one-cycle on the head alone, then unfreeze and
        `epochs` of one-cycle with lrs spread over the groups (see `callbacks.schedule.fine_tune`); `kwargs`
        (`precision=`, `cbs=`, ...) go to both `fit_one_cycle` calls."""
        return schedule.fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, **kwargs)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True) -> SuggestedLRs:
        """Exponential lr sweep over `num_it` batches that restores model, optimizer, RNGs and history exactly
        afterwards; returns `SuggestedLRs(valley, steep)` (see `tuning.lr_find`)."""
        return tuning.lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot)

    # Param groups, discriminative lrs, freezing (groups.py).
    def param_groups(self) -> list[list[nn.Parameter]]:
        """The splitter's groups of the (unwrapped) model, checked: every parameter in exactly one group."""
        return groups.param_groups(self)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """`opt_func` over the splitter's groups, each with its lr from `learn.lr` (see `group_lrs`)."""
        return groups.make_optimizer(self)

    def set_lr(self, lr: float | slice | Sequence[float]) -> None:
        """Set `learn.lr` and every param group's lr from it (a number, a slice or one lr per group); an
        `lr` that does not fit the groups, or is not a finite number >= 0, raises and changes nothing."""
        groups.set_lr(self, lr)

    def freeze_to(self, n: int, train_bn: bool = True) -> None:
        """Freeze the param groups before group `n` (negative counts from the end) and unfreeze the rest;
        with `train_bn` BatchNorm layers in frozen groups keep training (see `groups.freeze_to`)."""
        groups.freeze_to(self, n, train_bn)

    def freeze(self, train_bn: bool = True) -> None:
        """Train only the last param group (the head, with the default splitter); see `freeze_to`."""
        groups.freeze_to(self, -1, train_bn)

    def unfreeze(self) -> None:
        """Train every param group."""
        groups.freeze_to(self, 0)

    def frozen_state(self) -> dict:
        """The names of the frozen parameters and of the BatchNorm layers kept in eval (for checkpoints)."""
        return groups.frozen_state(self)

    def load_frozen_state(self, state: dict) -> None:
        """Freeze what `frozen_state()` named, and unfreeze everything else."""
        groups.load_frozen_state(self, state)

    # Checkpoints (checkpoint.py).
    def save(self, path: str | os.PathLike) -> None:
        """Checkpoint everything (model, optimizer, callbacks, RNGs, history) at the position training
        reached: the end of the last epoch, or, after an interrupted fit, its last optimizer step (so
        `fit(n_epochs, resume=path)` trains the rest of that epoch; the batch that was cut short had already
        moved BatchNorm statistics and random numbers, so that resume is close, not bitwise: CheckpointCB's
        saves, at steps, are exact)."""
        checkpoint.save(self, path)

    def load(self, path: str | os.PathLike) -> Learner:
        """Restore the model, optimizer, history and random states of a checkpoint (plain data only). To
        continue an interrupted run where it stopped, use `fit(n_epochs, resume=path)` instead."""
        return checkpoint.load(self, path)

    # Using the model (deploy/).
    def get_preds(self, dl=None, with_input: bool = False, with_loss: bool = False, tta: bool = False) -> Preds:
        """Predictions (probabilities where the loss makes them) and targets (and inputs, per-item losses) on `dl`
        (default: the validation set); `tta` averages each image's prediction with its mirror image's."""
        return deploy.get_preds(self, dl, with_input, with_loss, tta)

    def predict(self, x) -> Prediction:
        """Class index, name and probabilities (as `get_preds` gives them) for one item (or a batch): an image file,
        PIL image, uint8 tensor or array, or float tensor in [0, 1] (see `slowlearn.data.preprocess`)."""
        return deploy.predict(self, x)

    def validate(self, dl=None) -> dict:
        """Loss and metrics on `dl` (default: the validation set), without touching the history."""
        return deploy.validate(self, dl)

    def export(self, path: str | os.PathLike, format: str | None = None, preprocessing=None):
        """One file with the model, its preprocessing and class names: `load_learner(path)` predicts with it
        anywhere, without this code or the data (see `slowlearn.deploy.export`). `format="onnx"` (or a path
        ending in `.onnx`) for onnxruntime; by default the format follows the suffix, pt2 for any other."""
        return deploy.export_learner(self, path, format, preprocessing)

    # Pictures.
    def show_batch(self, n: int = 16, split: str = "train", path: str | os.PathLike | None = None):
        """The first `n` images of a batch of `learn.dls[split]` with their class names (a matplotlib Figure;
        with `path`, saved there and closed)."""
        return data.show_batch(self.dls, n, split, path)

    def summary(self, depth: int = 1, print_table: bool = True) -> list[dict]:
        """The model's layers on a batch of the training data, nested `depth` levels deep: output shapes,
        parameters (trainable and frozen) and MFLOPs per sample (see `slowlearn.models.summary`)."""
        return models.summary(self, depth=depth, print_table=print_table)
