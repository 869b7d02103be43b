import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_dls
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import Callback, Learner, MetricsCB, ProgressCB
from slowlearn.display import TablePrinter


class Frozen(Callback):
    """Skips the optimizer step, so every batch sees the same model."""

    def step(self, learn):
        pass


@pytest.mark.parametrize("update_every", [1, 2, 16])
def test_metrics_equal_hand_computation_with_uneven_last_batch(capsys, update_every):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    dls = make_dls(n_train=10, n_valid=7, bs=4)  # batches of 4, 4, 2 and 4, 3
    metrics = MetricsCB(MulticlassAccuracy(), acc=MulticlassAccuracy(), update_every=update_every)
    learn = Learner(model, dls, cbs=[metrics, Frozen()]).fit(1)
    for row, dl in zip(learn.history, (dls.train, dls.valid)):
        x, y = dl.x, dl.y
        with torch.no_grad():
            preds = model(x)
        assert row["loss"] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-6)
        expected_acc = (preds.argmax(1) == y).float().mean().item()
        assert row["MulticlassAccuracy"] == pytest.approx(expected_acc)
        assert row["acc"] == pytest.approx(expected_acc)
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train"), (0, "valid")]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["MulticlassAccuracy", "acc", "loss", "epoch", "phase"]
    assert out[2].split()[-1] == "valid" and len(out) == 3


def test_losses_off_the_cpu_stay_on_their_device_until_the_phase_ends_and_give_the_same_row(monkeypatch):
    """On a GPU reading a loss waits for the device: tensors that say they are not on the CPU are summed there."""
    def fit():
        torch.manual_seed(0)
        learn = Learner(nn.Linear(3, 2), make_dls(n_train=10, n_valid=7, bs=4), cbs=[MetricsCB(update_every=2)])
        return learn.fit(2).history

    on_cpu = fit()
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(t) or item(t))
    off_cpu = fit()
    assert reads == []  # the row's sums come back with one tolist() per phase
    assert [r["loss"] for r in off_cpu] == pytest.approx([r["loss"] for r in on_cpu], rel=1e-6)


def test_losses_kept_as_tensors_are_summed_every_update_every_batches(monkeypatch):
    class Waiting(Callback):
        order = MetricsCB.order + 1

        def __init__(self):
            self.most = 0

        def after_batch(self, learn):
            self.most = max(self.most, sum(map(len, learn.metrics._losses.values())))

    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))  # as on a GPU
    spy = Waiting()
    Learner(nn.Linear(3, 2), make_dls(n_train=40, bs=4), cbs=[MetricsCB(update_every=3), spy]).fit(1)
    assert spy.most == 2  # the third waiting loss is summed into the running total at once


def test_the_predictions_kept_between_updates_hold_no_autograd_graph():
    class Kept(Callback):
        order = MetricsCB.order + 1

        def after_batch(self, learn):
            if learn.training:
                self.kept = list(learn.metrics._preds)

    kept = Kept()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=10, bs=4), cbs=[MetricsCB(acc=MulticlassAccuracy()), kept])
    learn.fit(1, valid=False)
    assert len(kept.kept) == 3 and learn.preds.requires_grad  # the batches' own predictions carry the graph
    assert all(not p.requires_grad and p.grad_fn is None for p in kept.kept)


class CountingAccuracy(MulticlassAccuracy):
    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def update(self, input, target):
        self.batch_sizes.append(len(target))
        return super().update(input, target)


@pytest.mark.parametrize("max_buffered, expected", [(2**22, [10]), (8 * 2, [8, 2])])
def test_metrics_update_early_when_the_kept_predictions_grow_large(max_buffered, expected):
    torch.manual_seed(0)
    metric = CountingAccuracy()  # 2 outputs per item: 4 items of predictions are 8 elements
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=10, n_valid=7, bs=4),
                    cbs=[MetricsCB(acc=metric, update_every=1000, max_buffered=max_buffered), Frozen()])
    learn.fit(1, valid=False)
    assert metric.batch_sizes == expected  # batches of 4, 4, 2: buffered until 16 elements (two batches) are kept


def test_history_accumulates_over_fits_and_epochs():
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB()])
    learn.fit(2)
    learn.fit(1)
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [
        (0, "train"), (0, "valid"), (1, "train"), (1, "valid"), (0, "train"), (0, "valid")]


def test_table_printer_formats_floats_and_prints_header_once():
    lines = []
    printer = TablePrinter(lines.append)
    printer({"accuracy": 0.79123, "loss": 0.5, "epoch": 0, "phase": "train"})
    printer({"accuracy": 0.8, "loss": 0.4, "epoch": 0, "phase": "valid"})
    assert [line.split() for line in lines] == [["accuracy", "loss", "epoch", "phase"],
                                                ["0.791", "0.500", "0", "train"], ["0.800", "0.400", "0", "valid"]]


def test_metrics_rows_reach_the_display_through_the_learners_slot(capsys):
    seen = []

    class Peek(Callback):
        order = 70

        def before_fit(self, learn):
            seen.append(learn.metrics_log)

    progress = ProgressCB(table=False)
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), progress, Peek()]).fit(1)
    assert seen == [progress._log_row] and learn.metrics_log is None  # ProgressCB's for its fit only
    assert capsys.readouterr().out == "" and [loss for _, loss in progress.valid_losses] == [learn.history[-1]["loss"]]
    learn.remove_cb(progress).fit(1)  # without a display, MetricsCB prints its own table
    assert capsys.readouterr().out.splitlines()[0].split() == ["loss", "epoch", "phase"]


def test_metrics_score_the_targets_of_batches_that_carry_more_than_inputs_and_targets():
    """A batch (inputs, targets, weights) gives the loss both (loss_func(preds, targets, weights)); MetricsCB scored
    the last tensor, the weights, as targets: an accuracy of 0.0 with no error."""
    from torch.utils.data import DataLoader, TensorDataset

    from slowlearn import DataLoaders
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(20, 3, generator=g), torch.rand(20, generator=g)
    y = (x[:, 0] > 0).long()
    dls = DataLoaders(DataLoader(TensorDataset(x[:12], y[:12], w[:12]), 4),
                      DataLoader(TensorDataset(x[12:], y[12:], w[12:]), 4))
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    weighted = lambda preds, y, w: (F.cross_entropy(preds, y, reduction="none") * w).mean()  # noqa: E731
    learn = Learner(model, dls, weighted, cbs=[MetricsCB(acc=MulticlassAccuracy()), Frozen()]).fit(1)
    with torch.no_grad():
        expected = (model(x[12:]).argmax(1) == y[12:]).float().mean().item()
    assert learn.history[-1]["acc"] == pytest.approx(expected)


def test_a_metric_that_gives_several_values_is_an_error_naming_it_and_the_fix():
    """MulticlassAccuracy(average=None) gives one accuracy per class: the fit failed at the end of its first epoch
    with torch's "a Tensor with 3 elements cannot be converted to Scalar", naming neither the metric nor a fix."""
    metrics = MetricsCB(per_class=MulticlassAccuracy(average=None, num_classes=3))
    learn = Learner(nn.Linear(3, 3), make_dls(n_classes=3), cbs=[metrics])
    with pytest.raises(ValueError, match=r"per_class gives 3 values \(shape \(3,\)\).*one number.*average="):
        learn.fit(1)


@pytest.mark.parametrize("args, kwargs, name", [
    ((MulticlassAccuracy(), MulticlassAccuracy(average="macro", num_classes=2)), {}, "MulticlassAccuracy"),
    ((MulticlassAccuracy(),), {"MulticlassAccuracy": MulticlassAccuracy()}, "MulticlassAccuracy"),
    ((), {"loss": MulticlassAccuracy()}, "loss"),
    ((), {"phase": MulticlassAccuracy()}, "phase"),
])
def test_two_metrics_of_one_name_or_a_metric_named_as_a_column_of_its_own_are_refused(args, kwargs, name):
    """Metrics are named after their class unless named by keyword: a second of one class replaced the first, and
    one named "loss" (or "epoch", "phase") was replaced in each row by MetricsCB's own column, without a word."""
    with pytest.raises(ValueError, match=rf"'{name}'.*name each metric by keyword"):
        MetricsCB(*args, **kwargs)


def test_threshold_metrics_of_a_loss_on_logits_score_probabilities_in_the_fit_and_in_validate():
    """With binary cross-entropy on logits, BinaryAccuracy thresholded the logits at 0.5 (it expects probabilities):
    0.900 in the history where the model's accuracy was 0.930, silently."""
    from torch.utils.data import DataLoader, TensorDataset
    from torcheval.metrics import BinaryAccuracy

    from slowlearn import DataLoaders
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).float()
    dls = DataLoaders(DataLoader(TensorDataset(x[:32], y[:32]), 8), DataLoader(TensorDataset(x[32:], y[32:]), 8))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    learn = Learner(model, dls, nn.BCEWithLogitsLoss(), cbs=[MetricsCB(acc=BinaryAccuracy()), Frozen()]).fit(1)
    with torch.no_grad():
        logits = model(x[32:])
    expected = ((logits > 0).float() == y[32:]).float().mean().item()
    assert expected != ((logits > 0.5).float() == y[32:]).float().mean().item()  # the data tells the two apart
    assert learn.history[-1]["acc"] == pytest.approx(expected) and learn.validate()["acc"] == pytest.approx(expected)



def test_a_threshold_for_logits_is_refused_where_the_metrics_get_probabilities():
    """BinaryAccuracy(threshold=0.), the way to score logits before MetricsCB gave such metrics sigmoids, would call
    every item positive: 0.953 before, 0.375 after, silently."""
    from torcheval.metrics import BinaryAccuracy
    learn = Learner(nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), make_dls(), nn.BCEWithLogitsLoss(),
                    cbs=[MetricsCB(acc=BinaryAccuracy(threshold=0.))])
    with pytest.raises(ValueError, match=r"acc thresholds at 0.0, but under a loss on logits .* give it a threshold "
                                         r"between 0 and 1"):
        learn.fit(1)


@pytest.mark.parametrize("threshold", [torch.tensor(0.), np.float32(0.)], ids=["tensor", "numpy"])
def test_a_threshold_for_logits_given_as_a_tensor_or_a_numpy_number_is_refused_too(threshold):
    """BinaryAccuracy keeps the threshold as given: a tensor or a numpy float32 of 0 was let through, and called every
    item positive, silently. A binned metric's `threshold` (a tensor of bins) is no threshold of probabilities."""
    from torcheval.metrics import BinaryAccuracy, BinaryBinnedAUROC
    learn = Learner(nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), make_dls(), nn.BCEWithLogitsLoss(),
                    cbs=[MetricsCB(acc=BinaryAccuracy(threshold=threshold), auroc=BinaryBinnedAUROC(threshold=1))])
    with pytest.raises(ValueError, match=r"acc thresholds at 0.0, but under a loss on logits"):
        learn.fit(1)
