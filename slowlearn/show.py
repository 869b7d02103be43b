"""Pictures of data and results; each function returns a matplotlib Figure (shown in notebooks, saved elsewhere)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from .display import finished
from .inference import confusion_matrix, get_preds

__all__ = ["show_batch", "show_results", "plot_confusion_matrix", "plot_confusion", "plot_top_losses", "plot_metrics"]


def _class_name(classes, i: int) -> str:
    return classes[i] if classes else str(i)


def _grid(n: int, size: float = 1.6):
    cols = min(n, 8) if n > 4 else n
    rows = math.ceil(n / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(size * cols, (size + 0.6) * rows), squeeze=False)
    for ax in axs.flat:
        ax.axis("off")
    return fig, list(axs.flat)


def _show_image(ax, image: torch.Tensor) -> None:
    """A CxHxW image in [0, 1] (1 or 3 channels)."""
    image = image.clamp(0, 1).cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def _for_display(loader, xb: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1]: the loader's `decode` undoes its normalisation; for other loaders (a torch
    DataLoader), uint8 images are scaled and float images are stretched, each to its own range."""
    if hasattr(loader, "decode"):
        return loader.decode(xb)
    if xb.dtype == torch.uint8:
        return xb.float() / 255
    dims = tuple(range(1, xb.ndim))
    low, high = xb.amin(dims, keepdim=True), xb.amax(dims, keepdim=True)
    return (xb - low) / (high - low).clamp_min(1e-12)


def show_batch(dls, n: int = 16, split: str = "train"):
    """The first `n` images of a batch from `dls[split]`, de-normalised, titled with their class names."""
    loader = dls[split]
    xb, yb = next(iter(loader))
    n = min(n, len(xb))
    images, classes = _for_display(loader, xb[:n]), getattr(dls, "classes", None)
    fig, axs = _grid(n)
    for ax, image, label in zip(axs, images, yb[:n].tolist()):
        _show_image(ax, image)
        ax.set_title(_class_name(classes, label), fontsize=8)
    return finished(fig)


def show_results(learn, n: int = 16):
    """Validation images with truth and prediction, titled in green when right and red when wrong."""
    result = get_preds(learn, with_input=True)
    n = min(n, len(result.targets))
    images, classes = _for_display(learn.dls.valid, result.inputs[:n]), getattr(learn.dls, "classes", None)
    predicted = result.preds[:n].argmax(-1).tolist()
    fig, axs = _grid(n)
    for ax, image, truth, guess in zip(axs, images, result.targets[:n].tolist(), predicted):
        _show_image(ax, image)
        ax.set_title(f"{_class_name(classes, truth)}\n{_class_name(classes, guess)}", fontsize=7,
                     color="green" if truth == guess else "red")
    fig.suptitle("truth / prediction", fontsize=9)
    return finished(fig)


def plot_confusion_matrix(learn, normalize: bool = False, dl=None):
    """Confusion matrix on the validation set (or `dl`): counts, or each row as fractions with `normalize`."""
    result = get_preds(learn, dl)
    n_classes = result.preds.shape[-1]
    cm = confusion_matrix(result.targets, result.preds.argmax(-1), n_classes)
    return plot_confusion(cm, getattr(learn.dls, "classes", None), normalize)


def plot_confusion(cm: torch.Tensor, classes=None, normalize: bool = False):
    """Draw a confusion matrix of counts (row = true class, column = predicted), as fractions per row with
    `normalize`. The figure keeps the counts as `fig.confusion_matrix`."""
    n_classes = len(cm)
    shown = cm / cm.sum(1, keepdim=True).clamp_min(1) if normalize else cm
    classes = classes or [str(i) for i in range(n_classes)]
    fig, ax = plt.subplots(figsize=(0.55 * n_classes + 3, 0.55 * n_classes + 2.5))
    ax.imshow(shown.numpy(), cmap="Blues")
    ax.set(xticks=range(n_classes), yticks=range(n_classes), xlabel="predicted", ylabel="actual",
           title="Confusion matrix" + (" (normalised)" if normalize else ""))
    ax.set_xticklabels(classes, rotation=90)
    ax.set_yticklabels(classes)
    top = shown.max().item()
    for i in range(n_classes):
        for j in range(n_classes):
            value = shown[i, j].item()
            ax.text(j, i, f"{value:.2f}" if normalize else str(int(value)), ha="center", va="center", fontsize=7,
                    color="white" if value > top / 2 else "black")
    fig.confusion_matrix = cm
    return finished(fig)


def plot_top_losses(learn, k: int = 9):
    """The `k` validation items with the highest loss: prediction, truth, loss and probability of the truth."""
    result = get_preds(learn, with_input=True, with_loss=True)
    losses, idx = result.losses.topk(min(k, len(result.losses)))
    classes = getattr(learn.dls, "classes", None)
    images = _for_display(learn.dls.valid, result.inputs[idx])
    fig, axs = _grid(len(idx), size=2.)
    for ax, image, i, loss in zip(axs, images, idx.tolist(), losses.tolist()):
        truth, guess = result.targets[i].item(), result.preds[i].argmax().item()
        _show_image(ax, image)
        ax.set_title(f"{_class_name(classes, guess)} / {_class_name(classes, truth)}\n"
                     f"{loss:.2f} / {result.preds[i, truth]:.2f}", fontsize=7)
    fig.suptitle("prediction / actual, loss / probability of actual", fontsize=9)
    return finished(fig)


def plot_metrics(learn):
    """Training and validation loss (and every other metric) per epoch, from `learn.history`."""
    names = [k for k in learn.history[0] if k not in ("epoch", "train")] if learn.history else ["loss"]
    fig, axs = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axs[0], names):
        for phase, label in (("train", "train"), ("eval", "valid")):
            values = [r[name] for r in learn.history if r.get("train") == phase and name in r]
            ax.plot(range(1, len(values) + 1), values, "o-", label=label)
        ax.set(title=name, xlabel="epoch (counting every fit)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    return finished(fig)
