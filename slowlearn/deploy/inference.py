"""Using a trained model: predictions over a loader, single-item prediction, validation metrics."""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import as_items, preprocessing_of, to_batch
from ..device import model_device, to_device
from ..randomness import random_states_kept

__all__ = ["Preds", "Prediction", "get_preds", "predict", "prediction", "validate",
           "confusion_matrix", "activation", "activation_kind", "metric_inputs", "ACTIVATIONS"]

# Losses on logits of independent labels (a probability per output: sigmoid), and losses on numbers (no probabilities).
SIGMOID_LOSSES = (F.binary_cross_entropy_with_logits, nn.BCEWithLogitsLoss)
NUMBER_LOSSES = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss,
                 nn.HuberLoss)


class Preds(NamedTuple):
    """What `get_preds` returns: `preds` (probabilities), `targets`, and `inputs`/`losses` when asked for."""
    preds: torch.Tensor
    targets: torch.Tensor
    inputs: torch.Tensor | None = None
    losses: torch.Tensor | None = None


class Prediction(NamedTuple):
    """`learn.predict(x)`: class index, class name and probabilities (tensors and a list for a batch)."""
    index: int | torch.Tensor
    name: str | list[str] | None
    probs: torch.Tensor


@torch.no_grad()
def get_preds(learn, dl=None, with_input: bool = False, with_loss: bool = False, tta: bool = False) -> Preds:
    """Run the model in eval mode over `dl` (default `learn.dls.valid`), in order, without callbacks; `preds` are
    probabilities where the loss makes them (softmax over classes, sigmoid per label: see `activation`), else the
    model's outputs.

    Everything stays on the model's device until one copy to the CPU at the end (no host sync per
    batch). Per-item losses come from `learn.loss_func` with reduction="none": a copy of an `nn.Module` loss with
    a `reduction` attribute (`nn.CrossEntropyLoss()`; the Learner's is left as it is), else a call with
    `reduction="none"` (a loss that takes no `reduction=` is an error before the model runs). `tta=True` averages the
    predictions for each image and its mirror image (test-time augmentation). A loader with no batches is
    an error.
    """
    return _predictions(learn, _loader(learn, dl, "get_preds"), with_input, with_loss, tta, "get_preds")


@torch.no_grad()
def _predictions(learn, dl, with_input: bool, with_loss: bool, tta: bool, owner: str,
                 probabilities: bool = True) -> Preds:
    """`get_preds` on the loader `dl`; `probabilities=False` keeps the model's outputs as they are (what MetricsCB
    scores during a fit). The random numbers that a shuffled or augmented loader draws are put back afterwards, so
    the next fit gets the batches it would have had."""
    device, was_training = model_device(learn.model), learn.model.training
    loss_per_item = _per_item_loss(learn.loss_func, owner) if with_loss else None
    preds, targets, inputs, losses = [], [], [], []
    learn.model.eval()
    try:
        with random_states_kept(learn.dls):  # a shuffled or augmented loader draws nothing a fit would
            for xb, yb, *rest in dl:  # (inputs, targets, ...): what follows the targets goes to the loss
                xb, yb, *rest = to_device((xb, yb, *rest), device)
                out = learn.model(xb).float()
                activate, undo = activation(learn.loss_func, out) if probabilities else (_as_is, _as_is)
                probs = activate(out)
                if tta:
                    probs = (probs + activate(learn.model(xb.flip(-1)).float())) / 2
                    out = undo(probs)  # so that per-item losses score the averaged prediction
                preds.append(probs)
                targets.append(yb)
                if with_input:
                    inputs.append(xb)
                if with_loss:
                    losses.append(loss_per_item(out, yb, *rest))
    finally:
        learn.model.train(was_training)
    if not preds:  # a loader without len() that gave nothing
        raise ValueError(_empty(owner, dl))
    cat = lambda ts: torch.cat(ts).cpu() if ts else None  # noqa: E731
    return Preds(cat(preds), cat(targets), cat(inputs), cat(losses))


def activation(loss_func: Callable, out: torch.Tensor) -> tuple[Callable, Callable]:
    """How get_preds and predict turn the model's outputs `out` into predictions, and back into what `loss_func`
    takes: `ACTIVATIONS[activation_kind(loss_func, out)]`."""
    return ACTIVATIONS[activation_kind(loss_func, out)]


def activation_kind(loss_func: Callable, out: torch.Tensor | None = None) -> str:
    """"sigmoid" (a probability per output) for binary cross-entropy on logits (one label or several); "none" (the
    outputs as they are) for a regression loss (mean squared or absolute error, Huber) or one output per item;
    else "softmax" (over the classes, the last dimension). Exports record it, so that a `Predictor` gives what
    `predict` gives. Without `out`, from the loss alone."""
    while isinstance(loss_func, partial):
        loss_func = loss_func.func
    if _is_one_of(loss_func, SIGMOID_LOSSES):
        return "sigmoid"
    if _is_one_of(loss_func, NUMBER_LOSSES) or (out is not None and (out.ndim < 2 or out.shape[-1] == 1)):
        return "none"
    return "softmax"


def metric_inputs(loss_func: Callable, preds: torch.Tensor) -> torch.Tensor:
    """What metrics score (MetricsCB during a fit, `validate`): the sigmoids of the outputs for a loss on logits of
    independent labels (binary cross-entropy with logits), as metrics that threshold at 0.5 (BinaryAccuracy,
    MultilabelAccuracy, F1) expect probabilities; else the outputs as they are (argmax and ranking metrics take
    logits)."""
    return preds.sigmoid() if activation_kind(loss_func) == "sigmoid" else preds


def _is_one_of(loss_func: Callable, losses: tuple) -> bool:
    return any(loss_func is loss or (isinstance(loss, type) and isinstance(loss_func, loss)) for loss in losses)


def _as_is(out: torch.Tensor) -> torch.Tensor:
    return out


# Each activation_kind: (outputs -> predictions, predictions -> what the loss takes)
ACTIVATIONS = {"softmax": (partial(torch.softmax, dim=-1), torch.log),
               "sigmoid": (torch.sigmoid, partial(torch.logit, eps=1e-7)),
               "none": (_as_is, _as_is)}


def _per_item_loss(loss_func: Callable, owner: str = "get_preds") -> Callable:
    """`loss_func` giving one loss per item: a shallow copy with reduction="none" of an `nn.Module` loss that has a
    `reduction` attribute (the user's module is not changed), else `loss_func(..., reduction="none")`; a loss that
    takes no `reduction=` is an error naming `owner` and what the loss must accept."""
    if isinstance(loss_func, torch.nn.Module) and hasattr(loss_func, "reduction"):
        per_item = copy.copy(loss_func)
        per_item.reduction = "none"
        return per_item
    if not _takes_reduction(loss_func):
        name = getattr(loss_func, "__name__", type(loss_func).__name__)
        raise TypeError(f"learn.{owner}() needs a loss per item, but the loss function {name} takes no `reduction=` "
                        f"argument: give the Learner a loss that accepts reduction='none' and then returns one loss "
                        f"per item (as torch.nn.functional.cross_entropy does), or an nn.Module loss with a "
                        f"`reduction` attribute (as nn.CrossEntropyLoss)")
    return lambda out, *targets: loss_func(out, *targets, reduction="none")


def _takes_reduction(loss_func: Callable) -> bool:
    try:
        params = inspect.signature(loss_func).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call tell
        return True
    return any(p.name == "reduction" or p.kind is p.VAR_KEYWORD for p in params)


def _loader(learn, dl, owner: str):
    """`dl`, or the validation loader; an error naming `owner` when there is none, or it has no batches."""
    if dl is None:
        dl = getattr(learn.dls, "valid", None)
        if dl is None:
            raise ValueError(f"learn.{owner}(): the Learner's data has no validation loader; pass the loader to use: "
                             f"learn.{owner}(dl)")
    if hasattr(dl, "__len__") and len(dl) == 0:
        raise ValueError(_empty(owner, dl))
    return dl


def _empty(owner: str, dl) -> str:
    items = getattr(dl, "dataset", None) if not hasattr(dl, "x") else dl.x
    count = f" ({len(items)} items)" if hasattr(items, "__len__") else ""
    return (f"learn.{owner}(): the loader has no batches{count}, so there is nothing to predict or score: give it "
            f"a loader with at least one item (is the validation split empty?)")


@torch.no_grad()
def predict(learn, x) -> Prediction:
    """Predict one item, or a batch of them (a list, or a tensor with a batch dimension).

    For image data (a `TensorLoader` of uint8 images) an item is an image file path, a PIL image, a uint8
    tensor or array, or a float one in [0, 1], normalised as the training data was (the rule of
    `slowlearn.data.preprocess`, shared with exported models). Other data is given as the dataset stores it.
    Classes are named from `dls.classes`.
    """
    prep = preprocessing_of(learn.dls)
    items, single = as_items(x, prep)
    was_training = learn.model.training
    learn.model.eval()
    try:
        out = learn.model(to_batch(items, prep).to(model_device(learn.model))).float()
        probs = activation(learn.loss_func, out)[0](out).cpu()
    finally:
        learn.model.train(was_training)
    return prediction(probs, getattr(learn.dls, "classes", None), single)


def prediction(probs: torch.Tensor, classes, single: bool) -> Prediction:
    """Class indexes and names from a batch of probabilities (one item's when `single`)."""
    index = probs.argmax(-1)
    names = [classes[i] for i in index.tolist()] if classes else None
    if single:
        return Prediction(int(index[0]), names[0] if names else None, probs[0])
    return Prediction(index, names, probs)


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class (`preds` are class indexes). Targets outside
    [0, n_classes), such as cross_entropy's ignore_index -100, and predictions outside it are not counted. Counted on the targets'
    device without a host sync (torch.bincount would read the largest index back first)."""
    targets, preds = targets.long(), preds.long()  # int64: uint8 targets * n_classes would overflow
    counted = (targets >= 0) & (targets < n_classes) & (preds >= 0) & (preds < n_classes)
    cells = torch.where(counted, targets * n_classes + preds, 0)
    counts = torch.zeros(n_classes * n_classes, dtype=torch.long, device=targets.device)
    return counts.scatter_add_(0, cells, counted.long()).reshape(n_classes, n_classes)


def validate(learn, dl=None) -> dict:
    """The mean loss and the MetricsCB metrics on `dl` (history untouched): the metrics score what they score during a
    fit (`metric_inputs`), so that a validation row of the fit and `validate()` agree."""
    result = _predictions(learn, _loader(learn, dl, "validate"), False, True, False, "validate", probabilities=False)
    row, preds = {"loss": result.losses.mean().item()}, metric_inputs(learn.loss_func, result.preds)
    metrics_cb = next((cb for cb in learn.cbs if hasattr(cb, "metrics") and isinstance(cb.metrics, dict)), None)
    for name, metric in (metrics_cb.metrics.items() if metrics_cb else ()):
        fresh = copy.deepcopy(metric).to("cpu")
        fresh.reset()
        fresh.update(preds, result.targets)
        row[name] = fresh.compute().item()
    return row


