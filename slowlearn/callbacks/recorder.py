"""RecorderCB: hyper-parameters and the loss at every training batch, and their plots."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..callback import Callback
from ..device import DeviceFloats
from ..display import finished, integer_xticks, subplots
from ..distributed import all_reduce_mean
from .schedule import get_hyper

__all__ = ["RecorderCB"]

Getter = Callable[["RecorderCB"], float] | str


class RecorderCB(Callback):
    """Records values at every training batch (after the optimizer step: the values that step used).

    Each keyword names a value and says how to get it: a string names a hyper-parameter of the first
    param group (`"lr"`, `"mom"` for momentum or betas[0], `"wd"` for weight decay, or any key), a
    callable receives the recorder, whose `pg` is `learn.opt.param_groups[0]` and `learn` the
    learner (the seed's style: `RecorderCB(lr=lambda cb: cb.pg["lr"])`). `RecorderCB()` records lr
    and mom. The training loss is recorded too, on the device, and read in bulk at the end of each
    epoch (in a distributed run, as the mean over ranks).
    """

    order = 70
    reads_loss_value = True

    def __init__(self, **getters: Getter):
        self.getters = getters or {"lr": "lr", "mom": "mom"}
        self.recs: dict[str, list[float]] = {name: [] for name in self.getters}
        self._losses = DeviceFloats()

    @property
    def losses(self) -> list[float]:
        """The training loss of every recorded batch."""
        return self._losses.read()

    def before_fit(self, learn) -> None:
        self.learn = learn
        self.recs = {name: [] for name in self.getters}
        self._losses = DeviceFloats()

    def after_step(self, learn) -> None:
        self.pg = learn.opt.param_groups[0]
        for name, getter in self.getters.items():
            self.recs[name].append(get_hyper(self.pg, getter) if isinstance(getter, str) else getter(self))
        self._losses.append_loss(learn)

    def after_epoch(self, learn) -> None:
        if learn.training:  # the same point on every rank: losses become means over ranks
            self._losses.read(reduce=all_reduce_mean)

    def state_dict(self) -> dict:
        return {"recs": {k: list(v) for k, v in self.recs.items()}, "losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        """Continue the recording of a resumed run."""
        self.recs = {k: list(v) for k, v in state["recs"].items()}
        self._losses = DeviceFloats()
        self._losses.values = list(state["losses"])

    def cleanup_fit(self, learn) -> None:
        self._losses.read()
        self.learn = self.pg = None

    def plot(self, path: str | Path | None = None):
        """One panel per recorded value against the training batch (a Figure, saved as PNG at `path`)."""
        names = list(self.recs)
        fig, axs = subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
        for ax, name in zip(axs[0], names):
            ax.plot(self.recs[name])
            ax.set(xlabel="training batch", title=name)
            integer_xticks(ax)
        return finished(fig, path)

    def plot_loss(self, path: str | Path | None = None):
        """The training loss per batch (a Figure, saved as PNG at `path`)."""
        fig, ax = subplots(figsize=(5, 3))
        ax.plot(self.losses)
        ax.set(xlabel="training batch", ylabel="loss", title="Training loss")
        integer_xticks(ax)
        return finished(fig, path)
