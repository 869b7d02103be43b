import matplotlib.figure
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import (Callback, ChannelsLastCB, DataLoaders, DeviceCB, Learner, MetricsCB, MomentumCB, ProgressCB,
                       TensorLoader)
from slowlearn.display import TablePrinter

from conftest import TrainLosses, make_dls


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


def test_momentum_cb_runs_and_equals_sgd_with_momentum():
    def run(cbs, momentum):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        opt_func = lambda params, lr: torch.optim.SGD(params, lr, momentum=momentum)
        Learner(model, make_dls(seed=1), lr=0.1, cbs=cbs, opt_func=opt_func).fit(3, valid=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = run([], 0.)
    with_cb = run([MomentumCB(0.85)], 0.)
    torch_momentum = run([], 0.85)
    assert not torch.allclose(plain, with_cb)  # the callback changes the trajectory
    torch.testing.assert_close(with_cb, torch_momentum)  # ... into heavy-ball momentum


def test_momentum_cb_rejects_bad_mom():
    with pytest.raises(ValueError, match="mom=1.5"):
        MomentumCB(1.5)


def test_device_cb_moves_model_and_batches():
    seen = []

    class Where(Callback):
        order = 0

        def before_batch(self, learn):
            seen.append((learn.batch[0].device, learn.device))

    model = nn.Linear(3, 2)
    learn = Learner(model, make_dls(), cbs=[DeviceCB("cpu"), Where()]).fit(1)
    assert set(seen) == {(torch.device("cpu"), torch.device("cpu"))}  # the batches and the shared slot
    assert next(model.parameters()).device.type == "cpu"
    assert learn.device is None  # the slot is DeviceCB's for the fit only


def test_progress_records_every_training_loss_with_few_reads():
    progress, reference = ProgressCB(loss_every=2), TrainLosses()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=20, bs=4), cbs=[MetricsCB(), progress, reference])
    learn.fit(2)
    assert progress.train_losses == pytest.approx(reference.losses)
    assert progress.valid_losses == [(e, r["loss"]) for r in learn.history if r["phase"] == "valid"
                                     for e in [r["epoch"]]]
    assert learn.progress is progress


def test_progress_prints_table_and_plots(capsys):
    progress = ProgressCB()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), progress]).fit(2)
    out = capsys.readouterr().out.splitlines()  # not a terminal: the start line, then the table
    assert out[1].split() == ["loss", "epoch", "phase"] and len(out) == 6
    fig = learn.progress.plot_loss()
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train (per batch)", "valid (per epoch)"]
    assert len(ax.get_lines()[0].get_xdata()) == 2 * len(learn.dls.train)


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


def test_progress_without_table_prints_nothing(capsys):
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), ProgressCB(table=False)]).fit(1)
    assert capsys.readouterr().out == ""


def test_progress_bars_are_closed_after_an_error():
    bad = type("Bad", (Callback,), {"after_batch": lambda self, learn: 1 / 0})()
    progress = ProgressCB(verbose=1)
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[progress, bad])
    with pytest.raises(ZeroDivisionError):
        learn.fit(1)
    assert progress.view.batches is None and progress.view.epochs.disable  # closed bars are disabled


def test_notebook_view_updates_one_line_and_one_table_in_place(monkeypatch):
    import IPython.display
    from slowlearn.callbacks import progress as progress_module

    shown = []

    class Handle:
        def __init__(self, obj):
            self.objs = [obj]

        def update(self, obj):
            self.objs.append(obj)

    def display(obj, display_id=False):
        shown.append(Handle(obj))
        return shown[-1]

    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    monkeypatch.setattr(progress_module, "live_output", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    progress = ProgressCB(plot=False)
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), progress]).fit(2)
    line, table = shown  # nothing else was displayed: every update went to these two
    assert "epoch 2/2" in line.objs[-1].data and "<progress" in line.objs[-1].data
    assert table.objs[-1].data.count("<tr>") == 5  # header + 2 epochs x 2 phases


def test_to_device_moves_nested_batches_and_keeps_their_types():
    from slowlearn.device import default_device, to_device

    batch = {"x": [torch.zeros(2), (torch.ones(1), "label")], "n": 3}
    moved = to_device(batch, "cpu")
    assert isinstance(moved["x"], list) and isinstance(moved["x"][1], tuple) and moved["n"] == 3
    assert moved["x"][1][1] == "label" and torch.equal(moved["x"][1][0], torch.ones(1))
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert default_device().type == expected


def image_dls(n=32, bs=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, bs, device="cpu"), TensorLoader(x[:8], y[:8], bs, device="cpu"))


def small_convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_channels_last_cb_lays_out_model_and_images_and_trains_the_same():
    seen = []

    class Layout(Callback):
        def after_predict(self, learn):
            seen.append(learn.batch[0].is_contiguous(memory_format=torch.channels_last))

    def run(cbs):
        model = small_convnet()
        opt_func = lambda params, lr: torch.optim.SGD(params, lr, momentum=0.9)
        Learner(model, image_dls(), lr=0.1, cbs=cbs, opt_func=opt_func).fit(2)
        return model

    plain, channels_last = run([]), run([ChannelsLastCB(), Layout()])
    assert seen and all(seen)
    assert channels_last[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), channels_last.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same maths, another memory order


def test_channels_last_cb_leaves_flat_inputs_alone():
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[ChannelsLastCB()])
    learn.fit(1)
    assert learn.batch[0].shape == (1, 3) and learn.batch[0].is_contiguous()
