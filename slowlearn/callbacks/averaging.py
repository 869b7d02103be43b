"""Weight averaging: an exponential (EMA) or plain running (SWA) average of the model's weights
(WeightAveragingCB), and Lookahead's slow weights that training restarts from (LookaheadCB)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..callback import Callback
from ..device import bare_model, model_device, to_device
from ..distributed import all_reduce_mean
from ..groups import stays_in_eval
from ..randomness import random_states_kept

__all__ = ["WeightAveragingCB", "LookaheadCB", "update_bn"]


class WeightAveragingCB(Callback):
    """Averages the weights and buffers (BatchNorm statistics included) over training, on their device.

    After every `every`-th optimizer step `t`, with the model's weights `w_t` and the average `a`:

        EMA (`decay`):      a <- d_k * a + (1 - d_k) * w_t  at the k-th update (k = 1, 2, ...), where
                            d_k = min(decay, (1 + k) / (10 + k)) with `warmup` (so that a short run's average
                            forgets the random start), else d_k = decay; `a` starts as the weights at the first fit.
        SWA (`swa_start`):  a <- a + (w_t - a) / k,  the plain mean of the k weights seen since training
                            reached `swa_start` (a fraction of the fit in [0, 1), or an epoch number as an int).

    Integer buffers (BatchNorm's `num_batches_tracked`) are copied. Updates are a few foreach kernels on
    the model's device, with no host sync. With `validate`, the validation phase runs on the average,
    up to and including its `after_epoch` (so EarlyStoppingCB and CheckpointCB(monitor=) keep the weights
    that were scored); checkpoints written then hold the trained weights too, and resuming is exact.

    `final="average"` leaves the average in the model when the fit ends (also after a cancel or an
    error), so `get_preds`, `predict`, `validate`, `save` and exports use it; the trained weights are
    kept here and put back at the next fit, so training continues on its own trajectory.
    `final="trained"` leaves the trained weights; `averaged_state_dict()` gives the average.

    SWA's averaged weights never ran through the BatchNorm layers together, so with `update_bn` the
    BatchNorm statistics of the average are estimated again on one pass over the training data after
    the last training epoch (the data order and RNGs are left as they were). A fit that stops early
    skips that pass: call `update_bn(learn)` then. EMA averages the statistics along with the weights.
    """

    # Early: the average is in place for every other callback's validation events, and put in the model at
    # cleanup_fit before EarlyStoppingCB(restore_best=True) may replace it with the best epoch's weights.
    order = 10

    def __init__(self, decay: float | None = None, swa_start: float | int | None = None, every: int = 1,
                 warmup: bool = True, validate: bool = True, final: str = "average", update_bn: bool = True):
        if (decay is None) == (swa_start is None):
            raise ValueError("WeightAveragingCB needs exactly one of decay= (EMA, e.g. 0.999) or swa_start= (SWA: a "
                             f"fraction of training in [0, 1), or an epoch number); got decay={decay}, "
                             f"swa_start={swa_start}")
        if decay is not None and not 0 < decay < 1:
            raise ValueError(f"WeightAveragingCB needs 0 < decay < 1, got decay={decay}")
        if isinstance(swa_start, float) and not 0 <= swa_start < 1:
            raise ValueError(f"swa_start as a fraction of training must be in [0, 1), got {swa_start} (give an "
                             f"int to start at an epoch)")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a positive number of optimizer steps, got {every!r}")
        if final not in ("average", "trained"):
            raise ValueError(f"final must be 'average' or 'trained', got {final!r}")
        self.decay, self.swa_start, self.every, self.warmup = decay, swa_start, every, warmup
        self.validate, self.final, self.bn_pass = validate, final, update_bn
        self.reset()

    def reset(self) -> None:
        """Forget the average: the next fit starts a new one."""
        self.n, self.steps = 0, 0
        self._avg: dict[str, torch.Tensor] | None = None
        self._stash: list[torch.Tensor] | None = None  # the trained weights while the model holds the average
        self._in_fit = False

    # --- the fit
    def before_fit(self, learn) -> None:
        tensors = {k: v.detach() for k, v in bare_model(learn.model).state_dict(keep_vars=True).items()}
        if not self._matches(tensors):
            self._avg, self._stash, self.n, self.steps = {k: v.clone() for k, v in tensors.items()}, None, 0, 0
        self._avg = {k: self._avg[k].to(v.device) for k, v in tensors.items()}
        self._names, self._live = list(tensors), list(tensors.values())
        self._pair_up()
        if self._stash is not None:
            self._give_back_trained()
        self._in_fit = True

    def _pair_up(self) -> None:
        """The (average, live) tensor lists each step updates, built once per fit and not every step:
        floats are averaged, integer buffers (BatchNorm's batch count) copied."""
        avg = list(self._avg.values())
        floats = [i for i, t in enumerate(self._live) if t.is_floating_point()]
        others = [i for i, t in enumerate(self._live) if not t.is_floating_point()]
        self._lerped = ([avg[i] for i in floats], [self._live[i] for i in floats])
        self._copied = ([avg[i] for i in others], [self._live[i] for i in others])

    def _matches(self, tensors: dict[str, torch.Tensor]) -> bool:
        return self._avg is not None and self._avg.keys() == tensors.keys() and all(
            self._avg[k].shape == v.shape for k, v in tensors.items())

    def _give_back_trained(self) -> None:
        """The model holds the average since the last fit: put the trained weights back, unless the model
        was loaded with other weights since (then training continues from those)."""
        if all(torch.equal(t, self._avg[k]) for k, t in zip(self._names, self._live)):
            _copy(self._live, [s.to(t.device) for s, t in zip(self._stash, self._live)])
        self._stash = None

    def after_step(self, learn) -> None:
        self.steps += 1
        if self.steps % self.every or not self._averaging(learn):
            return
        self.n += 1
        weight = 1 / self.n if self.swa_start is not None else 1 - self._decay()
        with torch.no_grad():
            torch._foreach_lerp_(*self._lerped, weight)
            if self._copied[0]:
                torch._foreach_copy_(*self._copied)

    def _averaging(self, learn) -> bool:
        if self.swa_start is None:
            return True
        if isinstance(self.swa_start, float):
            return learn.pct_train >= self.swa_start
        return learn.epoch >= self.swa_start

    def _decay(self) -> float:
        return min(self.decay, (1 + self.n) / (10 + self.n)) if self.warmup else self.decay

    def before_epoch(self, learn) -> None:
        if not learn.training and self.validate and self.n:
            self._hold_average()

    def after_epoch(self, learn) -> None:
        last_training_epoch = learn.training and learn.epoch == learn.n_epochs - 1
        if last_training_epoch and self.swa_start is not None and self.bn_pass and self.n:
            update_bn(learn, self)

    def cleanup_epoch(self, learn) -> None:
        self._release_average()

    def cleanup_fit(self, learn) -> None:
        if self._in_fit and self.final == "average" and self.n:
            self._hold_average()
        self._in_fit = False

    def _hold_average(self) -> None:
        if self._stash is None:
            self._stash = [t.clone() for t in self._live]
            _copy(self._live, list(self._avg.values()))

    def _release_average(self) -> None:
        if self._stash is not None:
            _copy(self._live, self._stash)
            self._stash = None

    # --- reading and checkpointing
    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the average, as a state dict of the (unwrapped) model."""
        if self._avg is None:
            raise RuntimeError("WeightAveragingCB has no average yet: fit with it first")
        return {k: v.clone() for k, v in self._avg.items()}

    def state_dict(self) -> dict:
        trained = None
        if self._stash is not None:  # the model holds the average: keep the weights training continues from
            trained = {k: t.clone() for k, t in zip(self._avg, self._stash)}
        return {"avg": self.averaged_state_dict() if self._avg is not None else None, "n": self.n,
                "steps": self.steps, "trained": trained}

    def load_state_dict(self, state: dict) -> None:
        """In a resumed fit (`fit(resume=path)`) the trained weights go back into the model at once. Loaded
        by hand between fits (`learn.load` restores no callback's state: pass it
        `read_checkpoint(path)["callbacks"]["WeightAveragingCB"]`), the model keeps the average it holds
        and the trained weights go back at the next fit."""
        self.n, self.steps = state["n"], state["steps"]
        self._avg = None if state["avg"] is None else {k: v.clone() for k, v in state["avg"].items()}
        trained = state["trained"]
        if self._in_fit:
            if trained is not None:
                _copy(self._live, [trained[k].to(t.device) for k, t in zip(self._names, self._live)])
            self._avg = {k: self._avg[k].to(t.device) for k, t in zip(self._names, self._live)}
            self._pair_up()
            self._stash = None
        else:
            self._stash = list(trained.values()) if trained is not None else None


class LookaheadCB(Callback):
    """Lookahead (Zhang et al., 2019): slow weights that the model's weights pull along and restart from.

    After every `every`-th optimizer step, with the model's weights `w` and the slow weights `s`:

        s <- s + alpha * (w - s),   then   w <- s

    `alpha` is a number in (0, 1] or a function of the fraction of training done (`learn.pct_train`), such as
    airbench's `1 - 0.95**5 * pct**3`: no pull at the start, stronger towards the end. Float buffers (BatchNorm
    statistics) are treated like the weights; integer ones are left alone. After the last training epoch the
    model takes the slow weights (so the last validation scores them). The slow weights start as the model's
    at the first fit, and again at a later fit whose model no longer holds them (other weights loaded since,
    e.g. `learn.load` or EarlyStoppingCB's best); after a fit cut short, the next goes on with them. Checkpoints
    hold them (resuming is exact). Updates are two foreach kernels on the
    model's device, no host sync.
    """

    order = 10  # with WeightAveragingCB: before callbacks that read the weights after a step

    def __init__(self, every: int = 5, alpha: float | Callable[[float], float] = 0.5):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"LookaheadCB needs every= a positive number of optimizer steps, got {every!r}")
        if not callable(alpha) and not 0 < alpha <= 1:
            raise ValueError(f"LookaheadCB needs 0 < alpha <= 1 (the pull of the slow weights toward the model's) or a "
                             f"function of the fraction of training done; got alpha={alpha!r}")
        self.every, self.alpha = every, alpha
        self.steps, self._slow, self._live, self._named_live = 0, None, None, None
        self._ended_on_slow = False  # the last fit ended by giving the model the slow weights
        self._started = False  # this fit's slow weights are settled (its first training epoch began)

    def before_fit(self, learn) -> None:
        live = {k: v.detach() for k, v in bare_model(learn.model).state_dict(keep_vars=True).items()
                if v.is_floating_point()}
        self._named_live, self._live = live, list(live.values())
        self._slow, self._started = self._placed(self._slow, live), False

    def before_epoch(self, learn) -> None:
        """At the fit's first training epoch, once every `before_fit` has run (WeightAveragingCB's puts the trained
        weights back in place of its average), the slow weights start, or go on."""
        if self._started or not learn.training:
            return
        live, slow = self._named_live, self._slow
        if slow is not None and self._ended_on_slow and not all(torch.equal(slow[k], v) for k, v in live.items()):
            slow = None  # the model got other weights since (learn.load, EarlyStoppingCB's best): go on from those
        self._slow, self._ended_on_slow = slow or {k: v.clone() for k, v in live.items()}, False
        self._started = True

    @staticmethod
    def _placed(slow: dict | None, live: dict) -> dict | None:
        """`slow` copied onto the devices of the model's tensors, or None where it does not fit the model."""
        if slow is None or slow.keys() != live.keys() or any(slow[k].shape != v.shape for k, v in live.items()):
            return None
        return {k: slow[k].to(v.device, copy=True) for k, v in live.items()}

    def cleanup_fit(self, learn) -> None:
        self._live = self._named_live = None

    def after_step(self, learn) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            alpha = self.alpha(learn.pct_train) if callable(self.alpha) else self.alpha
            self._sync(alpha)

    def after_epoch(self, learn) -> None:
        if learn.training and learn.epoch == learn.n_epochs - 1:
            self._sync(0.)  # the model ends on the slow weights, which the last validation then scores
            self._ended_on_slow = True

    def _sync(self, alpha: float) -> None:
        slow = list(self._slow.values())
        with torch.no_grad():
            torch._foreach_lerp_(slow, self._live, alpha)
            torch._foreach_copy_(self._live, slow)

    def state_dict(self) -> dict:
        slow = None if self._slow is None else {k: v.clone() for k, v in self._slow.items()}
        return {"steps": self.steps, "slow": slow}

    def load_state_dict(self, state: dict) -> None:
        """In a resumed fit (`fit(resume=path)`) training goes on from these slow weights; loaded between fits,
        the next fit starts from them."""
        self.steps, self._slow, self._ended_on_slow = state["steps"], state["slow"], False
        if self._live is not None:  # during the fit: from now on
            live = self._named_live
            self._slow = self._placed(self._slow, live) or {k: v.clone() for k, v in live.items()}


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    with torch.no_grad():
        torch._foreach_copy_(dst, src)


@torch.no_grad()
def update_bn(learn, averaging: WeightAveragingCB | None = None) -> None:
    """Estimate the BatchNorm statistics of the model (of `averaging`'s average, when given) again, as the
    exact mean over one pass of the training data in train mode; RNGs and data order are left unchanged.
    BatchNorm layers frozen with their statistics (`freeze(train_bn=False)`) keep theirs."""
    model = bare_model(learn.model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             and not stays_in_eval(m)]
    if not norms:
        return
    held = averaging is not None and averaging._stash is not None
    if averaging is not None:
        averaging._hold_average()
    momenta, was_training = [m.momentum for m in norms], model.training
    device = model_device(model)
    with random_states_kept(learn.dls):  # the pass over the training loader draws nothing a fit would
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the pass
            model.train()
            for batch in learn.dls.train:
                model(to_device(batch[0], device))
            for m in norms:
                all_reduce_mean(m.running_mean)
                all_reduce_mean(m.running_var)
            if averaging is not None:
                _copy(list(averaging._avg.values()), averaging._live)
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            model.train(was_training)
            if averaging is not None and not held:
                averaging._release_average()
