"""Data checks, so that bad data stops with an error that says what is wrong and how to fix it
instead of a cryptic one from deep inside torch (or, on a GPU, a device-side assert that kills the
process). The Learner checks its loaders before a fit and the first batch of each phase, so the
checks cost nothing on the batches after it."""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from .callback import CancelException

__all__ = ["check_loaders", "check_steps_per_epoch", "first_batch", "check_inputs", "check_targets", "check_loss",
           "describe_batch", "SingleItemBatchError"]

IGNORE_INDEX = -100  # cross_entropy's default ignore_index: a legal target
FEW_STEPS = 8  # optimizer steps per epoch below which training barely gets going
GOOD_STEPS = 20  # what the suggested batch size gives at least
SMALLEST_SUGGESTED_BS = 16


def check_loaders(dls, train: bool, valid: bool) -> None:
    """Before a fit: each loader the fit will use has at least one batch, and data held in memory as
    tensors (a TensorLoader's, a TensorDataset's) is finite, all of it."""
    if not (train or valid):
        raise ValueError("fit(train=False, valid=False) runs neither phase, so it would do nothing: train=True "
                         "trains, valid=True (alone: a validation-only fit) scores the model, as learn.validate() does")
    for phase in [phase for phase, wanted in (("train", train), ("valid", valid)) if wanted]:
        loader = getattr(dls, phase)
        if loader is None:
            raise ValueError(f"There is no {phase} loader: give DataLoaders one, or fit with {phase}=False.")
        if _length(loader, phase) == 0:
            raise ValueError(f"The {phase} loader has no batches: check the dataset is not empty and that "
                             f"drop_last=True is not dropping a dataset smaller than one batch.")
        for what, data in zip(("inputs", "targets"), _tensors_in_memory(loader)):
            _check_finite(data, f"The {phase} set's {what}")
    if train:
        check_steps_per_epoch(dls.train)


def _length(loader, phase: str) -> int:
    try:
        return len(loader)
    except TypeError:
        raise TypeError(f"The {phase} loader has no length ({type(loader).__name__} of "
                        f"{type(getattr(loader, 'dataset', loader)).__name__}; an IterableDataset has none), but a fit "
                        f"needs its batches an epoch (for progress, schedules and pct_train): give the dataset a "
                        f"__len__, or use a map-style dataset (__getitem__ and __len__).") from None


def check_steps_per_epoch(loader) -> None:
    """Warn when an epoch of `loader` has fewer than 8 optimizer steps where a batch size of 16 or more would give
    at least 8, saying which batch size to try (on 1,600 images, batches of 512 gave 4 steps an epoch and 42 %
    accuracy where batches of 64 gave 70 %). Python shows each such warning once."""
    bs = getattr(loader, "bs", None) or getattr(loader, "batch_size", None)
    n_items = getattr(loader, "n_items", None)
    if n_items is None:
        try:
            n_items = len(loader.dataset)
        except (AttributeError, TypeError):
            return
    steps = len(loader)
    if not isinstance(bs, int) or steps >= FEW_STEPS:
        return
    suggested = max(SMALLEST_SUGGESTED_BS, 2 ** int(math.log2(max(n_items / GOOD_STEPS, 1))))
    if suggested >= bs or math.ceil(n_items / suggested) < FEW_STEPS:  # tiny data: no batch size helps much
        return
    warnings.warn(f"An epoch has only {steps} optimizer step{'s' * (steps != 1)} ({n_items} training items in "
                  f"batches of {bs}): too few for the weights to get far. Try a batch size of {suggested} "
                  f"({math.ceil(n_items / suggested)} steps an epoch): bs={suggested} for the loaders, or --bs "
                  f"{suggested} on the command line.", stacklevel=4)


def _tensors_in_memory(loader) -> list[Tensor]:
    if isinstance(getattr(loader, "x", None), Tensor) and isinstance(getattr(loader, "y", None), Tensor):
        return [loader.x, loader.y]
    dataset = getattr(loader, "dataset", None)
    return list(dataset.tensors) if isinstance(dataset, TensorDataset) else []


def _check_finite(data: Tensor, what: str) -> None:
    """One vectorised sum and one read back to the host when all is well (a NaN or an infinity makes the sum
    non-finite); only then the exact per-item pass, which also clears a sum that merely overflowed. Integer
    data cannot hold NaN."""
    if not data.is_floating_point() or torch.isfinite(data.sum(dtype=torch.promote_types(data.dtype, torch.float32))):
        return
    bad = ~torch.isfinite(data.reshape(len(data), -1) if data.ndim else data.reshape(1, 1)).all(dim=1)
    count, first = torch.stack([bad.sum(), bad.int().argmax()]).tolist()
    if count:
        raise ValueError(f"{what} hold NaN or infinite values, in {count} item{'s' * (count > 1)} (the first is item "
                         f"{first}): training on them would turn the weights into NaN. Remove those items or "
                         f"replace the values (torch.nan_to_num) before making the loader.")


@contextmanager
def first_batch(learn):
    """Around a phase's first batch: its inputs are checked first (a dict batch needs a callback that
    replaces `predict`; `check_inputs`; the Learner checks the targets after the first prediction); in
    training, a BatchNorm layer to which the loader's last batch would give a single value per channel
    stops the fit at this first forward pass, before any step; any error gets a note on the batch and model."""
    hooks = []
    try:
        _check_not_a_dict(learn.batch, learn.cbs)
        check_inputs(learn.batch, learn.model)
        hooks = _watch_batchnorm(learn) if learn.training else []
        yield
    except CancelException:
        raise
    except Exception as e:
        e.add_note(describe_batch(learn.batch, learn.model))
        raise
    finally:
        for hook in hooks:
            hook.remove()


def _check_not_a_dict(batch, cbs) -> None:
    if isinstance(batch, Mapping) and not any(callable(getattr(type(cb), "predict", None)) for cb in cbs):
        keys = ", ".join(map(repr, list(batch)[:5]))
        raise TypeError(f"The loader yields dict batches (keys {keys}), but the Learner takes (inputs, targets, ...) "
                        f"tuples: make the loader yield tuples (e.g. a collate_fn that returns "
                        f"(inputs, targets)), or add a callback whose predict and get_loss read the dict.")


class SingleItemBatchError(ValueError):
    """A training batch of one item where a BatchNorm layer would get a single value per channel from it. `bs`,
    `n_items` (this process's training items per epoch) and `layer` (the BatchNorm layer, named) say which."""

    def __init__(self, message: str, bs: int, n_items: int, layer: str):
        super().__init__(message)
        self.bs, self.n_items, self.layer = bs, n_items, layer


def _batching(dl) -> tuple[int, int, bool] | None:
    """The loader's items per epoch, batch size and drop_last; None if unknown."""
    if hasattr(dl, "n_items") and hasattr(dl, "bs"):  # a TensorLoader (its shard under DDP)
        return dl.n_items, dl.bs, dl.drop_last
    if isinstance(getattr(dl, "batch_size", None), int) and getattr(dl, "sampler", None) is not None:
        try:
            return len(dl.sampler), dl.batch_size, dl.drop_last
        except TypeError:  # a sampler without a length
            return None
    return None


def _watch_batchnorm(learn) -> list:
    batching = _batching(learn.dl)
    if batching is None:
        return []
    n, bs, drop_last = batching
    last = 1 if bs == 1 else 0 if drop_last else n % bs  # items in the smallest batch, where it has fewer than bs
    if not last:
        return []
    which = "batches hold 1 item (batch size 1)" if bs == 1 else f"last batch holds {last} item"
    when = "at this first batch" if bs == 1 else "at the end of the first epoch"
    drop = ("set dls.train.drop_last = True (or TensorLoader(..., drop_last=True))" if hasattr(learn.dl, "n_items")
            else "DataLoader(..., drop_last=True)")  # slowlearn's loaders (image_folder's too) take no drop_last=
    fix = ("pick a batch size of 2 or more" if bs == 1 else f"drop that batch ({drop}), or pick a batch size that does "
           f"not leave one item over")

    def check(module, args):
        x = args[0]
        per_item = x.numel() // max(x.shape[0] * x.shape[1], 1)  # values per channel that one item gives
        if last * per_item == 1:
            raise SingleItemBatchError(f"The training loader's {which}, and BatchNorm layer {names[module]} cannot "
                                       f"normalise a single value per channel in training, so the fit would fail "
                                       f"{when}: {fix}.", bs, n, names[module])

    names = {m: f"'{name}' ({type(m).__name__})" for name, m in learn.model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training}
    return [m.register_forward_pre_hook(check) for m in names]


def _tensors(batch) -> list[Tensor] | None:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, Tensor) for t in batch):
        return list(batch)
    return None


def _first_param(model: nn.Module) -> Tensor | None:
    return next(model.parameters(), None)


def check_inputs(batch, model: nn.Module) -> None:
    """Before the model sees an `(inputs, targets, ...)` batch: every tensor has the same batch
    size, the inputs are finite, and integers (raw pixel values) are not fed to a floating-point model
    that does not embed them."""
    tensors = _tensors(batch)
    if tensors is None:
        return
    sizes = [len(t) if t.ndim else None for t in tensors]
    if len(set(sizes)) > 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"The batch's inputs and targets have different batch sizes (shapes {shapes}): "
                         f"each input needs one target; check the dataset's tensors have the same length.")
    x, param = tensors[0], _first_param(model)
    _check_finite(x, "The batch's inputs")
    if param is None or not param.is_floating_point() or x.is_floating_point() or x.is_complex() or _embeds(model):
        return
    if x.dtype in (torch.uint8, torch.bool):
        raise ValueError(f"The inputs are {x.dtype} but the model's parameters are {param.dtype}: convert them "
                         f"to floats in the loader, e.g. TensorLoader(x, y, mean=..., std=...), which scales "
                         f"uint8 images to [0, 1] and normalises them.")
    raise ValueError(f"The inputs are {x.dtype} but the model's parameters are {param.dtype} (and it has no "
                     f"embedding layer to look integers up): convert the inputs to floats in the loader, e.g. "
                     f"x.float() / 255 for pixel values, or store images as uint8 and let TensorLoader(x, y, "
                     f"mean=..., std=...) scale and normalise them.")


def _embeds(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())


def _is_cross_entropy(loss_func) -> bool:
    while isinstance(loss_func, partial):
        loss_func = loss_func.func
    return loss_func is F.cross_entropy or isinstance(loss_func, nn.CrossEntropyLoss)


def check_targets(preds, batch, loss_func, classes: Sequence[str] | None = None) -> None:
    """After the first prediction: a model trained with cross-entropy on data with `classes` (when known)
    gives one output per class (other losses may use other widths: embeddings, an extra output), class-index targets lie in [0, number of model outputs), and cross-entropy gets
    them as integers of the right shape."""
    tensors = _tensors(batch)
    if tensors is None or not isinstance(preds, Tensor) or not preds.is_floating_point() or preds.ndim < 2:
        return
    if preds.shape[1] == 1:
        return  # one output is a score or a regression, not a choice between classes
    if classes and preds.ndim == 2 and preds.shape[1] != len(classes) and _is_cross_entropy(loss_func):
        raise ValueError(f"The model gives {preds.shape[1]} outputs per item, but the data has {len(classes)} classes: "
                         f"give its last layer {len(classes)} outputs (a CNN ending in a conv, such as the seed CNN, "
                         f"gives one output per class only for images it reduces to 1x1: use smaller images or a "
                         f"model with global pooling, such as resnet()).")
    y, n_classes = tensors[1], preds.shape[1]
    index_shape = preds.shape[:1] + preds.shape[2:]  # one class index per item (per pixel, for segmentation)
    if _is_cross_entropy(loss_func):
        _check_cross_entropy_targets(y, index_shape)
    if y.shape == index_shape and not y.is_floating_point() and y.dtype != torch.bool:
        _check_label_range(y, n_classes)


def check_loss(loss) -> None:
    """On a phase's first batch, when callbacks read the loss as a number (MetricsCB, ProgressCB): the loss is
    one value, a tensor (a loss function with `reduction="none"` gives one per item)."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"The loss is a {type(loss).__name__}, but the Learner and its callbacks need a tensor: "
                        f"make loss_func (or the callback that replaces get_loss) return a torch tensor.")
    if loss.numel() != 1:
        raise ValueError(f"The loss has shape {tuple(loss.shape)}, but training and the metrics need one value a "
                         f"batch: reduce it in the loss function (e.g. reduction='mean', or `.mean()` of the "
                         f"per-item losses).")


def _check_cross_entropy_targets(y: Tensor, index_shape: torch.Size) -> None:
    if y.shape == index_shape[:1] + (1,) + index_shape[1:]:
        raise ValueError(f"The targets have shape {tuple(y.shape)}, but cross-entropy wants one class index per "
                         f"item, shape {tuple(index_shape)}: remove the extra dimension with `y.squeeze(1)`.")
    if y.shape != index_shape:
        return  # class probabilities, shaped like the predictions
    if y.is_floating_point():
        raise ValueError(f"The targets are {y.dtype} but cross-entropy needs integer class indices: "
                         f"convert the labels with `.long()`.")
    if y.dtype not in (torch.int64, torch.uint8):
        raise ValueError(f"The targets are {y.dtype} but cross-entropy needs int64 class indices: "
                         f"convert the labels with `.long()`.")


def _check_label_range(y: Tensor, n_classes: int) -> None:
    labels = y[y != IGNORE_INDEX]
    if not labels.numel():
        return
    low, high = torch.stack(labels.aminmax()).tolist()  # one read back to the host, on the first batch only
    if low < 0 or high >= n_classes:
        raise ValueError(f"The targets run from {low} to {high}, but the model has {n_classes} outputs, so class "
                         f"indices must be in [0, {n_classes - 1}]: give the model's last layer "
                         f"{max(high + 1, n_classes)} outputs, or check the labels.")


def describe_batch(batch, model: nn.Module) -> str:
    """One line on the batch and model, added to any error raised on the first batch."""
    def tensor(t) -> str:
        return f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, Tensor) else type(t).__name__

    parts = [tensor(t) for t in batch] if isinstance(batch, (tuple, list)) else [tensor(batch)]
    param = _first_param(model)
    model_part = f"; model parameters {param.dtype} on {param.device}" if param is not None else ""
    return f"(first batch: {', '.join(parts)}{model_part})"
