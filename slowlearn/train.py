"""Training helpers: the seed's `train(model, lr, ...)`, `train_1cycle`, `vision_learner` (a pretrained body with a
new head) and `compare_optimizers`."""
from __future__ import annotations

import copy
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .callback import Callback, defaults_not_given
from .callbacks import DeviceCB, DistributedCB, MetricsCB, ProgressCB, RecorderCB, speed_cbs
from .data import DataLoaders, fashion_mnist
from .device import default_device
from .display import TablePrinter, finished, integer_xticks, subplots
from .distributed import world_size
from .learner import Learner
from .models import DEFAULT_HEAD, data_shape, pretrained_model, pretrained_splitter
from .randomness import randomness, restore_randomness

__all__ = ["train", "train_1cycle", "vision_learner", "default_cbs", "fast_adamw", "compare_optimizers",
           "optimizer_state_bytes"]

DEFAULT_BS = 512  # train's and train_1cycle's Fashion-MNIST batches


def default_cbs(verbose: int | None = None, metrics=None, given: Sequence[Callback] = ()) -> list[Callback]:
    """Device placement, loss and metrics per epoch, and progress (`ProgressCB(verbose=verbose)`):
    what `train` always uses; under torchrun (WORLD_SIZE > 1) also DistributedCB. `metrics`: torcheval metrics
    as a {column: metric} dict or a list (columns named after their classes); None: accuracy.
    Callbacks of `given` (the user's own MetricsCB, ProgressCB, DeviceCB, DistributedCB) win: none of their kind
    is added."""
    own_metrics = any(isinstance(cb, MetricsCB) for cb in given)
    if metrics is not None and own_metrics:
        raise ValueError("metrics= and a MetricsCB in cbs: give the metrics one way, not both")
    cbs = [DistributedCB()] if world_size() > 1 else []
    cbs += [DeviceCB(), *([] if own_metrics else [_metrics_cb(metrics)]), ProgressCB(verbose=verbose)]
    return defaults_not_given(cbs, given)


def _metrics_cb(metrics) -> MetricsCB:
    if metrics is None:
        from torcheval.metrics import MulticlassAccuracy  # imported when used: it takes a second
        metrics = {"accuracy": MulticlassAccuracy()}
    return MetricsCB(**metrics) if isinstance(metrics, dict) else MetricsCB(*metrics)


def train(model: nn.Module, lr: float, n_epochs: int = 3, bs: int | None = None,
          opt_func: Callable = torch.optim.SGD, cbs: Sequence[Callback] = (), dls: DataLoaders | None = None,
          loss_func: Callable = F.cross_entropy, resume: str | None = None, verbose: int | None = None) -> Learner:
    """Train a Fashion-MNIST model (in batches of `bs`, default 512; or one on `dls`, whose batches are theirs),
    printing accuracy and loss per epoch and phase.

    `cbs` are added to the defaults (device, metrics, progress; one of those kinds in `cbs` replaces the default's,
    e.g. `MetricsCB(f1=...)`). `verbose` is ProgressCB's: 0 nothing,
    1 progress bars, 2 one line per epoch and phase, None (default) bars on a terminal or in a
    notebook and lines in a log file. `resume=path` continues the run
    checkpointed there (by CheckpointCB) when called again with the same arguments; `resume="auto"` does so
    from the CheckpointCB in `cbs` when its file is there, and starts afresh when it is not. Returns the
    Learner: its `history` holds the table, `learn.progress.plot_loss()` draws the loss curve.
    """
    dls = _data(dls, bs, "train")
    learn = Learner(model, dls, loss_func, lr=lr, cbs=[*default_cbs(verbose, given=cbs), *cbs], opt_func=opt_func)
    return learn.fit(n_epochs, resume=resume)


def _data(dls: DataLoaders | None, bs: int | None, owner: str) -> DataLoaders:
    """`dls`, or Fashion-MNIST in batches of `bs` (default DEFAULT_BS). A `bs` given with `dls` that do not have
    it is refused: it would be ignored."""
    if dls is None:
        return fashion_mnist(bs or DEFAULT_BS)
    train = dls.train  # a DataLoader made with batch_sampler= has batch_size None: its sampler's is the one
    loader_bs = getattr(train, "bs", None) or getattr(train, "batch_size", None) or \
        getattr(getattr(train, "batch_sampler", None), "batch_size", None)
    if bs is not None and bs != loader_bs:
        batches = f"in batches of {loader_bs}" if loader_bs is not None else "whose batches are their own"
        raise ValueError(f"{owner}: bs={bs} sizes the Fashion-MNIST batches it loads, but dls= are given, {batches}: "
                         f"make the loaders with bs={bs}, or leave bs out")
    return dls


def fast_adamw() -> Callable:
    """torch's AdamW in its fastest form here: fused kernels on CUDA, foreach on the CPU."""
    if default_device().type == "cuda":
        return partial(torch.optim.AdamW, fused=True)
    return partial(torch.optim.AdamW, foreach=True)


def train_1cycle(model: nn.Module, lr: float = 1e-2, n_epochs: int = 3, dls: DataLoaders | None = None,
                 opt_func: Callable | None = None, cbs: Sequence[Callback] = (), bs: int | None = None,
                 loss_func: Callable = F.cross_entropy, resume: str | None = None, verbose: int | None = None,
                 precision: str = "auto",
                 **one_cycle_kwargs) -> Learner:
    """One-cycle training: AdamW, lr warmed up to `lr` then annealed (cosine), momentum (beta1) cycled
    the opposite way, set every batch from training progress by `Learner.fit_one_cycle`
    (`one_cycle_kwargs` go to it: `pct_start`, `div`, `div_final`, `moms`).

    Fashion-MNIST in batches of `bs` (default 512), or any `dls` (whose batches are theirs). `cbs` are added to those
    of `train` and a RecorderCB (one of those kinds in `cbs` replaces the default's). `opt_func=None` picks
    `fast_adamw()`. `precision="auto"`
    trains wide models in bf16 autocast where the hardware runs bf16 natively, and CNNs in channels-last
    where it pays (`speed_cbs`; your own MixedPrecisionCB or ChannelsLastCB in `cbs` wins); "fp32",
    "bf16", "fp16" as asked. `resume=path`
    continues the run checkpointed there when called again with the same arguments (`resume="auto"`: from
    the file of the CheckpointCB in `cbs` when there is one, else afresh). Prints the precision chosen and the
    metrics table (`verbose` as in `train`; 0 prints neither) and returns the Learner: `learn.recorder.plot()`
    shows lr and momentum per batch.
    """
    dls = _data(dls, bs, "train_1cycle")
    speed = speed_cbs(model, precision, given=cbs, verbose=verbose != 0)
    defaults = [*default_cbs(verbose, given=cbs), *speed, *defaults_not_given([RecorderCB()], cbs)]
    learn = Learner(model, dls, loss_func, lr=lr, cbs=[*defaults, *cbs], opt_func=opt_func or fast_adamw())
    return learn.fit_one_cycle(n_epochs, lr, resume=resume, **one_cycle_kwargs)


def vision_learner(dls: DataLoaders, arch: str | Callable, pretrained: bool = True, weights=None,
                   n_out: int | None = None, head: str = DEFAULT_HEAD, stats: tuple | None = None,
                   loss_func: Callable = F.cross_entropy, lr: float | slice | Sequence[float] = 1e-3,
                   opt_func: Callable | None = None, cbs: Sequence[Callback] = (), metrics=None,
                   precision: str = "auto", verbose: int | None = None) -> Learner:
    """A Learner for `dls` from a pretrained body with a new head (fastai's `vision_learner`):
    `vision_learner(dls, "resnet34").fine_tune(3)`.

    `arch`: a torchvision classification model's name ("resnet18", "convnext_tiny"; all are in
    `torchvision.models.list_models(module=torchvision.models)`; googlenet and inception_v3 come without their
    auxiliary heads), a torchvision builder (`torchvision.models.resnet34`) or "timm:<name>" (any timm model; `pip
    install slowlearn[timm]`). Its weights come from torchvision's cache ($TORCH_HOME/hub/checkpoints), the Hugging
    Face cache (timm) or `weights=` (a .pth state dict or .safetensors file, or a torchvision weights enum member),
    and are downloaded only when not there, not offline (HF_HUB_OFFLINE=1 or SLOWLEARN_OFFLINE=1) and the server
    answers; else the error says where to put which file. `pretrained=False`: random weights, no file needed.

    The head has one output per class of `dls` (or `n_out`); `head` is "linear" or "concat" (fastai's), see
    `slowlearn.models.pretrained` for which and why. With pretrained weights the loaders (changed in place, once
    every argument is checked: a refused call leaves them as they were) normalise with the statistics the weights
    were trained with, or `stats=(mean, std)` (a number each, or one per channel of the images: RGB statistics for
    grayscale images are refused, not averaged), and exports record them; the body starts frozen (`learn.freeze()`:
    only the head and BatchNorm layers train) until `fine_tune` or `unfreeze`. Param groups: a ResNet in three (stem
    and early layers, late layers, head), others in two (body, head), so `lr=slice(lo, hi)` spreads over them.
    Grayscale data into a 3-channel body works (its first convolution's weights are summed over the channels). A
    warning says which `size=` to try when the images are far smaller than those the weights were trained on.

    The rest as `train_1cycle`: `opt_func=None` is `fast_adamw()`, `cbs` come after device, metrics (`metrics`: as
    `default_cbs` takes them), progress, the `precision` callbacks and a RecorderCB (one of those kinds in `cbs`
    replaces the default's); `lr` is `learn.lr`.
    """
    channels, classes = data_shape(dls)
    if n_out is None and classes is None:
        raise ValueError("vision_learner: these loaders name no classes (dls.classes): pass n_out=")
    _check_stats(stats, channels)
    body = pretrained_model(arch, n_out or classes, channels, pretrained, weights, head)
    mean, std = stats if stats is not None else (body.mean, body.std)
    loaders = _loaders_to_normalise(dls) if mean is not None else []
    if body.size is not None:
        _warn_if_small(dls, body.size, body.name)
    speed = speed_cbs(body.model, precision, given=cbs, verbose=verbose != 0)
    defaults = [*default_cbs(verbose, metrics, given=cbs), *speed, *defaults_not_given([RecorderCB()], cbs)]
    learn = Learner(body.model, dls, loss_func, lr=lr, splitter=pretrained_splitter, opt_func=opt_func or fast_adamw(),
                    cbs=[*defaults, *cbs])
    for loader in loaders:  # only now that every argument is checked: an error leaves the user's loaders as they were
        loader.normalise_with(mean, std)
    if pretrained:
        learn.freeze()
    return learn


def _check_stats(stats, channels: int) -> None:
    """`stats=`: (mean, std), each one number or one per channel of the images, std above 0."""
    if stats is None:
        return
    try:
        mean, std = (torch.as_tensor(values, dtype=torch.float32) for values in stats)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"vision_learner: stats={stats!r}: give (mean, std), each a number or one per channel of "
                         f"the images") from None
    if any(values.ndim > 1 or values.numel() not in (1, channels) for values in (mean, std)):
        grey = (f"; for grayscale images and RGB statistics, their average: stats=([{mean.mean():.3f}], "
                f"[{std.mean():.3f}]), or leave stats out (pretrained weights' own are averaged over the channels)")
        raise ValueError(f"vision_learner: stats={stats!r} has {mean.numel()} mean(s) and {std.numel()} std(s), but "
                         f"the images have {channels} channel(s): give one mean and one std per channel (or one "
                         f"number for all)" + (grey if channels == 1 else ""))
    if (std <= 0).any():
        raise ValueError(f"vision_learner: stats={stats!r}: a std must be above 0")


def _loaders_to_normalise(dls: DataLoaders) -> list:
    """The loaders of `dls`, each able to be told other statistics (checked before any is)."""
    loaders = []
    for split in ("train", "valid", "test"):
        loader = getattr(dls, split, None)
        if loader is None:
            continue
        if not hasattr(loader, "normalise_with"):
            raise TypeError(f"vision_learner: the {split} loader ({type(loader).__name__}) cannot be told to normalise "
                            f"with the pretrained weights' statistics: use slowlearn's loaders (image_folder, "
                            f"image_csv, cifar10, TensorLoader), or pass stats= and normalise your loader yourself")
        loaders.append(loader)
    return loaders


def _warn_if_small(dls: DataLoaders, trained_size: int, name: str) -> None:
    """Once per call site: images with a side under half of what the weights were trained at."""
    x = getattr(dls.train, "x", None)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or min(x.shape[-2:]) * 2 >= trained_size:
        return
    h, w = x.shape[-2:]
    warnings.warn(f"The images are {h}x{w} but {name}'s weights were trained on {trained_size}x{trained_size} images: "
                  f"the features it learnt are of another scale, and a CNN shrinks small images to a few pixels. Try "
                  f"loaders made with size={trained_size} (or at least {trained_size // 2}; --size {trained_size} on "
                  f"the command line).", stacklevel=3)


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (momentum buffers, moment estimates...)."""
    return sum(v.numel() * v.element_size() for state in opt.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def compare_optimizers(model_fn: Callable[[], nn.Module], optimizers: dict[str, tuple[Callable, float]],
                       n_epochs: int = 3, dls: DataLoaders | None = None, cbs: Sequence[Callback] = (),
                       loss_func: Callable = F.cross_entropy):
    """Train the same initial weights on the same batches with each `{name: (opt_func, lr)}`.

    Returns `(rows, fig)`: one row per optimizer (final train/valid loss and accuracy, seconds, and
    optimizer-state bytes per parameter byte: 0 for SGD, 1 for momentum, 2 for Adam), printed as
    a table, and a Figure of the training loss per batch and the validation accuracy per epoch.
    """
    from torcheval.metrics import MulticlassAccuracy
    dls = dls if dls is not None else fashion_mnist()
    initial = copy.deepcopy(model_fn().state_dict())
    same_start = randomness(dls)
    rows, curves = [], {}
    print_row = TablePrinter(lambda line: print(line, file=sys.stdout, flush=True))
    for name, (opt_func, lr) in optimizers.items():
        model = model_fn()
        model.load_state_dict(initial)
        restore_randomness(dls, same_start)  # the same batches (and augmentations) for every optimizer
        quiet = [DeviceCB(), MetricsCB(accuracy=MulticlassAccuracy()), ProgressCB(plot=False, table=False)]
        learn = Learner(model, dls, loss_func, lr=lr, cbs=[*quiet, *cbs], opt_func=opt_func)
        start = time.perf_counter()
        learn.fit(n_epochs)
        seconds = time.perf_counter() - start
        train_row, valid_row = learn.history[-2], learn.history[-1]
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        rows.append({"optimizer": name, "lr": lr, "train_loss": train_row["loss"],
                     "train_acc": train_row["accuracy"], "valid_loss": valid_row["loss"],
                     "valid_acc": valid_row["accuracy"], "seconds": seconds,
                     "state/param bytes": optimizer_state_bytes(learn.opt) / param_bytes})
        print_row({k: v for k, v in rows[-1].items() if k != "seconds"} | {"time": f"{seconds:.1f} s"})
        curves[name] = (learn.progress.train_losses, [r["accuracy"] for r in learn.history if r["phase"] == "valid"])
    return rows, _comparison_figure(curves)


def _comparison_figure(curves: dict[str, tuple[list[float], list[float]]]):
    fig, (loss_ax, acc_ax) = subplots(1, 2, figsize=(10, 3.5))
    for name, (losses, accs) in curves.items():
        loss_ax.plot(range(1, len(losses) + 1), losses, lw=1, label=name)
        acc_ax.plot(range(len(accs)), accs, "o-", label=name)
    loss_ax.set(xlabel="training batch", ylabel="loss", title="Training loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    for ax in (loss_ax, acc_ax):
        integer_xticks(ax)
        ax.legend()
    return finished(fig)
