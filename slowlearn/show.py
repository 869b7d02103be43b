"""Pictures of data and results. Each function returns a matplotlib Figure: shown once in a notebook,
left open for `plt.show()` in a script, and saved as a PNG when given `path=`."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import class_name, for_display, image_grid, show_image
from .deploy import confusion_matrix, get_preds
from .display import finished, integer_xticks, subplots

__all__ = ["show_results", "plot_confusion_matrix", "plot_confusion", "plot_top_losses", "plot_metrics"]












def show_results(learn, n: int = 16, path: str | Path | None = None):
    """Validation images with truth and prediction, titled in green when right and red when wrong."""
    result = get_preds(learn, with_input=True)
    n = min(n, len(result.targets))
    images, classes = for_display(learn.dls.valid, result.inputs[:n]), getattr(learn.dls, "classes", None)
    predicted = result.preds[:n].argmax(-1).tolist()
    fig, axs = image_grid(n)
    for ax, image, truth, guess in zip(axs, images, result.targets[:n].tolist(), predicted):
        show_image(ax, image)
        ax.set_title(f"{class_name(classes, truth)}\n{class_name(classes, guess)}", fontsize=7,
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
    images = for_display(learn.dls.valid, result.inputs[idx])
    fig, axs = image_grid(len(idx), size=2.)
    for ax, image, i, loss in zip(axs, images, idx.tolist(), losses.tolist()):
        truth = result.targets[i].item()
        prob, guess = (p.item() for p in result.preds[i].max(-1))
        show_image(ax, image)
        ax.set_title(f"{class_name(classes, truth)} / {class_name(classes, guess)}\n"
                     f"loss {loss:.2f}, p {prob:.2f}", fontsize=7, color="green" if truth == guess else "red")
    fig.suptitle("actual / prediction; loss, probability of the prediction", fontsize=9)
    return finished(fig, path)


def plot_metrics(learn, path: str | Path | None = None):
    """Training and validation loss (and every other metric) per epoch, from `learn.history`, with epochs
    counted from 0 over every fit so far: a later fit continues the count, where the history's and the metrics
    table's `epoch` start again at 0. A validation is drawn at the training epoch whose weights it scored (a
    validation-only fit, `fit(train=False)`, at the last one; before any training, at -1)."""
    names = list(dict.fromkeys(k for row in learn.history for k in row if k not in ("epoch", "phase"))) or ["loss"]
    epochs = _trained_epochs(learn.history)
    fig, axs = subplots(1, len(names), figsize=(4.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axs[0], names):
        for phase in ("train", "valid"):
            points = [(x, r[name]) for x, r in zip(epochs, learn.history) if r.get("phase") == phase and name in r]
            ax.plot([x for x, _ in points], [value for _, value in points], "o-", label=phase)
        ax.set(title=name, xlabel="epoch")
        integer_xticks(ax)
        ax.legend()
    return finished(fig, path)


def _trained_epochs(history: list[dict]) -> list[int]:
    """For each history row, the training epoch (counted over every fit) whose weights it scores: a training row
    its own, a validation row the last one trained before it (-1 before any)."""
    epochs, trained = [], 0
    for row in history:
        trained += row.get("phase") == "train"
        epochs.append(trained - 1)
    return epochs
