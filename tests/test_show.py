"""Pictures: every plot function returns its Figure, left open for plt.show() in a script, saved with path=;
titles, layouts and axes that read right."""
import matplotlib.pyplot as plt
import pytest
import torch
from conftest import CLASSES, image_learner, make_dls
from torch import nn

from slowlearn import (
    ActivationStatsCB,
    Learner,
    ProgressCB,
    RecorderCB,
    compare_optimizers,
    plot_confusion_matrix,
    plot_metrics,
    plot_top_losses,
    show_batch,
    show_results,
)
from slowlearn.data.show import image_grid


@pytest.fixture(scope="module")
def trained():
    stats = ActivationStatsCB()
    learn = image_learner()
    learn.cbs += [RecorderCB(), ProgressCB(), stats]
    learn.fit(2)
    learn.lr_find(num_it=6, show_plot=False)
    return learn


PLOTS = {
    "show_batch": lambda learn, **kw: show_batch(learn.dls, n=6, **kw),
    "learn.show_batch": lambda learn, **kw: learn.show_batch(n=6, **kw),
    "dls.show_batch": lambda learn, **kw: learn.dls.show_batch(n=6, **kw),
    "show_results": lambda learn, **kw: show_results(learn, n=6, **kw),
    "plot_confusion_matrix": plot_confusion_matrix,
    "plot_top_losses": plot_top_losses,
    "plot_metrics": plot_metrics,
    "recorder.plot": lambda learn, **kw: learn.recorder.plot(**kw),
    "recorder.plot_loss": lambda learn, **kw: learn.recorder.plot_loss(**kw),
    "progress.plot_loss": lambda learn, **kw: learn.progress.plot_loss(**kw),
    "lr_finder.plot": lambda learn, **kw: learn.lr_finder.plot(**kw),
    "activation_stats.plot_stats": lambda learn, **kw: learn.activation_stats.plot_stats(**kw),
    "activation_stats.color_dim": lambda learn, **kw: learn.activation_stats.color_dim(**kw),
    "activation_stats.dead_chart": lambda learn, **kw: learn.activation_stats.dead_chart(**kw),
}


@pytest.mark.parametrize("name", PLOTS)
def test_plot_returns_an_open_figure_and_saves_with_path(name, trained, tmp_path):
    fig = PLOTS[name](trained)
    assert fig.number in plt.get_fignums()  # a script's plt.show() shows it
    saved = PLOTS[name](trained, path=tmp_path / "plot.png")
    assert saved is not fig and (tmp_path / "plot.png").stat().st_size > 1000


def test_compare_optimizers_figure_is_open():
    model_fn = lambda: nn.Linear(3, 2)  # noqa: E731
    _, fig = compare_optimizers(model_fn, {"sgd": (torch.optim.SGD, 0.1)}, n_epochs=1, dls=make_dls())
    assert fig.number in plt.get_fignums()


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_top_losses_read_like_show_results_in_a_square_grid(trained):
    fig = plot_top_losses(trained, k=9)
    result = trained.get_preds(with_loss=True)
    top = result.losses.topk(9).indices
    for title, i in zip(titles(fig), top.tolist()):
        names, numbers = title.split("\n")
        truth, guess = CLASSES[result.targets[i]], CLASSES[result.preds[i].argmax()]
        assert names == f"{truth} / {guess}"  # actual / prediction, as show_results
        assert numbers.endswith(f"p {result.preds[i].max():.2f}")  # the prediction's probability: never < 1/3
    assert "actual / prediction" in fig._suptitle.get_text()
    assert show_results(trained, n=4).axes[0].get_title().split("\n") == [
        CLASSES[result.targets[0]], CLASSES[result.preds[0].argmax()]]


@pytest.mark.parametrize("n, shape", [(9, (3, 3)), (16, (4, 4)), (4, (2, 2)), (8, (3, 3)), (2, (1, 2))])
def test_image_grids_are_near_square(n, shape):
    fig, axs = image_grid(n)
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == shape


def test_plot_metrics_numbers_epochs_as_the_history(trained):
    ax = plot_metrics(trained).axes[0]
    epochs = [row["epoch"] for row in trained.history if row["phase"] == "train"]
    assert list(ax.get_lines()[0].get_xdata()) == epochs == [0, 1]
    one_epoch = image_learner().fit(1)
    ax = plot_metrics(one_epoch).axes[0]
    assert list(ax.get_xticks()) == [0]  # not a 0.95..1.05 axis


def test_per_batch_axes_have_whole_number_ticks(trained):
    for fig in (trained.recorder.plot(), trained.recorder.plot_loss(), trained.progress.plot_loss(),
                trained.activation_stats.plot_stats(), trained.activation_stats.dead_chart()):
        for ax in fig.axes:
            assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_title()


def test_lr_find_legend_does_not_cover_the_curve(trained):
    fig = trained.lr_finder.plot()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes


@pytest.mark.parametrize("picture", [show_results, plot_top_losses, lambda learn: show_batch(learn.dls)])
def test_pictures_of_data_that_are_not_images_say_so(picture):
    """A Learner on tabular data (3 numbers per item): the pictures of images say what they need, before drawing."""
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1)
    open_figures = plt.get_fignums()
    with pytest.raises(ValueError, match=r"images .*1, 3 or 4 channels.*got items of shape \(3,\)"):
        picture(learn)
    assert plt.get_fignums() == open_figures  # no half-drawn figure left open


def curve_points(fig, name):
    ax = next(ax for ax in fig.axes if ax.get_title() == name)
    return {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines()}


def test_plot_metrics_puts_each_validation_at_the_training_epoch_it_scored():
    """A validation-only fit scores the weights of the last training epoch, and a fit after one with valid=False
    validates the epoch it trained: both used to be drawn an epoch off (the valid curve counted its own rows)."""
    learn = image_learner()
    learn.fit(2)
    learn.fit(1, train=False)
    valid = [row["loss"] for row in learn.history if row["phase"] == "valid"]
    assert curve_points(plot_metrics(learn), "loss")["valid"] == [(0, valid[0]), (1, valid[1]), (1, valid[2])]
    learn = image_learner()
    learn.fit(1, valid=False)
    learn.fit(1)
    points = curve_points(plot_metrics(learn), "loss")
    assert [x for x, _ in points["train"]] == [0, 1] and points["valid"] == [(1, learn.history[-1]["loss"])]


def test_plot_metrics_draws_a_metric_that_a_later_fit_added():
    """The panels were the first history row's columns: a metric that a later fit's MetricsCB added was not drawn."""
    from torcheval.metrics import MulticlassAccuracy

    from slowlearn import MetricsCB
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB()])
    learn.fit(1)
    learn.cbs = [MetricsCB(accuracy=MulticlassAccuracy())]
    learn.fit(1)
    points = curve_points(plot_metrics(learn), "accuracy")
    assert [x for x, _ in points["train"]] == [1] and [x for x, _ in points["valid"]] == [1]
