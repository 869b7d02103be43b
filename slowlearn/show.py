"""Pictures of data and results. Each function returns a matplotlib Figure: shown once in a notebook,
left open for `plt.show()` in a script, and saved as a PNG when given `path=`."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .display import finished, integer_xticks, subplots
from .inference import confusion_matrix, get_preds
from .models import summary

__all__ = ["show_batch", "show_results", "plot_confusion_matrix", "plot_confusion", "plot_top_losses", "plot_metrics",
           "PicturesMixin"]


def _class_name(classes, i: int) -> str:
    return classes[i] if classes else str(i)


def _grid(n: int, size: float = 1.6):
    """A near-square grid of n image panels (9 as 3x3, 16 as 4x4), at most 8 columns."""
    cols = min(math.ceil(math.sqrt(n)), 8)
    rows = math.ceil(n / cols)
    fig, axs = subplots(rows, cols, figsize=(size * cols, (size + 0.6) * rows), squeeze=False)
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


def show_batch(dls, n: int = 16, split: str = "train", path: str | Path | None = None):
    """The first `n` images of a batch from `dls[split]`, de-normalised, titled with their class names."""
    loader = dls[split]
    xb, yb = next(iter(loader))
    n = min(n, len(xb))
    images, classes = _for_display(loader, xb[:n]), getattr(dls, "classes", None)
    fig, axs = _grid(n)
    for ax, image, label in zip(axs, images, yb[:n].tolist()):
        _show_image(ax, image)
        ax.set_title(_class_name(classes, label), fontsize=8)
    return finished(fig, path)


def show_results(learn, n: int = 16, path: str | Path | None = None):
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
    fig.suptitle("actual / prediction", fontsize=9)
    return finished(fig, path)


def plot_confusion_matrix(learn, normalize: bool = False, dl=None, path: str | Path | None = None):
    """Confusion matrix on the validation set (or `dl`): counts, or each row as fractions with `normalize`."""
    result = get_preds(learn, dl)
    n_classes = result.preds.shape[-1]
    cm = confusion_matrix(result.targets, result.preds.argmax(-1), n_classes)
    return plot_confusion(cm, getattr(learn.dls, "classes", None), normalize, path)


def plot_confusion(cm: torch.Tensor, classes=None, normalize: bool = False, path: str | Path | None = None):
    """Draw a confusion matrix of counts (row = true class, column = predicted), as fractions per row with
    `normalize`. The figure keeps the counts as `fig.confusion_matrix`."""
    n_classes = len(cm)
    shown = cm / cm.sum(1, keepdim=True).clamp_min(1) if normalize else cm
    classes = classes or [str(i) for i in range(n_classes)]
    fig, ax = subplots(figsize=(0.55 * n_classes + 3, 0.55 * n_classes + 2.5))
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
    return finished(fig, path)


def plot_top_losses(learn, k: int = 9, path: str | Path | None = None):
    """The `k` validation items with the highest loss, titled as `show_results` (actual / prediction),
    with the loss and the probability the model gave its (wrong or unsure) prediction."""
    result = get_preds(learn, with_input=True, with_loss=True)
    losses, idx = result.losses.topk(min(k, len(result.losses)))
    classes = getattr(learn.dls, "classes", None)
    images = _for_display(learn.dls.valid, result.inputs[idx])
    fig, axs = _grid(len(idx), size=2.)
    for ax, image, i, loss in zip(axs, images, idx.tolist(), losses.tolist()):
        truth = result.targets[i].item()
        prob, guess = (p.item() for p in result.preds[i].max(-1))
        _show_image(ax, image)
        ax.set_title(f"{_class_name(classes, truth)} / {_class_name(classes, guess)}\n"
                     f"loss {loss:.2f}, p {prob:.2f}", fontsize=7, color="green" if truth == guess else "red")
    fig.suptitle("actual / prediction; loss, probability of the prediction", fontsize=9)
    return finished(fig, path)


def plot_metrics(learn, path: str | Path | None = None):
    """Training and validation loss (and every other metric) per epoch, from `learn.history`, with
    epochs numbered as in the history and the metrics table (from 0; later fits continue the count)."""
    names = [k for k in learn.history[0] if k not in ("epoch", "phase")] if learn.history else ["loss"]
    fig, axs = subplots(1, len(names), figsize=(4.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axs[0], names):
        for phase in ("train", "valid"):
            values = [r[name] for r in learn.history if r.get("phase") == phase and name in r]
            ax.plot(range(len(values)), values, "o-", label=phase)
        ax.set(title=name, xlabel="epoch")
        integer_xticks(ax)
        ax.legend()
    return finished(fig, path)


class PicturesMixin:
    """The Learner's `show_batch` and `summary` (the functions of the same names, on its data)."""

    def show_batch(self, n: int = 16, split: str = "train"):
        """The first `n` images of a batch of `learn.dls[split]` with their class names; see `show_batch`."""
        return show_batch(self.dls, n, split)

    def summary(self, depth: int = 1, print_table: bool = True) -> list[dict]:
        """The model's layers on a batch of the training data, nested `depth` levels deep: output shapes,
        parameters (trainable and frozen) and MFLOPs per sample; see `slowlearn.models.summary`."""
        return summary(self, depth=depth, print_table=print_table)
