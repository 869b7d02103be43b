"""Hyper-parameter schedules: torch's lr schedulers as callbacks, and schedules as pure functions of
training progress (`learn.pct_train`), which make a resumed run land exactly where it left off."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from ..learner import Callback

__all__ = ["get_hyper", "set_hyper", "BaseSchedulerCB", "BatchSchedulerCB", "optimizer_steps_per_epoch",
           "EpochSchedulerCB", "ParamSchedulerCB", "OneCycleCB", "sched_lin", "sched_cos", "sched_exp",
           "combine_scheds", "warmup_cos", "one_cycle_lr", "one_cycle_mom"]

Schedule = Callable[[float], float]


def get_hyper(group: dict, name: str) -> float:
    """A param group's hyper-parameter; `"mom"` is `momentum` or `betas[0]`, `"wd"` is `weight_decay`."""
    if name == "mom":
        return group["betas"][0] if "betas" in group else group.get("momentum", 0.)
    return group["weight_decay" if name == "wd" else name]


def set_hyper(group: dict, name: str, value: float) -> None:
    """Set a param group's hyper-parameter, with the names of `get_hyper`."""
    if name == "mom" and "betas" in group:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group[{"mom": "momentum", "wd": "weight_decay"}.get(name, name)] = value


class BaseSchedulerCB(Callback):
    """Creates `scheduler_f(learn.opt, **kwargs)` (any `torch.optim.lr_scheduler` class) at `before_fit`.

    Subclasses decide when it steps. `state_dict`/`load_state_dict` expose the scheduler's state
    for checkpoints. After the fit, the keys the scheduler added to the param groups (`initial_lr`,
    `max_lr`, ...) are removed again; the hyper-parameters keep their last scheduled values.
    """

    order = 80  # steps after RecorderCB has recorded the values the step used

    def __init__(self, scheduler_f: Callable, **kwargs):
        self.scheduler_f, self.kwargs, self.scheduler, self._pending = scheduler_f, kwargs, None, None

    def before_fit(self, learn) -> None:
        self._own_keys = [set(group) for group in learn.opt.param_groups]
        self.scheduler = self.scheduler_f(learn.opt, **self.scheduler_kwargs(learn))
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    def scheduler_kwargs(self, learn) -> dict:
        """The keyword arguments the scheduler is created with (subclasses fill in what they know)."""
        return self.kwargs

    def cleanup_fit(self, learn) -> None:
        for group, keys in zip(learn.opt.param_groups, getattr(self, "_own_keys", ())):
            for added in set(group) - keys:
                del group[added]

    def _step(self, learn) -> None:
        if learn.training:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore now, or when the scheduler is created at the next `before_fit`."""
        if self.scheduler is None:
            self._pending = state
        else:
            self._load(state)

    def _load(self, state: dict) -> None:
        saved, now = state.get("total_steps"), getattr(self.scheduler, "total_steps", None)
        if saved is not None and now is not None and saved != now:
            raise ValueError(f"The saved {type(self.scheduler).__name__} was made for {saved} steps, but this fit "
                             f"has {now}: resume with the n_epochs (and batch size) of the interrupted run. To "
                             f"train longer, start a new fit from the loaded weights instead of resuming.")
        self.scheduler.load_state_dict(state)


class BatchSchedulerCB(BaseSchedulerCB):
    """Steps the scheduler after every optimizer step (`OneCycleLR`, or `CosineAnnealingLR` with
    `T_max` = total steps); with gradient accumulation that is once per accumulated step.

    A scheduler that takes `total_steps` (OneCycleLR) gets it at `before_fit` when it is not given
    (nor `epochs`): the optimizer steps of the whole fit, counted on the loader as this process sees
    it (after DDP sharding) and with a GradientAccumulationCB's grouping of batches.
    """

    def scheduler_kwargs(self, learn) -> dict:
        try:
            takes_total = "total_steps" in inspect.signature(self.scheduler_f).parameters
        except (TypeError, ValueError):  # a callable without a signature to read
            takes_total = False
        if not takes_total or {"total_steps", "epochs"} & self.kwargs.keys():
            return self.kwargs
        return {**self.kwargs, "total_steps": learn.n_epochs * optimizer_steps_per_epoch(learn)}

    def after_step(self, learn) -> None:
        self._step(learn)


def optimizer_steps_per_epoch(learn) -> int:
    """Optimizer steps in one training epoch: one per batch, or one per group of a
    GradientAccumulationCB's `n_steps` batches (the last, partial group is stepped too)."""
    n_batches = len(learn.dls.train)
    accumulation = getattr(learn, "gradient_accumulation", None)
    return math.ceil(n_batches / accumulation.n_steps) if accumulation is not None else n_batches


class EpochSchedulerCB(BaseSchedulerCB):
    """Steps the scheduler after every training epoch (`StepLR`, `MultiStepLR`, ...)."""

    def after_epoch(self, learn) -> None:
        self._step(learn)


class ParamSchedulerCB(Callback):
    """Sets param-group hyper-parameters from pure functions of training progress before each batch.

    `ParamSchedulerCB(lr=sched_cos(1e-2, 1e-4), mom=sched_lin(0.95, 0.85))`: each keyword names a
    hyper-parameter (`lr`, `mom` = momentum or betas[0], `wd` = weight_decay, or any param-group key)
    and maps `learn.pct_train` in [0, 1) to its value, for every param group. Without state of its
    own, a resumed run gets exactly the values of an uninterrupted one.
    """

    order = 10  # before callbacks that read hyper-parameters in before_batch

    def __init__(self, **scheds: Schedule):
        self.scheds = scheds

    def before_batch(self, learn) -> None:
        if learn.training:
            for name, sched in self.scheds.items():
                value = sched(learn.pct_train)
                for group in learn.opt.param_groups:
                    set_hyper(group, name, value)


def sched_lin(start: float, end: float) -> Schedule:
    """Straight line from `start` (pct 0) to `end` (pct 1)."""
    return lambda pct: start + pct * (end - start)


def sched_cos(start: float, end: float) -> Schedule:
    """Half cosine from `start` to `end`: flat at both ends."""
    return lambda pct: start + (1 + math.cos(math.pi * (1 - pct))) * (end - start) / 2


def sched_exp(start: float, end: float) -> Schedule:
    """Geometric from `start` to `end` (both > 0): a straight line on a log axis."""
    return lambda pct: start * (end / start) ** pct


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """Run `scheds[i]` over a fraction `pcts[i]` of training (the fractions add up to 1)."""
    if abs(sum(pcts) - 1) > 1e-6 or len(pcts) != len(scheds):
        raise ValueError(f"combine_scheds needs one fraction per schedule, summing to 1; got {list(pcts)}")
    bounds = [0.] + [sum(pcts[:i + 1]) for i in range(len(pcts))]

    def combined(pct: float) -> float:
        i = next((i for i in range(len(scheds)) if pct < bounds[i + 1]), len(scheds) - 1)
        width = bounds[i + 1] - bounds[i]
        return scheds[i](min((pct - bounds[i]) / width, 1.) if width else 1.)
    return combined


def warmup_cos(peak: float, pct_warmup: float = 0.1, start: float = 0., end: float = 0.) -> Schedule:
    """Linear warm-up from `start` to `peak` over `pct_warmup`, then cosine anneal to `end`."""
    return combine_scheds([pct_warmup, 1 - pct_warmup], [sched_lin(start, peak), sched_cos(peak, end)])


def one_cycle_lr(max_lr: float, pct_start: float = 0.3, div: float = 25., div_final: float = 1e4) -> Schedule:
    """One-cycle lr (torch's OneCycleLR shape): cosine from max_lr/div up to max_lr over `pct_start`,
    then cosine down to max_lr/(div * div_final)."""
    low = max_lr / div
    return combine_scheds([pct_start, 1 - pct_start], [sched_cos(low, max_lr), sched_cos(max_lr, low / div_final)])


def one_cycle_mom(moms: tuple[float, float] = (0.95, 0.85), pct_start: float = 0.3) -> Schedule:
    """Momentum cycled opposite to the one-cycle lr: high -> low -> high."""
    high, low = moms
    return combine_scheds([pct_start, 1 - pct_start], [sched_cos(high, low), sched_cos(low, high)])


class OneCycleCB(ParamSchedulerCB):
    """One-cycle training as pure functions of progress: lr up then down, momentum down then up."""

    def __init__(self, max_lr: float, pct_start: float = 0.3, div: float = 25., div_final: float = 1e4,
                 moms: tuple[float, float] | None = (0.95, 0.85)):
        scheds = {"lr": one_cycle_lr(max_lr, pct_start, div, div_final)}
        if moms is not None:
            scheds["mom"] = one_cycle_mom(moms, pct_start)
        super().__init__(**scheds)
