"""Hyper-parameter schedules: torch's lr schedulers as callbacks, and schedules as pure functions of
training progress (`learn.pct_train`), which make a resumed run land exactly where it left off."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

from ..arguments import check_range
from ..callback import Callback
from ..checkpoint import fine_tune_resumes
from ..device import model_device
from ..groups import check_lr, geometric, group_lrs
from .core import DeviceCB
from .precision import MixedPrecisionCB, speed_cbs
from .progress import ProgressCB

__all__ = ["get_hyper", "set_hyper", "BaseSchedulerCB", "BatchSchedulerCB", "EpochSchedulerCB", "ParamSchedulerCB", "OneCycleCB", "sched_lin", "sched_cos", "sched_exp",
           "combine_scheds", "warmup_cos", "one_cycle_lr", "one_cycle_mom", "fit_one_cycle", "fine_tune"]

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

    Subclasses decide when it steps. `state_dict`/`load_state_dict` hold the scheduler's state and the
    param groups' hyper-parameters (creating a torch scheduler resets them to its start values, so a
    resumed fit puts them back). After the fit, the keys the scheduler added to the param groups
    (`initial_lr`, `max_lr`, ...) are removed again; the hyper-parameters keep their last values, which the
    next fit's schedule starts from (a schedule that would start from lr 0 everywhere, as a second cosine one
    does, is a warning: pass `fit(n_epochs, lr=...)`).
    """

    order = 80  # steps after RecorderCB has recorded the values the step used
    sets_lr = True  # torch's schedulers are lr schedulers
    state_per_fit = True  # each fit creates its scheduler

    def __init__(self, scheduler_f: Callable, **kwargs):
        self.scheduler_f, self.kwargs, self.scheduler = scheduler_f, kwargs, None

    def before_fit(self, learn) -> None:
        self._own_keys = [set(group) for group in learn.opt.param_groups]
        self._opt = learn.opt
        self.scheduler = self.scheduler_f(learn.opt, **self.kwargs)
        # a schedule of factors of lr 0 gives 0 throughout (CyclicLR rises from its base_lr to max_lrs: not that)
        starts_at_0 = all(lr == 0 for lr in getattr(self.scheduler, "base_lrs", [None]))
        if starts_at_0 and not hasattr(self.scheduler, "max_lrs"):
            name = f"{type(self).__name__}({type(self.scheduler).__name__})"
            warnings.warn(f"{name} starts from lr 0 in every param group "
                          f"(the optimizer keeps the lrs where the last fit's schedule ended), so its lrs, factors "
                          f"of that, are all 0 and this fit will not train: start it from an lr with "
                          f"fit(n_epochs, lr=...).", stacklevel=2)

    def cleanup_fit(self, learn) -> None:
        for group, keys in zip(learn.opt.param_groups, getattr(self, "_own_keys", ())):
            for added in set(group) - keys:
                del group[added]

    def _step(self, learn) -> None:
        if learn.training:
            self.scheduler.step()

    def state_dict(self) -> dict:
        if self.scheduler is None:
            return {}
        hypers = [{k: v for k, v in group.items() if k != "params"} for group in self._opt.param_groups]
        return {"scheduler": self.scheduler.state_dict(), "param_groups": hypers}

    def load_state_dict(self, state: dict) -> None:
        """Continue a resumed run (called after `before_fit` has created the scheduler)."""
        if self.scheduler is None:
            raise RuntimeError(f"{type(self).__name__} has no scheduler to load a state into: its state is "
                               f"restored by `fit(resume=path)`, after the scheduler is created.")
        self.scheduler.load_state_dict(state["scheduler"])
        for group, hypers in zip(self._opt.param_groups, state["param_groups"]):
            group.update(hypers)


class BatchSchedulerCB(BaseSchedulerCB):
    """Steps the scheduler after every optimizer step (`CosineAnnealingLR` with `T_max` = total steps,
    torch's `OneCycleLR` with `total_steps`); with gradient accumulation that is once per accumulated
    step. (slowlearn's own `OneCycleCB` needs no step count: it follows `learn.pct_train`.)"""

    def after_step(self, learn) -> None:
        self._step(learn)


class EpochSchedulerCB(BaseSchedulerCB):
    """Steps the scheduler after every training epoch (`StepLR`, `MultiStepLR`, ...)."""

    def after_epoch(self, learn) -> None:
        self._step(learn)


class ParamSchedulerCB(Callback):
    """Sets param-group hyper-parameters from pure functions of training progress before each batch.

    `ParamSchedulerCB(lr=sched_cos(1e-2, 1e-4), mom=sched_lin(0.95, 0.85))`: each keyword names a
    hyper-parameter (`lr`, `mom` = momentum or betas[0], `wd` = weight_decay, or any param-group key)
    and maps `learn.pct_train` in [0, 1) to its value, for every param group. With discriminative lrs
    (`learn.lr` a slice or one lr per group), the `lr` schedule is the largest group's and every group
    gets its share of it: lr_g = sched(pct) * lr_g / max(lrs) (where every lr is 0, the schedule itself). Without
    state of its own, a resumed run gets exactly the values of an uninterrupted one.
    """

    order = 10  # before callbacks that read hyper-parameters in before_batch

    def __init__(self, **scheds: Schedule):
        self.scheds = scheds
        self.sets_lr = "lr" in scheds

    def before_fit(self, learn) -> None:
        lrs = group_lrs(learn.lr, len(learn.opt.param_groups))
        top = max(lrs)
        self.lr_shares = [lr / top if top else 1. for lr in lrs]  # every lr 0: each group gets the whole schedule

    def before_batch(self, learn) -> None:
        if learn.training:
            for name, sched in self.scheds.items():
                value = sched(learn.pct_train)
                for group, share in zip(learn.opt.param_groups, self.lr_shares):
                    set_hyper(group, name, value * share if name == "lr" else value)


def sched_lin(start: float, end: float) -> Schedule:
    """Straight line from `start` (pct 0) to `end` (pct 1)."""
    return lambda pct: start + pct * (end - start)


def sched_cos(start: float, end: float) -> Schedule:
    """Half cosine from `start` to `end`: flat at both ends."""
    return lambda pct: start + (1 + math.cos(math.pi * (1 - pct))) * (end - start) / 2


def sched_exp(start: float, end: float) -> Schedule:
    """Geometric from `start` to `end` (both > 0): a straight line on a log axis."""
    return lambda pct: geometric(start, end, pct)


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """Run `scheds[i]` over a fraction `pcts[i]` of training (the fractions add up to 1).

    >>> warmup_then_flat = combine_scheds([0.25, 0.75], [sched_lin(0., 1.), sched_lin(1., 1.)])
    >>> [warmup_then_flat(pct) for pct in (0., 0.125, 0.5, 1.)]
    [0.0, 0.5, 1.0, 1.0]
    """
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
    then cosine down to max_lr/(div * div_final).

    >>> lr = one_cycle_lr(0.1)
    >>> round(lr(0.), 6), lr(0.3), round(lr(1.), 9)
    (0.004, 0.1, 4e-07)
    """
    low = max_lr / div
    return combine_scheds([pct_start, 1 - pct_start], [sched_cos(low, max_lr), sched_cos(max_lr, low / div_final)])


def one_cycle_mom(moms: tuple[float, float] = (0.95, 0.85), pct_start: float = 0.3) -> Schedule:
    """Momentum cycled opposite to the one-cycle lr: high -> low -> high."""
    high, low = moms
    return combine_scheds([pct_start, 1 - pct_start], [sched_cos(high, low), sched_cos(low, high)])


class OneCycleCB(Callback):
    """One-cycle training as pure functions of training progress (`learn.pct_train`).

    Each param group's lr follows `one_cycle_lr(peak)`: a cosine from peak/`div` up to its peak over
    `pct_start` of training, then down to peak/(`div` * `div_final`); momentum (or Adam's beta1) goes
    the opposite way between `moms` (`None` leaves it alone). `lr_max` is every group's peak, a
    `slice(lo, hi)` of peaks spread geometrically over the groups (`slice(hi)`: hi/10 but for the last
    group), one peak per group, or None: `learn.lr` when the fit starts (a resumed fit's is the saved
    run's). With no state of its own, a resumed run gets exactly the values of an uninterrupted one;
    resumed with another `n_epochs`, it continues on the cycle of the new length.
    After a complete fit the groups hold the schedule's end values (lr peak/(div * div_final), the
    highest momentum): a later plain `fit()` trains at those unless given `lr=`.
    """

    order = 10  # before callbacks that read hyper-parameters in before_batch
    sets_lr = True

    def __init__(self, lr_max: float | slice | Sequence[float] | None, pct_start: float = 0.3, div: float = 25.,
                 div_final: float = 1e4, moms: tuple[float, float] | None = (0.95, 0.85)):
        if lr_max is not None:
            check_lr(lr_max, owner="OneCycleCB", name="lr_max")
        check_range("pct_start", pct_start, 0., 1., high_open=False, owner="OneCycleCB")
        check_range("div", div, 0., low_open=True, owner="OneCycleCB")
        check_range("div_final", div_final, 0., low_open=True, owner="OneCycleCB")
        for name, mom in zip(("moms[0]", "moms[1]"), moms or ()):  # a momentum (beta1) of 1 or more diverges
            check_range(name, mom, 0., 1., owner="OneCycleCB")
        self.lr_max, self.pct_start, self.div, self.div_final = lr_max, pct_start, div, div_final
        self.mom = one_cycle_mom(moms, pct_start) if moms is not None else None

    def before_fit(self, learn) -> None:
        peaks = group_lrs(self.lr_max if self.lr_max is not None else learn.lr, len(learn.opt.param_groups))
        learn.fit_lrs = peaks
        self.lr_scheds = [one_cycle_lr(peak, self.pct_start, self.div, self.div_final) for peak in peaks]

    def before_batch(self, learn) -> None:
        if learn.training:
            self._set(learn, learn.pct_train)

    def after_fit(self, learn) -> None:
        if learn.pct_train:  # the schedule's last value (1 after a complete fit) for whatever comes next
            self._set(learn, learn.pct_train)

    def _set(self, learn, pct: float) -> None:
        for group, lr_sched in zip(learn.opt.param_groups, self.lr_scheds):
            group["lr"] = lr_sched(pct)
            if self.mom is not None:
                set_hyper(group, "mom", self.mom(pct))


def fit_one_cycle(learn, n_epochs: int, lr_max: float | slice | Sequence[float] | None = None, pct_start: float = 0.3,
                  div: float = 25., div_final: float = 1e4, moms: tuple[float, float] | None = (0.95, 0.85),
                  cbs: Sequence[Callback] = (), precision: str | None = None, **fit_kwargs):
    """`fit(n_epochs)` under `OneCycleCB(lr_max, ...)` (`lr_max` defaults to `learn.lr`); `fit_kwargs`
    go to `fit` (`resume=path` continues a run). See OneCycleCB for what the next fit trains at.
    `precision` ("auto", "fp32", "bf16", "fp16") adds the precision and layout callbacks for this fit, as
    `train_1cycle` does; None keeps the Learner's own callbacks as they are."""
    cycle = OneCycleCB(lr_max, pct_start, div, div_final, moms)
    return learn.fit(n_epochs, cbs=[cycle, *precision_cbs(learn, precision, cbs), *cbs], **fit_kwargs)


def precision_cbs(learn, precision: str | None, cbs: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks that train `learn` in `precision` for one fit (none for None), refusing a precision
    that a MixedPrecisionCB already on the Learner or in `cbs` contradicts. "auto" asks the device the fit
    trains on: a DeviceCB's of the fit, else the model's. The choice is printed unless a ProgressCB(verbose=0)
    silences the fit."""
    if precision is None:
        return []
    given = [*learn.cbs, *cbs]
    chosen = [cb.name_of_dtype for cb in given if isinstance(cb, MixedPrecisionCB)]
    if chosen and precision not in ("auto", chosen[0]):
        raise ValueError(f"precision={precision!r} contradicts the MixedPrecisionCB({chosen[0]!r}) the Learner "
                         f"already has: remove that callback (learn.remove_cb) or leave precision out")
    silent = any(isinstance(cb, ProgressCB) and cb.verbose == 0 for cb in given)
    device = next((cb.device for cb in given if isinstance(cb, DeviceCB)), None) or model_device(learn.model)
    return speed_cbs(learn.model, precision, device=device, given=given, verbose=not silent)


def fine_tune(learn, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
              pct_start: float = 0.3, div: float = 5., **kwargs):
    """fastai's transfer-learning recipe: `freeze_epochs` of one-cycle on the head alone (frozen body,
    `lr_max=slice(base_lr)`, `pct_start=0.99`), then unfreeze and `epochs` of one-cycle on every group
    with lrs spread from base_lr/2/lr_mult to base_lr/2. `kwargs` go to both `fit_one_cycle` calls
    (`precision=` among them).

    The defaults are fastai's, made for large pretrained bodies and many steps. With a few hundred images
    (a few steps an epoch) they barely move the weights: in `benchmarks/fine_tune.py` base_lr=1e-2,
    lr_mult=10 did much better (0.83 against 0.51 accuracy from 200 images); try `lr_find` first.

    `resume="auto"` continues whichever stage the run's CheckpointCB file holds (`checkpoint.fine_tune_resumes`)."""
    frozen_resume, resume = fine_tune_resumes(learn, kwargs.pop("resume", None), freeze_epochs, kwargs.get("cbs", ()))
    try:
        learn.freeze()
        if freeze_epochs and frozen_resume != "skip":
            learn.fine_tune_stage = "frozen"  # checkpoints record it: resume="auto" then knows the stage
            learn.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, resume=frozen_resume, **kwargs)
        base_lr /= 2
        learn.unfreeze()
        learn.fine_tune_stage = "unfrozen"
        return learn.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div,
                                   resume=resume, **kwargs)
    finally:
        learn.fine_tune_stage = None
