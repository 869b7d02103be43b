"""ProgressCB's output fits where it goes: bars on a terminal or in a notebook, plain lines in a log file."""
import matplotlib.figure
import pytest
import torch
from conftest import FailsBeforeFit, TrainLosses, make_dls
from torch import nn

from slowlearn import Callback, CancelEpochException, Learner, MetricsCB, ProgressCB
from slowlearn.callbacks import progress as progress_module

ESCAPES = ("\r", "\x1b")


def fit_two_epochs(capsys, **kwargs):
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), ProgressCB(**kwargs)]).fit(2)
    return capsys.readouterr()


def test_a_log_file_gets_one_plain_line_per_epoch_and_phase(capsys):
    captured = fit_two_epochs(capsys)  # pytest's capture is not a terminal: like `> run.log 2>&1`
    assert not any(c in captured.out + captured.err for c in ESCAPES) and captured.err == ""
    start, header, *rows = captured.out.splitlines()
    assert start == "fit: 2 epochs of 3 training and 2 validation batches, Linear on cpu, SGD at lr 0.1"
    assert header.split() == ["loss", "epoch", "phase"]
    assert [row.split()[1:] for row in rows] == [["0", "train"], ["0", "valid"], ["1", "train"], ["1", "valid"]]


def test_verbose_0_shows_nothing(capsys):
    captured = fit_two_epochs(capsys, verbose=0)
    assert captured.out == captured.err == ""


def test_bars_on_a_terminal_or_when_asked(capsys, monkeypatch):
    assert "\r" in fit_two_epochs(capsys, verbose=1).err  # tqdm, even into a file
    monkeypatch.setattr(progress_module, "live_output", lambda: True)
    captured = fit_two_epochs(capsys)
    assert "\r" in captured.err and captured.out.splitlines()[0].split() == ["loss", "epoch", "phase"]


def test_verbose_must_be_one_of_the_levels():
    with pytest.raises(ValueError, match="verbose=3"):
        ProgressCB(verbose=3)


def test_a_fit_that_fails_before_the_bars_start_closes_nothing():
    progress = ProgressCB(verbose=2)
    with pytest.raises(ValueError, match="before_fit failed") as error:
        Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), progress, FailsBeforeFit()]).fit(1)
    assert not any("cleanup_fit" in note for note in error.value.__notes__)  # none from None.close()


@pytest.mark.parametrize("lr, shown", [(slice(1e-4, 1e-2), "lrs 0.0001, 0.01"), ([0.1, 0.3], "lrs 0.1, 0.3"),
                                       (slice(0.2), "lrs 0.02, 0.2"), ([0.1, 0.1], "lr 0.1")])
def test_the_start_line_shows_one_lr_per_param_group(capsys, lr, shown):
    torch.manual_seed(0)
    learn = Learner(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), make_dls(), cbs=[MetricsCB(), ProgressCB(verbose=2)])
    learn.fit(1, lr=lr)
    assert capsys.readouterr().out.splitlines()[0].endswith(f"SGD at {shown}")


def test_each_fine_tune_stage_shows_the_lrs_it_trains_its_param_groups_at(capsys):
    torch.manual_seed(0)
    learn = Learner(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), make_dls(), lr=0.1,
                    cbs=[MetricsCB(), ProgressCB(verbose=2)])
    learn.fine_tune(1, base_lr=2e-3, lr_mult=100)  # one-cycle peaks: slice(2e-3) frozen, then slice(1e-5, 1e-3)
    starts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fit:")]
    assert starts[0].endswith("SGD at lrs 0.0002, 0.002 (param group 1 of 2 frozen)")
    assert starts[1].endswith("SGD at lrs 1e-05, 0.001")
    learn.fit(1)  # a plain fit goes on at the lrs where the cycle ended, not learn.lr
    assert capsys.readouterr().out.splitlines()[0].endswith("SGD at lrs 2e-10, 2e-08")  # peak / (div * div_final)


def test_progress_records_every_training_loss_with_few_reads():
    progress, reference = ProgressCB(loss_every=2), TrainLosses()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=20, bs=4), cbs=[MetricsCB(), progress, reference])
    learn.fit(2)
    assert progress.train_losses == pytest.approx(reference.losses)
    assert progress.valid_losses == [(e, r["loss"]) for r in learn.history if r["phase"] == "valid"
                                     for e in [r["epoch"]]]
    assert learn.progress is progress


class CountReads(Callback):
    """Counts, after each training batch, whether ProgressCB read its waiting losses back (a host sync)."""

    order = ProgressCB.order + 1

    def __init__(self):
        self.reads, self.pending = 0, 0

    def after_batch(self, learn):
        if learn.training:
            pending = learn.progress._losses.n_pending
            self.reads += pending < self.pending or pending == 0
            self.pending = pending


@pytest.mark.parametrize("verbose, reads_per_epoch", [(1, 4), (2, 0), (0, 0)])
def test_losses_are_read_back_every_loss_every_batches_only_where_a_bar_shows_them(verbose, reads_per_epoch):
    counter = CountReads()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=32, bs=4), cbs=[MetricsCB(), ProgressCB(loss_every=2, verbose=verbose),
                                                                      counter])
    learn.fit(1)
    assert counter.reads == reads_per_epoch  # 8 batches: a bar reads after batches 2, 4, 6, 8; a log at the epoch's end
    assert len(learn.progress.train_losses) == 8


class ProgressHandlesBatch(Callback):
    """Records, for each phase, whether ProgressCB's after_batch is among the handlers the batches run."""

    def __init__(self):
        self.phases = []

    def before_batch(self, learn):
        if learn.iter == 0:
            handles = any(type(cb) is ProgressCB for cb, _ in learn.dispatch.handlers["after_batch"])
            self.phases.append(("train" if learn.training else "valid", handles))


@pytest.mark.parametrize("verbose, called", [(1, True), (2, False), (0, False)])
def test_a_batch_calls_progress_only_where_a_bar_counts_it(verbose, called):
    spy, progress = ProgressHandlesBatch(), ProgressCB(verbose=verbose)
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), progress, spy]).fit(2)
    assert spy.phases == [("train", called), ("valid", called)] * 2
    assert len(progress.train_losses) == 2 * len(learn.dls.train)  # the Learner kept them (learn.batch_losses)


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


def test_a_log_files_start_line_of_a_validation_only_fit_counts_only_validation_batches(capsys):
    """fit(train=False) on data without a training loader (which the fit allows) failed in the start line with
    "object of type 'NoneType' has no len()", and with one it counted training batches that the fit never ran."""
    from slowlearn import DataLoaders
    dls = make_dls()
    for data in (dls, DataLoaders(None, dls.valid)):
        Learner(nn.Linear(3, 2), data, cbs=[MetricsCB(), ProgressCB(verbose=2)]).fit(1, train=False)
        assert capsys.readouterr().out.splitlines()[0] == "fit: 1 epoch of 2 validation batches, Linear on cpu"


def test_the_loss_plot_puts_each_validation_after_the_training_batches_it_followed():
    """The validation points were drawn at (epoch + 1) x batches an epoch: epochs that a callback cut short
    (CancelEpochException, miniai's way to shorten them) left them far to the right of the training curve."""
    class TwoBatches(Callback):
        def after_batch(self, learn):
            if learn.training and learn.iter == 1:
                raise CancelEpochException()

    learn = Learner(nn.Linear(3, 2), make_dls(n_train=40), cbs=[MetricsCB(), ProgressCB(verbose=0), TwoBatches()])
    learn.fit(3)
    train, valid = learn.progress.plot_loss().axes[0].get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5, 6] and list(valid.get_xdata()) == [2, 4, 6]
