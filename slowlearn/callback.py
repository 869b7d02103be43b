"""The callback protocol: the events and verbs of the loop, the `Callback` base class, the cancel
exceptions, and the checks and dispatch tables that bind callbacks to events (see `learner.py`)."""
from __future__ import annotations

import difflib
import traceback
from collections.abc import Callable, Iterable

from fastcore.basics import camel2snake

__all__ = ["EVENTS", "VERBS", "Callback", "CancelException", "CancelFitException", "CancelEpochException",
           "CancelBatchException", "CancelStepException", "check_callback", "call", "note_origin", "misplaced_cancel",
           "Dispatch", "defaults_not_given"]

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_predict", "after_loss", "after_backward",
          "after_step", "after_batch", "after_epoch", "after_fit", "cleanup_fit", "cleanup_epoch", "cleanup_batch")
VERBS = ("predict", "get_loss", "backward", "step", "zero_grad")

Handler = Callable[[object], None]


class CancelException(Exception):
    """Base of the cancel exceptions: skip the rest of a level and its `after_*` event."""


class CancelFitException(CancelException):
    """Raise in a callback to end training now, skipping the rest of the epoch and `after_fit`; `cleanup_fit` still
    runs. To stop at the end of the epoch, after every callback has handled it, set `learn.stop_reason` instead."""


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

    `sweep`: whether the callback takes part in `lr_find`'s sweep, which must leave the user's files and
    state as they were. Opt in (True) for what the training maths needs: device and memory layout,
    precision, gradient clipping or accumulation, and any replaced verb (MixUpCB's `get_loss` is the loss
    training minimises, so the sweep measures that one). Callbacks that record, schedule, monitor or
    write files keep the default, False. (`find_batch_size` times a bare copy of the model: no callbacks.)

    `sets_lr`: whether the callback writes the param groups' learning rates during a fit (a schedule, a
    finder). Two of them in one fit would overwrite each other (one-cycle sets the lr before every batch,
    so a plateau scheduler's cut would be lost): that is an error when the fit starts.

    `reads_loss_value`: whether the callback reads `learn.loss_value`, the batch's loss as a float. When a
    callback of the fit does and the loss is on the CPU, the Learner reads it once a batch, after the
    `after_loss` handlers (during them it is None), for all of them (on the CPU the value is computed
    already: the read waits for nothing); otherwise `learn.loss_value` is None and a callback keeps the
    tensor, to read many at once later (on a GPU a read per batch would wait for the step to finish).
    With such a callback the Learner also keeps every training loss of the fit in `learn.batch_losses`
    (ProgressCB shows and plots those).

    `state_per_fit`: whether the callback's `state_dict()` belongs to the fit that saved it, which its
    `before_fit` starts afresh (a schedule's position, an early-stopping count). A checkpoint's callback states
    are restored by `fit(resume=path)`, into the same fit. A run that goes on from a finished fit's checkpoint
    into a new fit (`fine_tune(resume="auto")` starting the unfrozen stage from the frozen stage's end) restores
    only the other callbacks' state (a CheckpointCB's best, a logger's step), as if the process had lived on.
    """

    order: int = 0
    sweep: bool = False
    sets_lr: bool = False
    reads_loss_value: bool = False
    state_per_fit: bool = False

    @property
    def name(self) -> str:
        """Snake-case class name without the `CB`/`Callback` suffix: `learn.<name>` finds the callback."""
        cls = type(self).__name__
        for suffix in ("Callback", "CB"):
            cls = cls.removesuffix(suffix)
        return camel2snake(cls)


# Event methods of other frameworks (fastai, Lightning, Keras) that slowlearn would silently never call,
# with the slowlearn event to use instead.
_TRAIN, _VALID = " (with learn.training True)", " (with learn.training False)"
FOREIGN_EVENTS = {
    **dict.fromkeys(["begin_fit", "on_train_begin", "on_fit_start", "on_train_start"], "before_fit"),
    **dict.fromkeys(["on_train_end", "on_fit_end"], "after_fit"),
    **dict.fromkeys(["begin_epoch", "on_epoch_begin", "on_epoch_start"], "before_epoch"),
    **dict.fromkeys(["on_train_epoch_start", "begin_train", "before_train"], "before_epoch" + _TRAIN),
    **dict.fromkeys(["on_validation_epoch_start", "begin_validate", "before_validate", "on_test_begin"],
                    "before_epoch" + _VALID),
    "on_epoch_end": "after_epoch",
    **dict.fromkeys(["on_train_epoch_end", "after_train"], "after_epoch" + _TRAIN),
    **dict.fromkeys(["on_validation_epoch_end", "after_validate", "on_test_end"], "after_epoch" + _VALID),
    **dict.fromkeys(["begin_batch", "on_batch_begin", "on_batch_start", "on_train_batch_start",
                     "on_train_batch_begin", "on_validation_batch_start", "on_test_batch_begin"], "before_batch"),
    **dict.fromkeys(["on_batch_end", "on_train_batch_end", "on_validation_batch_end", "on_test_batch_end"],
                    "after_batch"),
    **dict.fromkeys(["after_pred", "on_loss_begin"], "after_predict"),
    **dict.fromkeys(["on_backward_begin", "on_before_backward", "before_backward"], "after_loss"),
    **dict.fromkeys(["on_backward_end", "on_after_backward", "on_before_optimizer_step", "before_step"],
                    "after_backward"),
    **dict.fromkeys(["on_step_end", "on_before_zero_grad"], "after_step"),
    **dict.fromkeys(["on_exception", "after_cancel_fit"], "cleanup_fit"),
}


def defaults_not_given(defaults: Iterable[Callback], given: Iterable[Callback]) -> list[Callback]:
    """The default callbacks of whose kind `given` (the user's) has none: a user's callback replaces the default of
    its kind (a MetricsCB with the user's metrics, a MixedPrecisionCB in the user's precision)."""
    given = list(given)
    return [cb for cb in defaults if not any(isinstance(g, type(cb)) for g in given)]


def _looks_like_event(name: str) -> bool:
    if name.startswith(("before_", "after_", "cleanup_")):
        return True
    return bool(difflib.get_close_matches(name, EVENTS + VERBS, n=1, cutoff=0.85))


def check_callback(cb: Callback) -> None:
    """A method whose name looks like an event but is none (a typo such as `after_btach`, or another
    framework's name such as `on_batch_end`) is an error naming the event to use."""
    for attr in dir(type(cb)):
        if attr.startswith("_") or attr in EVENTS or attr in VERBS:
            continue
        if attr in FOREIGN_EVENTS and callable(getattr(type(cb), attr)):
            event, _, when = FOREIGN_EVENTS[attr].partition(" ")
            raise AttributeError(f"Callback {type(cb).__name__} defines '{attr}', an event name of another framework "
                                 f"that slowlearn never calls: name the method '{event}'{' ' * bool(when)}{when} "
                                 f"instead. Events are: {', '.join(EVENTS)}.")
        if callable(getattr(type(cb), attr)) and _looks_like_event(attr):
            close = difflib.get_close_matches(attr, EVENTS + VERBS, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise AttributeError(f"Callback {type(cb).__name__} defines '{attr}', which is not an event."
                                 f"{hint} Events are: {', '.join(EVENTS)}.")


def note_origin(error: Exception, cb: Callback, where: str) -> None:
    """Add a note to `error` naming the callback whose handler raised it and the event or verb it ran for."""
    error.add_note(f"(raised in callback {type(cb).__name__} during {where})")


# Where each cancel may be raised: the events of the level that catches it (and those of the levels inside it)
CANCEL_WHERE = {"CancelFitException": "any event of the fit",
                "CancelEpochException": "an event of an epoch's phase (before_epoch to after_epoch, or a batch's)",
                "CancelBatchException": "an event of a batch (before_batch to after_batch)",
                "CancelStepException": "after_backward (or the backward, step and zero_grad verbs, or after_step)"}


def misplaced_cancel(error: CancelException) -> RuntimeError:
    """A cancel raised where no level of the loop catches it (CancelBatchException in before_epoch, say), which
    would end the fit as a bare exception: a RuntimeError naming it, the callback and event that raised it (from
    the traceback: this runs on the error path only), and where it belongs."""
    name = type(error).__name__
    origin = next(((type(frame.f_locals["self"]).__name__, frame.f_code.co_name)
                   for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__)))
                   if isinstance(frame.f_locals.get("self"), Callback)), None)
    by = f" by callback {origin[0]} in {origin[1]}" if origin else ""
    return RuntimeError(f"{name} was raised{by}, where no level of the loop catches it, so it would end the fit: raise "
                        f"it in {CANCEL_WHERE.get(name, 'the level it cancels')}, or raise CancelFitException to end "
                        f"the fit")


def call(cb: Callback, method: Handler, where: str, learn) -> None:
    """Run one handler; an error (not a cancel) gets a note naming the callback and the event."""
    try:
        method(learn)
    except CancelException:
        raise
    except Exception as e:
        note_origin(e, cb, where)
        raise


def _check_given_once(cbs: list[Callback]) -> None:
    """Each callback object is in a fit once: twice, each of its handlers would run twice an event."""
    twice = [cb for i, cb in enumerate(cbs) if any(other is cb for other in cbs[:i])]
    if twice:
        raise ValueError(f"Callback {type(twice[0]).__name__} is given to this fit twice (the same object), so each of "
                         f"its handlers would run twice an event: give it once. The Learner's callbacks (learn.cbs) "
                         f"run in every fit; fit(cbs=) adds callbacks for that fit only, so leave out those the "
                         f"Learner has already.")


def _check_one_lr_schedule(cbs: list[Callback]) -> None:
    """At most one callback of a fit sets the learning rate: two schedules would overwrite each other."""
    setters = [type(cb).__name__ for cb in cbs if cb.sets_lr]
    if len(setters) > 1:
        both = "both" if len(setters) == 2 else "all"
        raise ValueError(f"Callbacks {' and '.join(setters)} {both} set the learning rate during this fit, so each "
                         f"would overwrite what the other set (one-cycle, for one, sets it before every batch, which "
                         f"undoes a plateau scheduler's cut): keep one schedule per fit (e.g. fit() with "
                         f"ReduceLROnPlateauCB instead of fit_one_cycle), or combine torch schedulers into one with "
                         f"BatchSchedulerCB(lambda opt: lr_scheduler.SequentialLR(opt, ...)).")


class Dispatch:
    """A fit's callbacks bound to the events and verbs: sorted by `order` and checked once per fit.
    `handlers[event]` lists the (callback, handler) pairs that `Learner.callback(event)` runs, in order;
    `handled` holds the events with at least one handler (the Learner does not call the others: a call
    costs about half a microsecond, and a batch has six events). `set_active` switches one callback's
    handler of an event off and on again, e.g. for an epoch phase where it has nothing to do.
    `reads_loss_value`: whether a callback of the fit reads `learn.loss_value`."""

    def __init__(self, cbs: Iterable[Callback]):
        cbs = sorted(cbs, key=lambda cb: cb.order)
        for cb in cbs:
            check_callback(cb)
        _check_given_once(cbs)
        self._bound = {ev: [(cb, getattr(cb, ev)) for cb in cbs if hasattr(cb, ev)] for ev in EVENTS}
        self._inactive: set[tuple[int, str]] = set()  # (id(callback), event) pairs switched off
        self.handlers: dict[str, list[tuple[Callback, Handler]]] = {}
        self.handled: set[str] = set()  # changed in place: the Learner holds it for the fit
        self._select()
        self.verbs = {}
        for verb in VERBS:
            owners = [cb for cb in cbs if callable(getattr(type(cb), verb, None))]
            if len(owners) > 1:
                names = " and ".join(type(cb).__name__ for cb in owners)
                raise RuntimeError(f"Callbacks {names} both replace the '{verb}' step; keep only one of them.")
            self.verbs[verb] = (owners[0], getattr(owners[0], verb)) if owners else None
        _check_one_lr_schedule(cbs)
        self.reads_loss_value = any(cb.reads_loss_value for cb in cbs)

    def _select(self) -> None:
        self.handlers = {ev: [(cb, handler) for cb, handler in bound if (id(cb), ev) not in self._inactive]
                         for ev, bound in self._bound.items()}
        self.handled.clear()
        self.handled.update(ev for ev, handlers in self.handlers.items() if handlers)

    def set_active(self, cb: Callback, event: str, active: bool) -> None:
        """Call (`active=True`) or skip `cb`'s handler of `event` from now on in this fit (all handlers are
        active when the fit starts). DeviceCB skips its `before_batch` for a phase whose batches are on the
        device already."""
        if not any(bound_cb is cb for bound_cb, _ in self._bound.get(event, ())):
            raise ValueError(f"Dispatch.set_active: {type(cb).__name__} has no '{event}' handler in this fit, so "
                             f"there is nothing to switch on or off. Name an event that the callback defines, one "
                             f"of: {', '.join(EVENTS)}.")
        key = (id(cb), event)
        if active != (key not in self._inactive):
            (self._inactive.discard if active else self._inactive.add)(key)
            self._select()

    def cleanup(self, event: str, learn, error: BaseException | None = None) -> None:
        """Run every handler of a `cleanup_*` event, also after one of them fails. With `error` (what ended
        the level, which the caller re-raises) the cleanup errors become notes on it; without one, or when
        it is a cancel, the first cleanup error is raised with the others as notes."""
        errors = []
        for cb, method in self.handlers[event]:
            try:
                call(cb, method, event, learn)
            except Exception as e:
                errors.append(e)
        if not errors:
            return
        if error is not None and not isinstance(error, CancelException):
            for other in errors:
                error.add_note(f"(then {event} failed too: {type(other).__name__}: {other})")
            return
        for other in errors[1:]:
            errors[0].add_note(f"({event} also failed: {type(other).__name__}: {other})")
        raise errors[0]

    def bind_verb(self, verb: str, learn, default: Callable[[], None]) -> Callable[[], None]:
        """What runs `verb` during this fit: the callback that replaces it, or else the Learner's `default`."""
        owner = self.verbs[verb]
        if owner is None:
            return default
        cb, method = owner
        return lambda: call(cb, method, verb, learn)

    def wrap(self, wrap: Callable[[Handler], Handler], skip: Iterable[Callback] = ()) -> None:
        """Run every event handler (but those of `skip`) as `wrap(handler)(learn)` for the rest of this fit:
        call it in `before_fit` to measure or trace the other callbacks (ProfilerCB does)."""
        skip = list(skip)
        self._bound = {event: [(cb, method if cb in skip else wrap(method)) for cb, method in handlers]
                       for event, handlers in self._bound.items()}
        self._select()
