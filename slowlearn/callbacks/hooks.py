"""ActivationStatsCB: per-layer activation statistics from forward hooks, and the plots that show them."""
from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..arguments import check_range
from ..callback import Callback
from ..display import finished, integer_xticks, subplots
from ..distributed import all_reduce_mean, all_reduce_sum, world_size
from ..models import GeneralReLU

__all__ = ["ActivationStatsCB", "ACTIVATIONS"]

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, GeneralReLU)


class ActivationStatsCB(Callback):
    """Mean, std, histogram and near-zero ("dead") fraction of layer outputs, every `every` training batches.

    `modules` defaults to the model's activation layers (ReLU, GeneralReLU, ...), or its top-level
    children if it has none. Statistics stay on the device and are read once per epoch. The
    histogram counts |activation| in `bins` bins over [0, `hist_max`]; "dead" means |activation| <
    `dead_below`. `names` holds the layers' paths in the model ("0.1"); plots label them in order
    from 1 with their class (`labels`: "1: GeneralReLU", ...). Hooks are removed when the fit ends,
    also after an error. Plots: `plot_stats()`, `color_dim()`, `dead_chart()`; `stats[i]` holds layer i's lists
    (`mean`, `std`, `dead`, `hist`). A module that runs several times a batch (one nn.ReLU used after several
    layers) records a row for each run, in turn: that is a warning.
    """

    def __init__(self, modules: list[nn.Module] | None = None, every: int = 1, with_hist: bool = True,
                 bins: int = 40, hist_max: float = 10., dead_below: float = 0.05):
        check_range("every", every, 1, integer=True, owner="ActivationStatsCB")
        check_range("bins", bins, 1, integer=True, owner="ActivationStatsCB")
        check_range("hist_max", hist_max, 0., low_open=True, owner="ActivationStatsCB")
        check_range("dead_below", dead_below, 0., owner="ActivationStatsCB")
        self.modules, self.every, self.with_hist = modules, every, with_hist
        self.bins, self.hist_max, self.dead_below = bins, hist_max, dead_below
        self.hooks: list = []
        self.stats: list[dict] = []
        self._pending, self._pending_hist = [], []  # what the hooks recorded, read once per epoch

    def before_fit(self, learn) -> None:
        model = learn.model
        modules = self.modules or [m for m in model.modules() if isinstance(m, ACTIVATIONS)] or list(model.children())
        names = {m: name for name, m in model.named_modules()}
        self.names = [names.get(m, type(m).__name__) for m in modules]
        self.labels = [f"{i}: {type(m).__name__}" for i, m in enumerate(modules, 1)]
        self.stats = [{"mean": [], "std": [], "dead": [], "hist": []} for _ in modules]
        self._pending = [[] for _ in modules]
        self._pending_hist = [[] for _ in modules]
        self._recording, self._n_recorded, self._warned = False, 0, False
        self.hooks = [m.register_forward_hook(partial(self._hook, i)) for i, m in enumerate(modules)]

    def before_batch(self, learn) -> None:
        self._recording = learn.training and learn.iter % self.every == 0
        self._n_recorded += self._recording

    def _hook(self, i: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if not self._recording:
            return
        out = output.detach().float()
        std, mean = torch.std_mean(out)
        magnitude = out.abs()
        dead = (magnitude < self.dead_below).float().mean()
        self._pending[i].append(torch.stack([mean, std, dead]))
        if self.with_hist:
            self._pending_hist[i].append(torch.histc(magnitude, self.bins, 0, self.hist_max))

    def after_epoch(self, learn) -> None:
        if learn.training:  # the same point on every rank: statistics become global in a distributed run
            self._warn_of_reused_modules()
            self._read(distributed=world_size() > 1)

    def _warn_of_reused_modules(self) -> None:
        """A module that runs several times a batch (one nn.ReLU after several layers) records a row for each run."""
        reused = [f"{label} ({name}) ran {len(pending) // self._n_recorded} times"
                  for label, name, pending in zip(self.labels, self.names, self._pending)
                  if self._n_recorded and len(pending) > self._n_recorded]
        if reused and not self._warned:
            self._warned = True
            warnings.warn(f"ActivationStatsCB: {'; '.join(reused)} in each training batch (one module used at several "
                          f"places of the model), so its statistics interleave the rows of those places, one per run. "
                          f"To see each place on its own, give each place its own module (e.g. one nn.ReLU() per "
                          f"layer), or pass modules= those used once.", stacklevel=2)
        self._n_recorded = 0

    def cleanup_fit(self, learn) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self._read()

    def _read(self, distributed: bool = False) -> None:
        for stats, pending, hists in zip(self.stats, self._pending, self._pending_hist):
            if pending:
                values = torch.stack(pending)
                if distributed:  # average mean, E[x^2] and dead fraction over ranks (equal shards)
                    mean, std, dead = values.T
                    mean, sq, dead = all_reduce_mean(torch.stack([mean, std ** 2 + mean ** 2, dead]))
                    values = torch.stack([mean, (sq - mean ** 2).clamp_min(0).sqrt(), dead], 1)
                mean, std, dead = values.T.tolist()
                stats["mean"] += mean
                stats["std"] += std
                stats["dead"] += dead
            if hists:
                hist = torch.stack(hists)
                stats["hist"] += list((all_reduce_sum(hist) if distributed else hist).cpu())
            pending.clear()
            hists.clear()

    def plot_stats(self, path: str | Path | None = None):
        """Mean and std of each layer's output over the recorded batches."""
        fig, (mean_ax, std_ax) = subplots(1, 2, figsize=(10, 3.5))
        for name, stats in zip(self.labels, self.stats):
            mean_ax.plot(stats["mean"], label=name)
            std_ax.plot(stats["std"], label=name)
        mean_ax.set(title="Activation means", xlabel="recorded batch")
        std_ax.set(title="Activation stds", xlabel="recorded batch")
        for ax in (mean_ax, std_ax):
            integer_xticks(ax)
        std_ax.legend(fontsize=8)
        return finished(fig, path)

    def color_dim(self, path: str | Path | None = None):
        """Each layer's histogram of |activation| over time (log colour scale). A bright bottom row means
        many activations in the lowest bin, [0, hist_max / bins), which holds small as well as dead
        ones: `dead_chart` gives the fraction that is really near zero."""
        n = len(self.stats)
        cols = min(n, 4)
        rows = -(-n // cols)
        fig, axs = subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        for ax, name, stats in zip(axs.flat, self.labels, self.stats):
            if stats["hist"]:
                image = torch.stack(stats["hist"]).T.log1p().numpy()
                ax.imshow(image, origin="lower", aspect="auto", extent=(0, len(stats["hist"]), 0, self.hist_max))
            ax.set(title=name, xlabel="recorded batch", ylabel="|activation|")
        for ax in list(axs.flat)[n:]:
            ax.axis("off")
        return finished(fig, path)

    def dead_chart(self, path: str | Path | None = None):
        """Fraction of each layer's activations that are near zero, over the recorded batches."""
        fig, ax = subplots(figsize=(6, 3.5))
        for name, stats in zip(self.labels, self.stats):
            ax.plot(stats["dead"], label=name)
        ax.set(title=f"Near-zero activations (|x| < {self.dead_below})", xlabel="recorded batch",
               ylabel="fraction", ylim=(0, 1))
        integer_xticks(ax)
        ax.legend(fontsize=8)
        return finished(fig, path)
