import matplotlib.figure
import pytest
import torch
from conftest import make_dls
from torch import nn

from slowlearn import ActivationStatsCB, Callback, Learner, get_kaiming_initialized_model


class Frozen(Callback):
    def step(self, learn):
        pass


def test_stats_equal_a_direct_computation_on_known_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    dls = make_dls(n_train=12, bs=4)
    batches = []

    class Batches(Callback):
        def before_batch(self, learn):
            if learn.training:
                batches.append(learn.batch[0].clone())

    stats = ActivationStatsCB(bins=10, hist_max=2., dead_below=0.1)
    Learner(model, dls, cbs=[stats, Frozen(), Batches()]).fit(1)
    assert stats.names == ["1"]  # by default, the activation layers
    with torch.no_grad():
        outs = [model[1](model[0](xb)) for xb in batches]
    layer = stats.stats[0]
    assert layer["mean"] == pytest.approx([o.mean().item() for o in outs], rel=1e-5)
    assert layer["std"] == pytest.approx([o.std().item() for o in outs], rel=1e-5)
    assert layer["dead"] == pytest.approx([(o.abs() < 0.1).float().mean().item() for o in outs])
    for hist, o in zip(layer["hist"], outs):
        assert torch.equal(hist, torch.histc(o.abs(), 10, 0, 2.))


def test_every_and_valid_batches_not_recorded():
    stats = ActivationStatsCB(every=2)
    Learner(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), make_dls(n_train=20, bs=4),
            cbs=[stats]).fit(2)
    assert len(stats.stats[0]["mean"]) == 2 * 3  # batches 0, 2, 4 of 5, in each of 2 epochs; no valid batches


def hooks_left(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_fit_and_after_error():
    model = get_kaiming_initialized_model()
    dls = make_dls(n_train=8, n_valid=4, bs=4)
    dls.train.x = torch.randn(8, 1, 28, 28)
    dls.valid.x = torch.randn(4, 1, 28, 28)
    stats = ActivationStatsCB()
    Learner(model, dls, cbs=[stats]).fit(1)
    assert len(stats.names) == 4 and hooks_left(model) == 0

    bad = type("Bad", (Callback,), {"after_backward": lambda self, learn: 1 / 0})()
    with pytest.raises(ZeroDivisionError):
        Learner(model, dls, cbs=[ActivationStatsCB(), bad]).fit(1)
    assert hooks_left(model) == 0


def test_plots_are_figures_with_one_entry_per_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    stats = ActivationStatsCB()
    Learner(model, make_dls(), cbs=[stats]).fit(1)
    figs = [stats.plot_stats(), stats.color_dim(), stats.dead_chart()]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    assert len(figs[0].axes[1].get_lines()) == 2
    assert [ax.get_title() for ax in figs[1].axes[:2]] == ["1: ReLU", "2: ReLU"]
    assert [line.get_label() for line in figs[0].axes[1].get_lines()] == stats.labels == ["1: ReLU", "2: ReLU"]
    assert stats.names == ["1", "3"]  # their paths in the model
    assert len(figs[2].axes[0].get_lines()) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(every=0), "Invalid every: 0"), (dict(every=-1), "Invalid every: -1"), (dict(bins=0), "Invalid bins: 0"),
    (dict(hist_max=0.), "Invalid hist_max: 0.0"), (dict(dead_below=-0.1), "Invalid dead_below: -0.1")])
def test_arguments_that_cannot_be_meant_are_refused(kwargs, match):
    """every=0 failed at the first batch with a ZeroDivisionError, bins=0 with torch's histogram error; every=-1 and
    hist_max=0 (histograms over the data's own range) were taken silently."""
    with pytest.raises(ValueError, match=f"ActivationStatsCB: {match}"):
        ActivationStatsCB(**kwargs)


def test_a_fit_that_failed_before_its_before_fit_gets_no_second_error():
    class Fails(Callback):
        order = -50

        def before_fit(self, learn):
            raise ValueError("setup failed")

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[ActivationStatsCB(), Fails()])
    with pytest.raises(ValueError, match="setup failed") as error:
        learn.fit(1)
    assert not any("cleanup_fit failed" in note for note in error.value.__notes__)


def test_a_module_used_at_several_places_is_a_warning_saying_its_rows_interleave():
    """One nn.ReLU applied after two layers (a common way to write a model) got two rows per batch, one of each use,
    alternating in one layer's statistics and plots, without a word."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3, self.act = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2), nn.ReLU()

        def forward(self, x):
            return self.l3(self.act(self.l2(self.act(self.l1(x)))))

    stats = ActivationStatsCB()
    with pytest.warns(UserWarning, match=r"1: ReLU \(act\) ran 2 times in each training batch.*give each place its "
                                         r"own module"):
        Learner(Net(), make_dls(n_train=12, bs=4), cbs=[stats]).fit(2)
    assert len(stats.stats[0]["mean"]) == 2 * 2 * 3  # what the warning says: 2 rows for each of the 6 batches
