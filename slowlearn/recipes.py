"""Speed recipes: the fastest known way, on the hardware at hand, to a target accuracy with slowlearn's
Learner and callbacks (`benchmarks/speedrun.py` measures them).

    from slowlearn.recipes import fashion_mnist_recipe
    result = fashion_mnist_recipe(seed=0)   # result.accuracy (test set, flip TTA), result.seconds

Each recipe is `speed_net` (early downsampling, a whitened first layer, widths for the budget),
Nesterov SGD with a triangular lr schedule as a pure function of progress, label smoothing, random
crop + flip on the training batches, and flip test-time augmentation; precision and layout come
from `speed_settings` ("auto": bf16 autocast where the hardware runs it natively). The CIFAR-10
recipe adds two of airbench94's choices: a 64 times larger lr for the BatchNorm shifts
(`GradientMultiplierCB`) and Lookahead (`LookaheadCB`) pulling harder towards the end.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .callback import Callback
from .callbacks import (
    GradientMultiplierCB,
    LookaheadCB,
    MixedPrecisionCB,
    ParamSchedulerCB,
    ProgressCB,
    RecorderCB,
    combine_scheds,
    sched_lin,
    speed_cbs,
)
from .data import BatchAugment, BatchLoader, DataLoaders, cifar10, fashion_mnist
from .device import default_device
from .learner import Learner
from .models import speed_net, whiten_first_conv
from .randomness import set_seed
from .train import default_cbs

__all__ = ["RecipeConfig", "RecipeResult", "FASHION_MNIST", "CIFAR10", "RECIPES", "run_recipe",
           "fashion_mnist_recipe", "cifar10_recipe", "nesterov_sgd", "triangular_lr", "lookahead_alpha", "tta_accuracy"]


@dataclass(frozen=True)
class RecipeConfig:
    """Everything a recipe chooses; `dataclasses.replace(FASHION_MNIST, epochs=...)` makes a variant."""
    epochs: int
    bs: int
    lr: float
    widths: tuple[int, ...]
    in_channels: int
    wd: float = 1e-3
    mom: float = 0.85
    label_smoothing: float = 0.2
    pad: int = 2
    flip: bool = True
    pct_warmup: float = 0.2
    lr_end: float = 0.02  # the lr at the end, as a fraction of the peak
    whiten_patch: int = 2
    bn_shift_lr_mult: float = 1.  # the BatchNorm shifts' lr over the others' (GradientMultiplierCB)
    lookahead: bool = False  # LookaheadCB every 5 steps with `lookahead_alpha`


@dataclass
class RecipeResult:
    """A recipe's trained Learner, its test accuracy (with TTA), and the seconds from the first batch
    to that accuracy (training and the TTA evaluation)."""
    learn: Learner
    accuracy: float
    seconds: float


# lr and wd from 3-epoch runs on 12 000 Fashion-MNIST images (flip-TTA test accuracy): lr 0.3 / wd 5e-4
# 83.1 %, lr 0.75 / wd 1e-3 86.9 %, lr 1.5 / wd 1e-3 87.4 %. Epochs for the time budget (see benchmarks/speedrun.py).
FASHION_MNIST = RecipeConfig(epochs=5, bs=512, lr=1.5, wd=1e-3, widths=(32, 64, 128), in_channels=1, pad=2)
# airbench94's batch size and per-example lr (its lr 11.5 per 1024 summed losses is 1.5 on the mean loss), its weight
# decay per step (0.0153 per 1024 examples: 1.33e-3 coupled to lr 1.5), lr down to 0, BatchNorm shifts at 64x the lr,
# and Lookahead. On the JPEG set (seed 0, flip TTA) with airbench94's widths (64, 256, 256): 89.77 % with
# Fashion-MNIST's settings (bs 500, wd 1e-3, lr end 2 %), 90.23 % with these; with widths 80/320/320 (1.5x the
# FLOPs) 90.94 % (seeds 1 and 2: 90.61 and 90.56 %; benchmarks/cifar_curve.py; the speed guide has the curves).
CIFAR10 = RecipeConfig(epochs=10, bs=1000, lr=1.5, wd=1.33e-3, widths=(80, 320, 320), in_channels=3, pad=2, lr_end=0.,
                       bn_shift_lr_mult=64., lookahead=True)


def nesterov_sgd(mom: float, wd: float) -> Callable:
    """An opt_func: torch's Nesterov SGD (foreach); a fixed layer (the whitening) has no gradient, so no step."""
    def make(params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=True, weight_decay=wd, foreach=True)
    return make


def triangular_lr(peak: float, pct_warmup: float, start: float = 0.2, end: float = 0.02) -> Callable:
    """Linear warm-up from `start * peak` to `peak`, then a linear decay to `end * peak`."""
    return combine_scheds([pct_warmup, 1 - pct_warmup], [sched_lin(start * peak, peak), sched_lin(peak, end * peak)])


def lookahead_alpha(pct: float) -> float:
    """airbench's Lookahead pull at the fraction `pct` of training: 1 - 0.95**5 * pct**3 (none at the start)."""
    return 1 - 0.95 ** 5 * pct ** 3


def _recipe_cbs(config: RecipeConfig) -> list[Callback]:
    """The callbacks that `config`'s optional choices add (none for the defaults)."""
    cbs: list[Callback] = []
    if config.bn_shift_lr_mult != 1:
        cbs.append(GradientMultiplierCB(config.bn_shift_lr_mult))
    if config.lookahead:
        cbs.append(LookaheadCB(every=5, alpha=lookahead_alpha))
    return cbs


@torch.no_grad()
def tta_accuracy(learn: Learner, dl=None) -> float:
    """Accuracy on `dl` (default: the validation set) averaging each image's prediction with its mirror's."""
    p = learn.get_preds(dl, tta=True)
    return (p.preds.argmax(-1) == p.targets).float().mean().item()


def _model(config: RecipeConfig, dls: DataLoaders) -> nn.Module:
    model = speed_net(config.in_channels, config.widths, n_classes=len(dls.classes), patch=config.whiten_patch)
    pick = torch.randperm(len(dls.train.x))[:5000].to(dls.train.x.device)  # image folders are stored class by class
    sample = dls.train.normalise(dls.train.x[pick]).cpu()
    whiten_first_conv(model[0], sample)
    return model


def run_recipe(config: RecipeConfig, dls: DataLoaders, seed: int = 0, precision: str = "auto",
               cbs: Sequence[Callback] = (), valid: bool = False, quiet: bool = False,
               verbose: int | None = None) -> RecipeResult:
    """Train `config` on `dls` from `seed` and return the Learner, its TTA test accuracy and the time.

    `valid=True` also validates after every epoch (about 5 % more time); the final accuracy is measured
    with flip TTA either way. `cbs` are added (e.g. a CSV logger); `quiet` shows progress bars only; `verbose`
    is ProgressCB's otherwise (None: bars on a terminal, one line per epoch and phase in a file)."""
    set_seed(seed)
    start = time.perf_counter()
    _use_recipe_augmentation(dls, config)
    model = _model(config, dls)
    speed = speed_cbs(model, precision, verbose=not quiet)
    base = default_cbs(verbose)
    if quiet:  # progress bars only
        base = [cb for cb in base if not isinstance(cb, ProgressCB)] + [ProgressCB(plot=False, table=False)]
    schedule = ParamSchedulerCB(lr=triangular_lr(config.lr, config.pct_warmup, end=config.lr_end))
    learn = Learner(model, dls, partial(F.cross_entropy, label_smoothing=config.label_smoothing), lr=config.lr,
                    cbs=[*base, *speed, RecorderCB(), schedule, *_recipe_cbs(config), *cbs],
                    opt_func=nesterov_sgd(config.mom, config.wd))
    learn.fit(config.epochs, valid=valid)
    bf16 = any(isinstance(cb, MixedPrecisionCB) for cb in speed)
    with torch.autocast(default_device().type, dtype=torch.bfloat16, enabled=bf16):  # evaluated as trained
        accuracy = tta_accuracy(learn)
    return RecipeResult(learn, accuracy, time.perf_counter() - start)


def _use_recipe_augmentation(dls: DataLoaders, config: RecipeConfig) -> None:
    """Give the training loader the recipe's augmentation, which is part of the recipe. Loaders that would not
    apply it (not slowlearn's), or that carry an augmentation of their own, are refused: the recipe would
    silently train without its augmentation, or replace the user's."""
    train, wanted = dls.train, BatchAugment(pad=config.pad, flip=config.flip)
    if not isinstance(train, BatchLoader):
        raise TypeError(f"run_recipe trains with its own augmentation ({wanted!r}), which only slowlearn's loaders "
                         f"apply, not a {type(train).__name__}: make the loaders with slowlearn (TensorLoader, "
                         f"image_folder), or train with Learner.fit_one_cycle and your own augmentation")
    if train.aug is not None and repr(train.aug) != repr(wanted):
        raise ValueError(f"run_recipe trains with its own augmentation ({wanted!r}), and the training loader has "
                         f"another ({train.aug!r}) that it would replace: make the loaders with aug=None, or train "
                         f"with Learner.fit_one_cycle to keep yours")
    train.aug = wanted


def fashion_mnist_recipe(seed: int = 0, dls: DataLoaders | None = None, precision: str = "auto",
                         cbs: Sequence[Callback] = (), config: RecipeConfig = FASHION_MNIST, **kwargs) -> RecipeResult:
    """Fashion-MNIST to >= 93 % test accuracy (target: in 2 minutes on two CPU cores)."""
    dls = dls if dls is not None else fashion_mnist(config.bs)
    return run_recipe(config, dls, seed, precision, cbs, **kwargs)


def cifar10_recipe(seed: int = 0, dls: DataLoaders | None = None, precision: str = "auto",
                   cbs: Sequence[Callback] = (), config: RecipeConfig = CIFAR10, **kwargs) -> RecipeResult:
    """CIFAR-10 towards >= 90.5 % test accuracy (target: in 10 minutes on two CPU cores with AMX)."""
    dls = dls if dls is not None else cifar10(config.bs, aug=None)
    return run_recipe(config, dls, seed, precision, cbs, **kwargs)


RECIPES: dict[str, Callable[..., RecipeResult]] = {"fashion_mnist": fashion_mnist_recipe, "cifar10": cifar10_recipe}
