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
```
The first batch of each phase is checked (`checks.py`): bad data stops there with a clear error.
"""
from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from fastcore.basics import camel2snake
from torch import nn

from . import checks, inference
from .checkpoint import read_checkpoint, restore_run_state, restore_weights, save_checkpoint

__all__ = ["Learner", "Callback", "CancelFitException", "CancelEpochException", "CancelBatchException",
           "CancelStepException", "EVENTS", "VERBS"]

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_predict", "after_loss", "after_backward",
          "after_step", "after_batch", "after_epoch", "after_fit", "cleanup_fit", "cleanup_epoch", "cleanup_batch")
VERBS = ("predict", "get_loss", "backward", "step", "zero_grad")


class CancelException(Exception):
    """Base of the cancel exceptions: skip the rest of a level and its `after_*` event."""


class CancelFitException(CancelException):
    """Raise in a callback to end training now; `cleanup_fit` still runs."""


class CancelEpochException(CancelException):
    """Raise in a callback to skip the rest of this epoch's phase (train or valid) and its `after_epoch`."""


class CancelBatchException(CancelException):
    """Raise in a callback to skip the rest of this batch and its `after_batch`."""


class CancelStepException(CancelException):
    """Raise in `after_backward` to skip this batch's optimizer step, `after_step` and `zero_grad`
    (gradient accumulation); `after_batch` still runs."""


class Callback:
    """Base class of callbacks. Define methods named after events or verbs, each taking the learner.

    Events (run in `order`, lower first):
      before_fit     once, before training starts (the optimizer exists already)
      before_epoch   at the start of each phase of an epoch: `learn.training` says train or valid
      before_batch   before the model sees `learn.batch`
      after_predict  after `learn.preds` is set
      after_loss     after `learn.loss` is set
      after_backward after gradients are computed (train only); CancelStepException here skips the step
      after_step     after the optimizer step (train only)
      after_batch    at the end of each batch
      after_epoch    at the end of each phase of an epoch
      after_fit      once, after the last epoch
      cleanup_batch / cleanup_epoch / cleanup_fit  always, even after an error or a cancel
    Verbs (`predict, get_loss, backward, step, zero_grad`): a callback defining one replaces the
    Learner's default; only one callback may replace each verb.
    """

    order: int = 0

    @property
    def name(self) -> str:
        """Snake-case class name without the `CB`/`Callback` suffix: `learn.<name>` finds the callback."""
        cls = type(self).__name__
        for suffix in ("Callback", "CB"):
            cls = cls.removesuffix(suffix)
        return camel2snake(cls)


def _looks_like_event(name: str) -> bool:
    if name.startswith(("before_", "after_", "cleanup_")):
        return True
    return bool(difflib.get_close_matches(name, EVENTS + VERBS, n=1, cutoff=0.85))


def _check_callback(cb: Callback) -> None:
    for attr in dir(type(cb)):
        if attr.startswith("_") or attr in EVENTS or attr in VERBS:
            continue
        if callable(getattr(type(cb), attr)) and _looks_like_event(attr):
            close = difflib.get_close_matches(attr, EVENTS + VERBS, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise AttributeError(f"Callback {type(cb).__name__} defines '{attr}', which is not an event."
                                 f"{hint} Events are: {', '.join(EVENTS)}.")


def _call(cb: Callback, method: Callable, where: str, learn: Learner) -> None:
    try:
        method(learn)
    except CancelException:
        raise
    except Exception as e:
        e.add_note(f"(raised in callback {type(cb).__name__} during {where})")
        raise


class Learner:
    """Trains `model` on `dls` (a `DataLoaders`) with `loss_func`, an optimizer from `opt_func` and callbacks."""

    def __init__(self, model: nn.Module, dls, loss_func: Callable = F.cross_entropy, lr: float = 0.1,
                 cbs: Iterable[Callback] = (), opt_func: Callable = torch.optim.SGD):
        self.model, self.dls, self.loss_func, self.lr, self.opt_func = model, dls, loss_func, lr, opt_func
        self.cbs: list[Callback] = list(cbs)
        self.opt: torch.optim.Optimizer | None = None
        self.history: list[dict] = []
        self.training = False

    def __repr__(self) -> str:
        cbs = ", ".join(type(cb).__name__ for cb in self.cbs)
        opt_func = getattr(self.opt_func, "__name__", self.opt_func)
        return f"Learner({type(self.model).__name__}, lr={self.lr}, opt_func={opt_func}, cbs=[{cbs}])"

    def __getattr__(self, name: str):
        if name != "cbs":
            for cb in self.__dict__.get("cbs", ()):
                if cb.name == name:
                    return cb
        raise AttributeError(f"'Learner' has no attribute or callback named '{name}'")

    def add_cb(self, cb: Callback) -> Learner:
        self.cbs.append(cb)
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        self.cbs.remove(cb)
        return self

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
        self.opt.zero_grad(set_to_none=True)

    def get_preds(self, dl=None, with_input: bool = False, with_loss: bool = False, tta: bool = False):
        """Probabilities and targets (and inputs, per-item losses) on `dl` (default: the validation set);
        `tta` averages each image's prediction with its mirror image's."""
        return inference.get_preds(self, dl, with_input, with_loss, tta)

    def predict(self, x: torch.Tensor):
        """Class index, name and probabilities for one item (or a batch) as stored in the dataset."""
        return inference.predict(self, x)

    def validate(self, dl=None) -> dict:
        """Loss and metrics on `dl` (default: the validation set), without touching the history."""
        return inference.validate(self, dl)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True):
        """Exponential lr sweep that restores everything afterwards; see `slowlearn.callbacks.lr_finder`."""
        from .callbacks.lr_finder import lr_find  # the callbacks import this module
        return lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot)

    def save(self, path: str | os.PathLike) -> None:
        """Checkpoint everything (model, optimizer, callbacks, RNGs, history) at the end of the last epoch."""
        save_checkpoint(self, path, epoch=getattr(self, "epoch", -1) + 1)

    def load(self, path: str | os.PathLike) -> Learner:
        """Restore a checkpoint written by `save` or CheckpointCB (safely: plain data only). To continue
        an interrupted run where it stopped, use `fit(n_epochs, resume=path)` instead."""
        state = read_checkpoint(path)
        restore_weights(self, state)
        restore_run_state(self, state)
        return self

    def fit(self, n_epochs: int = 1, lr: float | None = None, cbs: Sequence[Callback] = (), train: bool = True,
            valid: bool = True, reset_opt: bool = False, resume: str | os.PathLike | None = None) -> Learner:
        """Train for `n_epochs`; `cbs` are used for this fit only; `lr` sets every param group's lr.
        `resume=path` continues the run saved at `path` up to a total of `n_epochs`."""
        cbs = list(cbs)
        self.cbs += cbs
        try:
            checks.check_loaders(self.dls, train, valid)
            self._prepare(lr, reset_opt)
            state = read_checkpoint(resume) if resume is not None else None
            if state is not None:
                restore_weights(self, state)
            self.n_epochs, self.epoch, self.pct_train, self.valid_phase = n_epochs, 0, 0., valid
            self._run_level("fit", CancelFitException, lambda: self._epochs(n_epochs, train, valid, state))
        finally:
            for cb in cbs:
                self.cbs.remove(cb)
        return self

    @property
    def in_last_phase(self) -> bool:
        """True during an epoch's last phase: valid, or train when fitting with `valid=False`."""
        return not self.training or not self.valid_phase

    def _prepare(self, lr: float | None, reset_opt: bool) -> None:
        if lr is not None:
            self.lr = lr
        if self.opt is None or reset_opt:
            self.opt = self.opt_func(self.model.parameters(), self.lr)
        elif lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        self._build_dispatch()

    def _build_dispatch(self) -> None:
        """Sort callbacks once per fit and bind every event and verb to its handlers."""
        cbs = sorted(self.cbs, key=lambda cb: cb.order)
        for cb in cbs:
            _check_callback(cb)
        self._handlers = {ev: [(cb, getattr(cb, ev)) for cb in cbs if hasattr(cb, ev)] for ev in EVENTS}
        self._verbs = {}
        for verb in VERBS:
            owners = [cb for cb in cbs if callable(getattr(type(cb), verb, None))]
            if len(owners) > 1:
                names = " and ".join(type(cb).__name__ for cb in owners)
                raise RuntimeError(f"Callbacks {names} both replace the '{verb}' step; keep only one of them.")
            self._verbs[verb] = (owners[0], getattr(owners[0], verb)) if owners else None

    def callback(self, event: str) -> None:
        for cb, method in self._handlers[event]:
            _call(cb, method, event, self)

    def _do(self, verb: str) -> None:
        owner = self._verbs[verb]
        if owner is None:
            getattr(self, "_" + verb)()
        else:
            _call(owner[0], owner[1], verb, self)

    def _run_level(self, level: str, cancel: type[CancelException], body: Callable[[], None]) -> None:
        try:
            self.callback(f"before_{level}")
            body()
            self.callback(f"after_{level}")
        except cancel:
            pass
        finally:
            self.callback(f"cleanup_{level}")

    def _epochs(self, n_epochs: int, train: bool, valid: bool, resume_state: dict | None) -> None:
        start_epoch, start_iter = 0, 0
        if resume_state is not None:  # after before_fit, which creates the schedulers whose state we restore
            restore_run_state(self, resume_state)
            start_epoch, start_iter = resume_state["epoch"], resume_state["iter"]
        for self.epoch in range(start_epoch, n_epochs):
            if train:
                self._one_epoch(True, start_iter if self.epoch == start_epoch else 0)
            if valid:
                with torch.no_grad():
                    self._one_epoch(False)

    def _one_epoch(self, training: bool, start_iter: int = 0) -> None:
        self.training = training
        self.model.train(training)
        self.dl = self.dls.train if training else self.dls.valid
        self.n_iter = len(self.dl)
        self._run_level("epoch", CancelEpochException, lambda: self._batches(start_iter))

    def _batches(self, start_iter: int) -> None:
        if start_iter and hasattr(self.dl, "iter_from"):
            batches = enumerate(self.dl.iter_from(start_iter), start_iter)
        else:
            batches = itertools.islice(enumerate(self.dl), start_iter, None)
        for self.iter, self.batch in batches:
            if self.training:
                self.pct_train = (self.epoch + self.iter / self.n_iter) / self.n_epochs
            first = self.iter == start_iter
            self._run_level("batch", CancelBatchException, self._first_batch if first else self._one_batch)
        if self.training:
            self.pct_train = (self.epoch + 1) / self.n_epochs

    def _first_batch(self) -> None:
        """A phase's first batch, checked: bad data gets a clear error, any error a description of the batch."""
        try:
            self._one_batch(check=True)
        except CancelException:
            raise
        except Exception as e:
            e.add_note(checks.describe_batch(self.batch, self.model))
            raise

    def _one_batch(self, check: bool = False) -> None:
        if check:
            checks.check_inputs(self.batch, self.model)
        self._do("predict")
        if check:
            checks.check_targets(self.preds, self.batch, self.loss_func)
        self.callback("after_predict")
        self._do("get_loss")
        self.callback("after_loss")
        if self.training:
            self._do("backward")
            try:
                self.callback("after_backward")
                self._do("step")
                self.callback("after_step")
                self._do("zero_grad")
            except CancelStepException:
                pass
