from functools import partial

import matplotlib.figure
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES, image_dls, image_learner, make_dls
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slowlearn import (
    DataLoaders,
    Learner,
    MetricsCB,
    TensorLoader,
    confusion_matrix,
    plot_confusion_matrix,
    plot_metrics,
    plot_top_losses,
    show_batch,
    show_results,
)


def test_get_preds_equals_a_manual_loop():
    learn = image_learner().fit(1)
    learn.model.train()
    result = learn.get_preds(with_input=True, with_loss=True)
    xs, ys = zip(*learn.dls.valid)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        logits = learn.model(x)
    torch.testing.assert_close(result.preds, logits.softmax(-1))
    assert torch.equal(result.targets, y) and torch.equal(result.inputs, x)
    torch.testing.assert_close(result.losses, F.cross_entropy(logits, y, reduction="none"))
    assert result.preds.shape == (10, 3) and learn.model.training  # mode restored
    assert learn.get_preds(learn.dls.train).preds.shape == (24, 3)


def test_tta_averages_with_the_mirror_image():
    learn = image_learner().fit(1)
    x = torch.cat([xb for xb, _ in learn.dls.valid])
    with torch.no_grad():
        expected = (learn.model(x).softmax(-1) + learn.model(x.flip(-1)).softmax(-1)) / 2
    result = learn.get_preds(tta=True, with_loss=True)
    torch.testing.assert_close(result.preds, expected)
    torch.testing.assert_close(result.losses, -expected.log().gather(1, result.targets[:, None])[:, 0])


def test_validate_returns_metrics_without_touching_history():
    learn = image_learner().fit(1)
    n_history = len(learn.history)
    metrics = learn.validate()
    assert metrics["loss"] == pytest.approx(learn.history[-1]["loss"], rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(learn.history[-1]["accuracy"])
    assert len(learn.history) == n_history


def test_predict_single_item_and_batch():
    learn = image_learner().fit(1)
    item = learn.dls.valid.x[3]
    single = learn.predict(item)
    probs = learn.get_preds().preds[3]
    torch.testing.assert_close(single.probs, probs)
    assert single.index == int(probs.argmax()) and single.name == CLASSES[single.index]
    batch = learn.predict(learn.dls.valid.x[:4])
    assert batch.index.tolist() == learn.get_preds().preds[:4].argmax(-1).tolist()
    assert batch.name == [CLASSES[i] for i in batch.index.tolist()]


def test_predict_wrong_shape_says_what_it_expects():
    learn = image_learner()
    with pytest.raises(ValueError, match=r"images of 1 channel\(s\), 6x6.*got shape \(3, 6, 6\)"):
        learn.predict(torch.zeros(3, 6, 6, dtype=torch.uint8))


def test_confusion_matrix_leaves_out_predictions_outside_the_classes():
    targets, preds = torch.tensor([0, 1, 2]), torch.tensor([-1, 1, 3])
    assert torch.equal(confusion_matrix(targets, preds, 3), torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]]))


def test_confusion_matrix_skips_ignored_targets_and_counts_many_classes_of_uint8_targets():
    targets, preds = torch.tensor([0, -100, 2, -100]), torch.tensor([0, 1, 1, 2])
    assert torch.equal(confusion_matrix(targets, preds, 3), torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0]]))
    targets = torch.tensor([29, 29, 3], dtype=torch.uint8)  # 29 * 30 does not fit in uint8
    counts = confusion_matrix(targets, torch.tensor([29, 1, 3]), 30)
    assert counts.sum() == 3 and counts[29, 29] == counts[29, 1] == counts[3, 3] == 1


def test_confusion_matrix_counts():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(targets.tolist(), preds.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(targets, preds, 3), expected)
    learn = image_learner().fit(1)
    fig = plot_confusion_matrix(learn)
    assert fig.confusion_matrix.sum() == 10  # the number of validation items
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == CLASSES
    assert "normalised" in plot_confusion_matrix(learn, normalize=True).axes[0].get_title()


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_pictures_are_figures_with_class_names():
    learn = image_learner().fit(2)
    batch = show_batch(learn.dls, n=6)
    assert isinstance(batch, matplotlib.figure.Figure) and len(titles(batch)) == 6
    assert all(t in CLASSES for t in titles(batch))
    results = show_results(learn, n=8)
    assert len(titles(results)) == 8 and all(t.split("\n")[0] in CLASSES for t in titles(results))
    top = plot_top_losses(learn, k=4)
    assert len(titles(top)) == 4 and all(t.split(" / ")[0] in CLASSES for t in titles(top))
    metrics = plot_metrics(learn)
    assert titles(metrics) == ["accuracy", "loss"] and len(metrics.axes[0].get_lines()) == 2


def test_decode_undoes_normalisation():
    dls = image_dls()
    xb, _ = next(iter(dls.valid))
    torch.testing.assert_close(dls.valid.decode(xb), dls.valid.x[:8].float() / 255)


def torch_loader_learner():
    """A learner on torch DataLoaders of normalised float images (no `decode`, `normalise` or `x`)."""
    dls = image_dls()
    x = dls.valid.normalise(torch.cat([dls.train.x, dls.valid.x]))
    y = torch.cat([dls.train.y, dls.valid.y])
    train, valid = TensorDataset(x[:24], y[:24]), TensorDataset(x[24:], y[24:])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    return Learner(model, DataLoaders(DataLoader(train, 8, shuffle=True), DataLoader(valid, 8), classes=CLASSES))


def test_pictures_and_predict_with_torch_dataloaders():
    learn = torch_loader_learner().fit(1)
    for fig in (show_batch(learn.dls, n=6), show_results(learn, n=6), plot_top_losses(learn, k=6)):
        assert len(titles(fig)) == 6
        shown = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
        assert all(0 <= a.min() and a.max() <= 1 for a in shown)  # normalised floats stretched for display
    item = learn.dls.valid.dataset[3][0]
    single = learn.predict(item)
    torch.testing.assert_close(single.probs, learn.get_preds().preds[3])
    assert learn.predict(torch.stack([item, item])).index.tolist() == [single.index] * 2


def test_show_batch_and_summary_are_learner_methods(capsys):
    learn = image_learner()
    batch = learn.show_batch(n=4, split="valid")
    assert len(titles(batch)) == 4 and titles(batch) == titles(show_batch(learn.dls, n=4, split="valid"))
    rows = learn.summary(depth=2)
    assert rows[-1]["params"] == rows[-1]["trainable"] == sum(p.numel() for p in learn.model.parameters())
    assert rows[0]["output"] and "MFLOPs" in capsys.readouterr().out


def empty_loaders():
    """An empty TensorLoader, an empty torch DataLoader, and a loader without len() that yields nothing."""
    learn = image_learner()
    x, y = learn.dls.valid.x[:0], learn.dls.valid.y[:0]
    tensor_loader = TensorLoader(x, y, 4, mean=0.5, std=0.25, device="cpu")
    return learn, [tensor_loader, DataLoader(TensorDataset(x.float(), y), 4), iter(())]


def test_get_preds_and_validate_on_an_empty_loader_say_so():
    """They used to return Preds of Nones, and validate failed with "'NoneType' object has no attribute 'mean'"."""
    learn, loaders = empty_loaders()
    for dl in loaders:
        with pytest.raises(ValueError, match=r"learn.get_preds\(\): the loader has no batches.*at least one item"):
            learn.get_preds(dl)
    for dl in empty_loaders()[1]:
        with pytest.raises(ValueError, match=r"learn.validate\(\): the loader has no batches.*at least one item"):
            learn.validate(dl)
    with pytest.raises(ValueError, match=r"\(0 items\)"):
        learn.get_preds(loaders[0])


def test_get_preds_without_a_validation_loader_asks_for_one():
    learn = image_learner()
    learn.dls = DataLoaders(learn.dls.train, None)
    with pytest.raises(ValueError, match=r"has no validation loader; pass the loader to use: learn.get_preds\(dl\)"):
        learn.get_preds()


def test_validate_computes_no_gradients():
    learn = image_learner()
    learn.loss_func = lambda out, y, reduction="mean": F.cross_entropy(out, y, reduction=reduction) * (
        0 if torch.is_grad_enabled() else 1)  # the loss is 0 if validate ran with gradients on
    assert learn.validate()["loss"] > 0


def test_per_item_losses_from_a_loss_module_a_partial_and_a_loss_without_reduction():
    """nn.CrossEntropyLoss() crashed validate, get_preds(with_loss=True) and plot_top_losses: it was called with
    reduction="none", which its forward does not take."""
    learn = image_learner()
    logits = torch.cat([learn.model(xb) for xb, _ in learn.dls.valid]).detach()
    module = nn.CrossEntropyLoss(label_smoothing=.1)
    for loss_func in (module, partial(F.cross_entropy, label_smoothing=.1)):
        learn.loss_func = loss_func
        losses = learn.get_preds(with_loss=True).losses
        targets = torch.cat([yb for _, yb in learn.dls.valid])
        torch.testing.assert_close(losses, F.cross_entropy(logits, targets, reduction="none", label_smoothing=.1))
        assert learn.validate()["loss"] == pytest.approx(losses.mean().item())
    assert module.reduction == "mean"  # the Learner's loss is left as it was
    assert isinstance(plot_top_losses(learn, k=2), matplotlib.figure.Figure)
    learn.loss_func = lambda out, y: F.cross_entropy(out, y)
    with pytest.raises(TypeError, match=r"learn.validate\(\) needs a loss per item.*takes no `reduction=`.*"
                                        r"accepts reduction='none'"):
        learn.validate()


def regression_dls(targets):
    """20 items of 3 numbers, `targets` one per item (a regression, one logit, several labels)."""
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    y = targets(x)
    return DataLoaders(TensorLoader(x[:13], y[:13], 4, shuffle=True, device="cpu", seed=0),
                       TensorLoader(x[13:], y[13:], 4, device="cpu"))


def test_validate_scores_the_outputs_the_fit_scored():
    """validate fed the metrics softmax probabilities where the fit's MetricsCB feeds the model's outputs: a
    regression's mean squared error was that of 1.0 (the softmax of one output), and a multiclass AUROC differed."""
    from torcheval.metrics import MeanSquaredError, MulticlassAUROC
    torch.manual_seed(0)
    regression = Learner(nn.Linear(3, 1), regression_dls(lambda x: x.sum(1, keepdim=True)), F.mse_loss,
                         cbs=[MetricsCB(mse=MeanSquaredError())]).fit(1)
    torch.manual_seed(0)
    classes = Learner(nn.Linear(3, 3), make_dls(n_valid=40, n_classes=3),
                      cbs=[MetricsCB(auroc=MulticlassAUROC(num_classes=3))]).fit(1)
    for learn in (regression, classes):
        row, scores = learn.history[-1], learn.validate()
        assert scores == pytest.approx({k: v for k, v in row.items() if k not in ("epoch", "phase")}, rel=1e-5)


@pytest.mark.parametrize("model, targets, loss_func, expected", [
    (nn.Linear(3, 1), lambda x: x.sum(1, keepdim=True), F.mse_loss, lambda out: out),  # a regression
    (nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), lambda x: (x[:, 0] > 0).float(),  # binary, one logit an item
     F.binary_cross_entropy_with_logits, torch.sigmoid),
    (nn.Linear(3, 3), lambda x: (x > 0).float(), nn.BCEWithLogitsLoss(), torch.sigmoid),  # multi-label
    (nn.Linear(3, 2), lambda x: x[:, :2] * 2, nn.L1Loss(), lambda out: out),  # two numbers an item
])
def test_get_preds_and_predict_give_probabilities_only_where_the_loss_makes_them(model, targets, loss_func, expected):
    """Every output was put through a softmax over its last dimension: a regression's predictions were all 1.0, and
    one logit per item (shape (N,)) became a softmax over the batch."""
    learn = Learner(model, regression_dls(targets), loss_func)
    x = torch.cat([xb for xb, _ in learn.dls.valid])
    with torch.no_grad():
        outputs = expected(model(x))
    torch.testing.assert_close(learn.get_preds().preds, outputs)
    torch.testing.assert_close(learn.predict(x[:4]).probs, outputs[:4])


def test_get_preds_and_validate_take_batches_that_carry_more_than_inputs_and_targets():
    """The fit takes (inputs, targets, weights) batches (the loss gets the weights); get_preds and validate failed on
    them with "too many values to unpack (expected 2)"."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(20, 3, generator=g), torch.rand(20, generator=g)
    y = (x[:, 0] > 0).long()
    dls = DataLoaders(DataLoader(TensorDataset(x[:12], y[:12], w[:12]), 4),
                      DataLoader(TensorDataset(x[12:], y[12:], w[12:]), 4))

    def weighted(preds, y, w, reduction="mean"):
        losses = F.cross_entropy(preds, y, reduction="none") * w
        return losses.mean() if reduction == "mean" else losses

    learn = Learner(nn.Linear(3, 2), dls, weighted, cbs=[MetricsCB()]).fit(1)
    result = learn.get_preds(with_loss=True)
    assert torch.equal(result.targets, y[12:]) and result.losses.shape == (8,)
    assert learn.validate()["loss"] == pytest.approx(learn.history[-1]["loss"], rel=1e-5)


def test_predictions_on_the_training_loader_leave_the_next_fits_batches_as_they_were():
    """get_preds(learn.dls.train) drew a shuffled epoch's order from the loader's generator (and augmentation from
    the global RNGs), so the next fit trained on other batches than it would have: a look at the training
    predictions between two fits changed the run."""
    def run(look):
        torch.manual_seed(0)
        learn = Learner(nn.Linear(3, 2), make_dls(n_train=40, bs=8)).fit(1)
        if look:
            learn.get_preds(learn.dls.train)
            learn.validate(learn.dls.train)
        return learn.fit(1).model.weight.detach().clone()

    assert torch.equal(run(look=True), run(look=False))
