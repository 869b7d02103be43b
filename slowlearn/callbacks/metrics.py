"""MetricsCB: the loss and torcheval metrics per epoch and phase, accumulated on the device."""
from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch

from ..callback import Callback
from ..deploy import activation_kind, metric_inputs
from ..device import model_device
from ..display import TablePrinter
from ..distributed import all_reduce_sum, is_rank0, world_size

if TYPE_CHECKING:  # torcheval takes a second to import: only when metrics are used
    from torcheval.metrics import Metric

__all__ = ["MetricsCB"]


class MetricsCB(Callback):
    """Computes the mean loss and each torcheval metric over every epoch phase, read once per phase.

    `MetricsCB(MulticlassAccuracy())` names the column after the metric's class; `MetricsCB(acc=...)`
    names it `acc`. The loss is weighted by batch size, so it is the exact mean over samples even
    with an uneven last batch. Each phase appends a row to `learn.history`:
    `{<metric>: float, ..., "loss": float, "epoch": int, "phase": "train" | "valid"}` (the phases
    named as monitors name them: `valid_loss` is the loss of a "valid" row) and passes it to
    `learn.metrics_log` (ProgressCB's display), or when that slot is empty prints it as a table. During
    the fit `learn.metric_names` holds the column names, "loss" included, so that callbacks monitoring a
    metric can check its name before training.

    A checkpoint taken mid-epoch holds the phase's running sums (`state_dict`), so the resumed epoch's
    row is the mean over all its batches, as in an uninterrupted run.

    Per batch this callback only keeps references to the detached predictions, targets and loss (a loss on
    the CPU, which the Learner reads as `learn.loss_value`, is added to a running sum at once);
    every `update_every` batches, or sooner when the kept predictions reach `max_buffered` elements
    (large outputs such as segmentation maps), they are concatenated and fed to the metrics in one
    update, which keeps the per-batch cost to a few microseconds even for tiny models. Nothing on a GPU
    is read back to the host before the end of the phase.

    The metrics score the model's outputs as they are (argmax and ranking metrics take logits), but for a loss on
    logits of independent labels (binary cross-entropy with logits) their sigmoids: metrics that threshold at
    0.5 (BinaryAccuracy, MultilabelAccuracy) expect probabilities (`deploy.metric_inputs`).
    """

    order = 50
    reads_loss_value = True

    def __init__(self, *metrics: Metric, update_every: int = 256, max_buffered: int = 2**22, **named_metrics: Metric):
        names = [type(m).__name__ for m in metrics] + list(named_metrics)
        clash = next((n for i, n in enumerate(names) if n in names[:i] or n in ("loss", "epoch", "phase")), None)
        if clash is not None:
            raise ValueError(f"MetricsCB: two metrics would be named '{clash}' in the history and the table (a metric "
                             f"given without a name is named after its class; 'loss', 'epoch' and 'phase' are "
                             f"MetricsCB's own columns), so one would hide the other: name each metric by keyword, "
                             f"e.g. MetricsCB(acc=MulticlassAccuracy(), acc_macro=MulticlassAccuracy(average='macro', "
                             f"num_classes=10)).")
        self.metrics = {type(m).__name__: m for m in metrics} | named_metrics
        self.update_every, self.max_buffered = update_every, max_buffered
        self._buffered_numel = 0
        self._in_training_phase, self._resumed = False, None
        self._scores = lambda preds: preds  # what the metrics get of the predictions: set for the fit's loss

    def before_fit(self, learn) -> None:
        printer = TablePrinter(lambda line: print(line, file=sys.stdout, flush=True))
        self._print: Callable[[dict], None] = printer if is_rank0() else (lambda row: None)
        learn.metric_names = (*self.metrics, "loss")
        self._scores = partial(metric_inputs, learn.loss_func)
        if activation_kind(learn.loss_func) == "sigmoid":
            _check_thresholds_of_probabilities(self.metrics)

    def cleanup_fit(self, learn) -> None:
        learn.metric_names = ()

    def before_epoch(self, learn) -> None:
        for m in self.metrics.values():
            m.reset()
        self.loss_sum, self.count, self._host_loss_sum = None, 0, 0.
        self._preds, self._targets, self._losses, self._buffered_numel = [], [], {}, 0
        self._in_training_phase = learn.training
        if learn.training and self._resumed is not None:  # the epoch a mid-epoch checkpoint resumes
            self.loss_sum, self.count = self._resumed["loss_sum"], self._resumed["count"]
            for name, m in self.metrics.items():
                m.load_state_dict(self._resumed["metrics"][name])
        self._resumed = None

    def state_dict(self) -> dict:
        """During a training phase, its running sums (what a mid-epoch resume needs); else nothing."""
        if not self._in_training_phase:
            return {}
        self._update()
        return {"loss_sum": self._total_loss(torch.device("cpu")), "count": self.count,
                "metrics": {name: m.state_dict() for name, m in self.metrics.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state or None  # applied when the resumed training phase starts

    def after_batch(self, learn) -> None:
        target = learn.batch[1]  # (inputs, targets, ...): what follows the targets (weights, masks) goes to the loss
        n = target.shape[0]  # not len(target): a Python-level call on tensors, and this runs every batch
        self.count += n
        value = learn.loss_value
        if value is not None:  # the Learner read the loss on the CPU (reads_loss_value)
            self._host_loss_sum += value * n
        else:
            self._losses.setdefault(n, []).append(learn.loss.detach())
        if self.metrics:
            # Training predictions carry the autograd graph: keep `.data` (the values without it; `.detach()`
            # would allocate autograd metadata for each batch kept, ~5k more CPU instructions a batch).
            # Validation runs under no_grad: its predictions are kept as they are.
            preds = learn.preds.data if learn.training else learn.preds
            self._preds.append(preds)
            self._targets.append(target)
            self._buffered_numel += preds.numel()
            if self._buffered_numel >= self.max_buffered or len(self._targets) >= self.update_every:
                self._update()
        elif self._losses and (learn.iter + 1) % self.update_every == 0:  # no metrics, losses kept as tensors
            self._update()

    def _update(self) -> None:
        if self._preds:
            preds, targets = self._scores(torch.cat(self._preds)), torch.cat(self._targets)
            for m in self.metrics.values():
                if m.device != preds.device:
                    m.to(preds.device)
                m.update(preds, targets)
        for n, losses in self._losses.items():
            batch_sum = torch.stack(losses).float().sum() * n
            self.loss_sum = batch_sum if self.loss_sum is None else self.loss_sum + batch_sum
        self._preds, self._targets, self._losses, self._buffered_numel = [], [], {}, 0

    def after_epoch(self, learn) -> None:
        self._update()
        row = {name: _number(name, self._compute(m)) for name, m in self.metrics.items()}
        loss_sum = self._total_loss(model_device(learn.model))
        count = torch.tensor(float(self.count), dtype=torch.float64, device=loss_sum.device)
        totals = all_reduce_sum(torch.stack([loss_sum, count]))
        loss_sum, count = totals.tolist()
        row["loss"] = loss_sum / count if count else float("nan")
        row |= {"epoch": learn.epoch, "phase": "train" if learn.training else "valid"}
        learn.history.append(row)
        (learn.metrics_log or self._print)(row)
        self._in_training_phase = False

    def _total_loss(self, device: torch.device) -> torch.Tensor:
        """The phase's loss summed over samples so far (float64; on the device of the losses kept there, else
        on `device`)."""
        if self.loss_sum is None:
            return torch.tensor(self._host_loss_sum, dtype=torch.float64, device=device)
        return self.loss_sum.double() + self._host_loss_sum

    @staticmethod
    def _compute(metric: Metric) -> torch.Tensor:
        if world_size() == 1:
            return metric.compute()
        from torcheval.metrics.toolkit import sync_and_compute
        return sync_and_compute(metric)


def _check_thresholds_of_probabilities(metrics: dict) -> None:
    """Under a loss on logits of labels the metrics get probabilities (sigmoids): a threshold outside (0, 1), such as
    BinaryAccuracy(threshold=0.) (the way to score logits before slowlearn gave such metrics probabilities), would
    call every item one class, silently."""
    for name, metric in metrics.items():
        threshold = getattr(metric, "threshold", None)
        if isinstance(threshold, torch.Tensor) and threshold.ndim == 0:  # not a binned metric's tensor of bins
            threshold = threshold.item()
        if isinstance(threshold, numbers.Real) and not 0 < threshold < 1:  # numpy's floats too
            raise ValueError(f"MetricsCB: {name} thresholds at {threshold}, but under a loss on logits (binary "
                             f"cross-entropy with logits) the metrics get probabilities, the sigmoids of the outputs: "
                             f"give it a threshold between 0 and 1 (0.5, torcheval's default, for the logits' 0)")


def _number(name: str, value: torch.Tensor) -> float:
    """A metric's value as the one number that the history and the table hold; an error naming the metric if it
    gives several."""
    if value.numel() != 1:
        raise ValueError(f"Metric {name} gives {value.numel()} values (shape {tuple(value.shape)}), but the history "
                         f"and the metrics table hold one number per metric: make it give one (for a classification "
                         f"metric, average='macro' or 'micro' rather than average=None), or compute the values per "
                         f"class from learn.get_preds() after the fit.")
    return value.item()
