import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import FailsBeforeFit, TrainLosses, make_dls
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torch.nn import functional as F
from torcheval.metrics import MulticlassAccuracy

from slowlearn import (
    Callback,
    CheckpointCB,
    CSVLoggerCB,
    DataLoaders,
    Learner,
    MetricsCB,
    MLflowCB,
    TensorBoardCB,
    TensorLoader,
    confusion_matrix,
    one_cycle_lr,
    set_seed,
)
from slowlearn.callbacks import logging as logging_module
from slowlearn.checkpoint import read_checkpoint

BATCHES = 20  # training batches per epoch of `dls()`: enough that log_every=2 is not lowered


def dls(n_train=4 * BATCHES, bs=4):
    return make_dls(n_train=n_train, n_valid=8, bs=bs, n_classes=3)


def learner(logger, opt_func=torch.optim.SGD, data=None, cbs=()):
    torch.manual_seed(0)
    cbs = [MetricsCB(accuracy=MulticlassAccuracy()), logger, *cbs]
    return Learner(nn.Linear(3, 3), data or dls(), lr=0.1, cbs=cbs, opt_func=opt_func)


class Interrupt(Callback):
    """A KeyboardInterrupt at the end of training batch `iter` of `epoch`, after the loggers and CheckpointCB."""

    order = 95

    def __init__(self, epoch, iter):
        self.epoch, self.iter = epoch, iter

    def after_batch(self, learn):
        if learn.training and (learn.epoch, learn.iter) == (self.epoch, self.iter):
            raise KeyboardInterrupt


def interrupted_then_resumed(make_learner, ckpt, n_epochs=2, stop=(1, 5), every="epoch"):
    """Two epochs: straight, and interrupted at `stop` then resumed from `ckpt` by a new Learner."""
    set_seed(0)
    straight = make_learner("straight")
    straight.fit(n_epochs)
    set_seed(0)
    first = make_learner("resumed")
    with pytest.raises(KeyboardInterrupt):
        first.fit(n_epochs, cbs=[CheckpointCB(ckpt, every=every), Interrupt(*stop)])
    resumed = make_learner("resumed")
    resumed.fit(n_epochs, resume=ckpt)
    return straight, first, resumed


def logger_warnings(record, name):
    return [w for w in record if issubclass(w.category, RuntimeWarning) and str(w.message).startswith(name)]


# --- TensorBoardCB
class Events:
    """The event files of a log folder, read as TensorBoard means them to be: in the order they were written, a
    restarted writer's first step of a tag dropping the points of that tag an earlier file holds from that step on
    (the orphans of an interrupted run). TensorBoard's own folder loader orders the files by name, which for two
    files of one process in one second depends on a counter compared as text ("...10" before "...9")."""

    def __init__(self, log_dir):
        self.accs = []
        for path in Path(log_dir).glob("events.out.tfevents.*"):
            acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
            acc.Reload()
            self.accs.append(acc)
        self.accs.sort(key=lambda acc: acc.FirstEventTimestamp())

    def _merged(self, kind: str, tag: str) -> list:
        merged = []
        for acc in self.accs:
            if tag in acc.Tags().get(kind, ()):
                new = getattr(acc, kind.title())(tag)
                if new:
                    merged = [e for e in merged if e.step < new[0].step]
                merged += new
        return merged

    def Scalars(self, tag):
        return self._merged("scalars", tag)

    def Images(self, tag):
        return self._merged("images", tag)

    def SummaryMetadata(self, tag):
        for acc in self.accs:
            try:
                return acc.SummaryMetadata(tag)
            except KeyError:
                continue
        raise KeyError(tag)


def events(log_dir):
    return Events(log_dir)


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def tb_learner(log_dir, opt_func=torch.optim.SGD, data=None, cbs=(), **kwargs):
    return learner(TensorBoardCB(log_dir, log_every=2, **kwargs), opt_func, data, cbs)


def test_training_loss_lr_and_momentum_at_every_logged_step(tmp_path):
    learn = tb_learner(tmp_path, opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    losses = TrainLosses()
    learn.fit(2, cbs=[losses])
    acc = events(tmp_path)
    steps = list(range(2, 2 * BATCHES + 1, 2))  # every 2nd batch; an epoch (20) ends on one
    assert [s for s, _ in scalars(acc, "train/step_loss")] == steps
    for step, got in scalars(acc, "train/step_loss"):
        assert got == pytest.approx(sum(losses.losses[step - 2:step]) / 2, rel=1e-5)
    assert scalars(acc, "opt/lr/group_0") == [(s, pytest.approx(0.1)) for s in steps]
    assert scalars(acc, "opt/mom/group_0") == [(s, pytest.approx(0.9)) for s in steps]


def test_the_step_loss_is_read_back_once_per_point_not_per_batch(tmp_path, monkeypatch):
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))

    def reads_added_by_the_logger():
        reads[:] = []
        learner(Callback()).fit(1)  # without a logger
        without, reads[:] = len(reads), []
        tb_learner(tmp_path, confusion_matrix=False).fit(1)  # (drawing the matrix reads its counts)
        return len(reads) - without

    assert reads_added_by_the_logger() == 0  # on the CPU: the value the Learner read once for all (loss_value)
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))  # as on a GPU
    assert reads_added_by_the_logger() == BATCHES // 2  # one host sync per point: every 2nd batch


def test_short_epochs_still_show_per_step_curves_and_the_one_cycle_shape(tmp_path):
    """25 batches per epoch with log_every=50 gave one point per epoch, and the lr schedule was invisible."""
    learn = learner(TensorBoardCB(tmp_path, log_every=50), data=dls(n_train=100))  # 25 batches per epoch
    learn.fit_one_cycle(2, 0.1)
    acc = events(tmp_path)
    steps = [*range(2, 25, 2), 25, *range(27, 50, 2), 50]  # every 2nd batch (about 10 per epoch), epoch ends
    assert [s for s, _ in scalars(acc, "train/step_loss")] == steps
    lrs = scalars(acc, "opt/lr/group_0")
    assert [s for s, _ in lrs] == steps
    peak = max(range(len(lrs)), key=lambda i: lrs[i][1])
    assert 0 < peak < len(lrs) - 1  # up, then down
    pct = (steps[peak] - 1) / 50  # OneCycleCB sets the lr before the batch, from the progress then
    assert lrs[peak][1] == pytest.approx(one_cycle_lr(0.1)(pct), rel=1e-5)


def test_every_metric_per_epoch_and_phase_and_the_final_ones_once(tmp_path):
    learn = tb_learner(tmp_path)
    learn.fit(2)
    acc = events(tmp_path)
    for phase in ("train", "valid"):
        rows = [r for r in learn.history if r["phase"] == phase]
        for metric in ("loss", "accuracy"):
            assert [v for _, v in scalars(acc, f"{phase}/{metric}")] == pytest.approx([r[metric] for r in rows])
            assert [s for s, _ in scalars(acc, f"{phase}/{metric}")] == [BATCHES, 2 * BATCHES]  # steps so far
            assert scalars(acc, f"final/{phase}_{metric}") == [(2 * BATCHES, pytest.approx(rows[-1][metric]))]


def hparams_content(acc, tag):
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(acc.SummaryMetadata(tag).plugin_data.content)
    return data


def test_hparams_tab_holds_the_run_and_its_final_metrics(tmp_path):
    learn = tb_learner(tmp_path, hparams={"augment": "flip", "wd": 0.01})
    learn.fit(2)
    acc = events(tmp_path)
    experiment = hparams_content(acc, "_hparams_/experiment").experiment
    assert {h.name for h in experiment.hparam_infos} == {"model", "opt_func", "lr", "n_epochs", "bs", "loss_func",
                                                         "precision", "param_groups", "augment", "wd"}
    assert {m.name.tag for m in experiment.metric_infos} == {"final/train_loss", "final/train_accuracy",
                                                            "final/valid_loss", "final/valid_accuracy"}
    session = hparams_content(acc, "_hparams_/session_start_info").session_start_info.hparams
    assert session["model"].string_value == "Linear" and session["opt_func"].string_value == "SGD"
    assert session["lr"].number_value == pytest.approx(0.1) and session["bs"].number_value == 4
    assert session["loss_func"].string_value == "cross_entropy" and session["wd"].number_value == 0.01
    assert session["precision"].string_value == "fp32"
    for metric in experiment.metric_infos:  # each metric the tab lists is a scalar of the run
        assert scalars(acc, metric.name.tag)


def test_confusion_matrix_of_the_last_validation_is_an_image(tmp_path):
    learn = tb_learner(tmp_path)
    learn.fit(2)
    result = learn.get_preds()
    assert torch.equal(learn.tensor_board.confusion, confusion_matrix(result.targets, result.preds.argmax(-1), 3))
    images = events(tmp_path).Images("confusion_matrix")
    assert len(images) == 1 and images[0].step == 2 * BATCHES
    assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_confusion_matrix_leaves_out_ignored_targets(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, -100, 0, -100, 1, 2])  # -100: cross_entropy's ignore_index
    dls = DataLoaders(TensorLoader(x, y.clamp(min=0), 4, device="cpu"), TensorLoader(x, y, 4, device="cpu"))
    learn = Learner(nn.Linear(3, 3), dls, cbs=[MetricsCB(), TensorBoardCB(tmp_path, confusion_matrix=True)]).fit(1)
    assert learn.tensor_board.confusion.sum() == 6


def test_confusion_matrix_counts_the_targets_of_batches_that_carry_more(tmp_path):
    """Batches (inputs, targets, weights): the matrix counted the weights (floats in [0, 1)) as the classes."""
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    x, y, w = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, 0, 1, 1, 2]), torch.rand(8) + 1.
    weighted = lambda preds, y, w: (F.cross_entropy(preds, y, reduction="none") * w).mean()  # noqa: E731
    loader = lambda: DataLoader(TensorDataset(x, y, w), 4)  # noqa: E731
    learn = Learner(nn.Linear(3, 3), DataLoaders(loader(), loader()), weighted,
                    cbs=[MetricsCB(), TensorBoardCB(tmp_path, confusion_matrix=True)]).fit(1)
    assert learn.tensor_board.confusion.sum(1).tolist() == [2, 3, 3]  # the targets' classes, every item once


def assert_same_curves(got, want, tags):
    for tag in tags:
        assert [s for s, _ in scalars(got, tag)] == [s for s, _ in scalars(want, tag)], tag
        assert [v for _, v in scalars(got, tag)] == pytest.approx([v for _, v in scalars(want, tag)], rel=1e-5), tag


def test_a_resumed_run_continues_the_curves_without_doubled_steps(tmp_path):
    interrupted_then_resumed(lambda name: tb_learner(tmp_path / name), tmp_path / "ckpt.pt")
    assert_same_curves(events(tmp_path / "resumed"), events(tmp_path / "straight"),
                       ("train/step_loss", "valid/loss", "final/valid_accuracy", "opt/lr/group_0"))


def test_after_a_mid_epoch_resume_the_first_step_loss_averages_the_same_batches(tmp_path):
    """Checkpoints every 3 batches, a point every 2: the checkpoint after batch 9 holds batch 9's loss, which
    the point at batch 10 averages with batch 10, as in the uninterrupted run (it used to hold batch 10 alone)."""
    interrupted_then_resumed(lambda name: tb_learner(tmp_path / name), tmp_path / "ckpt.pt", stop=(0, 10), every=3)
    assert_same_curves(events(tmp_path / "resumed"), events(tmp_path / "straight"), ("train/step_loss",))


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(logging_module, "is_rank0", lambda: False)
    learn = tb_learner(tmp_path / "logs")
    learn.fit(1)
    assert not (tmp_path / "logs").exists() and learn.tensor_board.confusion is not None


def test_log_every_must_be_positive():
    with pytest.raises(ValueError, match="log_every"):
        TensorBoardCB("runs", log_every=0)


def assert_finished_with_checkpoint(learn, ckpt, n_epochs=2):
    assert len(learn.history) == 2 * n_epochs  # every epoch trained and validated
    assert read_checkpoint(ckpt)["epoch"] == n_epochs


def test_an_unwritable_log_folder_warns_and_keeps_the_checkpoints(tmp_path):
    """The log folder is a file here (a read-only folder is writable to root, who runs the tests in CI): it used to
    end the fit at the first write, and that epoch's checkpoint (CheckpointCB runs after the logger) was lost."""
    (tmp_path / "tb").write_text("not a folder")
    learn = tb_learner(tmp_path / "tb", cbs=[CheckpointCB(tmp_path / "ckpt.pt")])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        learn.fit(2)
    assert len(logger_warnings(record, "TensorBoardCB could not")) == 1  # once, not at every write
    assert "tb" in str(logger_warnings(record, "TensorBoardCB")[0].message)
    assert_finished_with_checkpoint(learn, tmp_path / "ckpt.pt")


class DeleteFolder(Callback):
    order = 95

    def __init__(self, folder):
        self.folder = folder

    def after_epoch(self, learn):
        if learn.epoch == 0 and not learn.training:
            shutil.rmtree(self.folder)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's writer thread
def test_a_log_folder_deleted_during_the_run_warns_and_training_and_cleanup_go_on(tmp_path):
    learn = tb_learner(tmp_path / "tb")
    with pytest.warns(RuntimeWarning, match="TensorBoardCB could not"):
        learn.fit(2, cbs=[CheckpointCB(tmp_path / "ckpt.pt"), DeleteFolder(tmp_path / "tb")])
    assert_finished_with_checkpoint(learn, tmp_path / "ckpt.pt")
    learn.fit(1)  # the next fit writes again
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_an_unwritable_csv_log_warns_and_keeps_the_checkpoints(tmp_path):
    (tmp_path / "logs").write_text("a file where the log's folder should be")
    learn = learner(CSVLoggerCB(tmp_path / "logs" / "metrics.csv"), cbs=[CheckpointCB(tmp_path / "ckpt.pt")])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        learn.fit(2)
    assert len(logger_warnings(record, "CSVLoggerCB could not")) == 1
    assert_finished_with_checkpoint(learn, tmp_path / "ckpt.pt")


def csv_rows_without_time(path):
    lines = path.read_text().splitlines()
    time_column = lines[0].split(",").index("time")
    return [[v for i, v in enumerate(line.split(",")) if i != time_column] for line in lines]


def test_a_csv_log_listed_after_the_checkpoint_keeps_the_saved_epochs_rows_when_resumed(tmp_path):
    def make(name):
        torch.manual_seed(0)
        cbs = [MetricsCB(), CheckpointCB(tmp_path / f"{name}.pt"), CSVLoggerCB(tmp_path / f"{name}.csv")]
        return Learner(nn.Linear(3, 3), dls(), lr=0.1, cbs=cbs)

    make("straight").fit(3)
    with pytest.raises(KeyboardInterrupt):
        make("resumed").fit(3, cbs=[Interrupt(2, 0)])
    make("resumed").fit(3, resume=tmp_path / "resumed.pt")
    straight = csv_rows_without_time(tmp_path / "straight.csv")
    assert len(straight) == 7 and csv_rows_without_time(tmp_path / "resumed.csv") == straight


def test_a_csv_logs_later_fits_add_their_rows_as_fine_tunes_unfrozen_stage_does(tmp_path):
    log = tmp_path / "metrics.csv"
    learn = learner(CSVLoggerCB(log))
    learn.fine_tune(2, freeze_epochs=1)  # the unfrozen stage's fit started a new file: the frozen rows were lost
    rows = [line.split(",")[:4] for line in log.read_text().splitlines()[1:]]
    assert [row[2:] for row in rows] == [["0", "train"], ["0", "valid"], ["0", "train"], ["0", "valid"],
                                         ["1", "train"], ["1", "valid"]]
    learner(CSVLoggerCB(log)).fit(1)  # a new callback starts a new file
    assert len(log.read_text().splitlines()) == 3


def test_a_csv_log_that_a_fit_ended_before_its_first_row_is_still_started_afresh_by_the_next(tmp_path):
    """A fit stopped before its first row (Ctrl-C in its first epoch, say) counted as the callback's first fit, so
    the next fit added its rows to the file an earlier run (yesterday's) had left at that path."""
    log = tmp_path / "metrics.csv"
    log.write_text("accuracy,loss,epoch,phase,lr,time\n0.1,9.0,0,train,0.1,1.0\n")
    learn = learner(CSVLoggerCB(log))
    with pytest.raises(KeyboardInterrupt):
        learn.fit(1, cbs=[Interrupt(0, 0)])
    learn.fit(1)
    assert [row[2:4] for row in csv_rows_without_time(log)[1:]] == [["0", "train"], ["0", "valid"]]


def test_a_csv_log_keeps_its_columns_when_a_later_fit_adds_a_metric(tmp_path):
    """A later fit with another metric added rows of 7 values under the header of 6: every value of those rows sat
    under the wrong column (csv.DictReader read the loss as 'epoch')."""
    import csv
    log = tmp_path / "metrics.csv"
    learn = Learner(nn.Linear(3, 3), dls(), lr=0.1, cbs=[CSVLoggerCB(log)])
    learn.fit(1, cbs=[MetricsCB()])
    learn.fit(1, cbs=[MetricsCB(accuracy=MulticlassAccuracy())])
    learn.fit(1, cbs=[MetricsCB()])
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["loss", "epoch", "phase", "lr", "time", "accuracy"] and len(rows) == 6
    assert [row["phase"] for row in rows] == ["train", "valid"] * 3
    assert [row["accuracy"] != "" for row in rows] == [False, False, True, True, False, False]
    assert [float(row["loss"]) for row in rows] == [row["loss"] for row in learn.history]

class InterruptAfterTraining(Callback):
    """A KeyboardInterrupt once a fit's first training phase has its CSV row (before validation and the checkpoint)."""

    order = 95

    def after_epoch(self, learn):
        if learn.training:
            raise KeyboardInterrupt


def test_a_csv_log_resumed_from_before_a_later_fit_added_a_column_keeps_whole_rows(tmp_path):
    """The later fit's new metric rewrote the file with the new column (each row one comma longer), then Ctrl-C
    before its checkpoint; resumed from the checkpoint of the fit before, the file was cut at that checkpoint's byte
    count, in the middle of a row, and the resumed rows were added after it."""
    import csv
    log, checkpoint = tmp_path / "metrics.csv", tmp_path / "checkpoint.pt"

    def make():
        torch.manual_seed(0)
        return Learner(nn.Linear(3, 3), dls(), lr=0.1, cbs=[CSVLoggerCB(log), CheckpointCB(checkpoint)])

    learn = make()
    learn.fit(1, cbs=[MetricsCB()])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(2, cbs=[MetricsCB(accuracy=MulticlassAccuracy()), InterruptAfterTraining()])
    make().fit(2, cbs=[MetricsCB(accuracy=MulticlassAccuracy())], resume=checkpoint)
    with open(log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["loss", "epoch", "phase", "lr", "time", "accuracy"] and {len(row) for row in rows} == {6}
    assert [row[1:3] for row in rows[1:]] == [["0", "train"], ["0", "valid"], ["1", "train"], ["1", "valid"]]


class InterruptTheSecondFit(Interrupt):
    """Interrupt's KeyboardInterrupt, in the second fit only (fine_tune's unfrozen stage)."""

    fits = 0

    def before_fit(self, learn):
        self.fits += 1

    def after_batch(self, learn):
        if self.fits == 2:
            super().after_batch(learn)


def test_a_csv_log_keeps_the_frozen_stages_rows_when_fine_tune_resumes_from_its_end(tmp_path):
    def make(name):  # two layers: the frozen stage freezes the first, which tells its checkpoints apart
        torch.manual_seed(0)
        cbs = [MetricsCB(), CSVLoggerCB(tmp_path / f"{name}.csv"), CheckpointCB(tmp_path / f"{name}.pt")]
        return Learner(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)), dls(), lr=0.1, cbs=cbs)

    make("straight").fine_tune(2, freeze_epochs=1)
    with pytest.raises(KeyboardInterrupt):  # before the unfrozen stage's first checkpoint: the frozen stage's end is
        make("resumed").fine_tune(2, freeze_epochs=1, cbs=[InterruptTheSecondFit(0, 3)])  # the last one
    make("resumed").fine_tune(2, freeze_epochs=1, resume="auto")  # the frozen stage's rows were lost
    straight = csv_rows_without_time(tmp_path / "straight.csv")
    assert len(straight) == 7 and csv_rows_without_time(tmp_path / "resumed.csv") == straight


def list_loaders():
    """Plain lists of (x, y) batches: a loader with no batch size attribute."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(5, 3, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(6)]
    return DataLoaders(batches, batches[:2])


def test_tensorboard_takes_a_list_of_batches(tmp_path):
    learn = tb_learner(tmp_path, data=list_loaders())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no write may fail
        learn.fit(2)
    session = hparams_content(events(tmp_path), "_hparams_/session_start_info").session_start_info.hparams
    assert session["bs"].number_value == 5  # from the batches themselves
    assert len(scalars(events(tmp_path), "train/step_loss")) == 12  # 6 batches per epoch: every batch


# --- MLflowCB
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store for the module's tests (creating one takes seconds); each test its experiment."""
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the database's tables
    return uri


@pytest.fixture
def client(store):
    from mlflow import MlflowClient
    return MlflowClient(store)


def ml_learner(store, experiment, data=None, cbs=(), **kwargs):
    return learner(MLflowCB(store, experiment=experiment, log_every=2, **kwargs), data=data, cbs=cbs)


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def the_run(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_mlflow_logs_the_params_every_metric_of_the_history_and_the_csv_log(store, client, tmp_path, request):
    learn = ml_learner(store, request.node.name, cbs=[CSVLoggerCB(tmp_path / "metrics.csv")],
                       params={"augment": "none"})
    losses = TrainLosses()
    learn.fit(2, cbs=[losses])
    run = the_run(client, request.node.name)
    assert run.info.run_id == learn.mlflow.run_id and run.info.status == "FINISHED"
    assert run.data.params == {"model": "Linear", "opt_func": "SGD", "lr": "0.1", "n_epochs": "2", "bs": "4",
                               "loss_func": "cross_entropy", "precision": "fp32", "param_groups": "1",
                               "group_0/lr": "0.1", "group_0/weight_decay": "0", "group_0/params": "12",
                               "group_0/trains": "True", "augment": "none"}
    for phase in ("train", "valid"):
        rows = [r for r in learn.history if r["phase"] == phase]
        for metric in ("loss", "accuracy"):
            logged = history(client, run.info.run_id, f"{phase}/{metric}")
            assert logged == [(BATCHES, pytest.approx(rows[0][metric])), (2 * BATCHES, pytest.approx(rows[1][metric]))]
            assert history(client, run.info.run_id, f"final/{phase}_{metric}") == [  # once, not a time series
                (2 * BATCHES, pytest.approx(rows[-1][metric]))]
    step_losses = history(client, run.info.run_id, "train/step_loss")
    assert [s for s, _ in step_losses] == list(range(2, 2 * BATCHES + 1, 2))
    for step, got in step_losses:
        assert got == pytest.approx(sum(losses.losses[step - 2:step]) / 2, rel=1e-5)
    assert [s for s, _ in history(client, run.info.run_id, "opt/lr/group_0")] == [s for s, _ in step_losses]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["metrics.csv"]


class TextLogger(Callback):
    """A user's own logger: writes the history to a text file, listed in `learn.log_files` for the trackers."""

    def __init__(self, path):
        self.path = path

    def before_fit(self, learn):
        learn.log_files.append(self.path)

    def after_fit(self, learn):
        self.path.write_text(str(learn.history))


def test_mlflow_attaches_the_files_the_fits_loggers_list_in_learn_log_files(store, client, tmp_path, request):
    log = tmp_path / "metrics.csv"
    learn = ml_learner(store, request.node.name, cbs=[TextLogger(tmp_path / "history.txt")])
    learn.fit(1, cbs=[CSVLoggerCB(log)])
    assert learn.log_files == [tmp_path / "history.txt", log]  # in the callbacks' order
    assert sorted(a.path for a in client.list_artifacts(learn.mlflow.run_id)) == ["history.txt", "metrics.csv"]
    learn.fit(1)
    assert learn.log_files == [tmp_path / "history.txt"]  # each fit lists its own


def test_mlflow_shows_the_one_cycle_lr_per_step_with_short_epochs_and_a_list_of_batches(store, client, request):
    learn = learner(MLflowCB(store, experiment=request.node.name), data=list_loaders())  # log_every=50, 6 batches
    learn.fit_one_cycle(2, 0.1)
    run = the_run(client, request.node.name)
    assert run.data.params["bs"] == "5" and run.data.params["lr"] == "0.1"
    lrs = history(client, run.info.run_id, "opt/lr/group_0")
    assert [s for s, _ in lrs] == list(range(1, 13))  # every step
    assert [v for _, v in lrs] == pytest.approx([one_cycle_lr(0.1)(i / 12) for i in range(12)], rel=1e-5)


@pytest.mark.parametrize("stop", [(1, 8), (1, 10)])
def test_mlflow_resumed_run_continues_the_same_run_with_no_step_twice(store, client, tmp_path, request, stop):
    """Interrupted mid-epoch after a checkpoint every 3 batches (after batch 9 of the epoch; points every 2), then
    resumed: one run, the same points as the uninterrupted run's, none twice. Stopped at batch 9 of the epoch, the
    first point of the resumed run averages batches 9 and 10, as the uninterrupted run's; stopped at batch 11, the
    interrupted run has logged points after its checkpoint, which the resumed run does not log again."""
    name = request.node.name
    _, first, resumed = interrupted_then_resumed(lambda run: ml_learner(store, f"{name}-{run}"),
                                                 tmp_path / "ckpt.pt", stop=stop, every=3)
    assert resumed.mlflow.run_id == first.mlflow.run_id
    assert read_checkpoint(tmp_path / "ckpt.pt")["callbacks"]["MLflowCB"]["run_id"] == first.mlflow.run_id
    want, got = the_run(client, f"{name}-straight"), the_run(client, f"{name}-resumed")
    assert got.info.status == "FINISHED"
    assert sorted(got.data.metrics) == sorted(want.data.metrics)
    for key in want.data.metrics:
        expected, logged = history(client, want.info.run_id, key), history(client, got.info.run_id, key)
        assert [s for s, _ in logged] == [s for s, _ in expected], key  # no step twice, none missing
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-5), key


def test_mlflow_one_run_over_several_fits_with_the_changed_params_apart(store, client, request):
    learn = ml_learner(store, request.node.name)
    learn.fit(1)
    learn.fit(2, lr=0.05)
    run = the_run(client, request.node.name)
    assert run.data.params["n_epochs"] == "1" and run.data.params["fit_2/n_epochs"] == "2"
    assert run.data.params["lr"] == "0.1" and run.data.params["fit_2/lr"] == "0.05"
    assert "fit_2/model" not in run.data.params  # unchanged
    assert [s for s, _ in history(client, run.info.run_id, "valid/loss")] == [20, 40, 60]
    assert [s for s, _ in history(client, run.info.run_id, "final/valid_loss")] == [20, 60]  # once per fit
    learn.fit(1, lr=slice(0.01))
    assert client.get_run(run.info.run_id).data.params["fit_3/lr"] == "slice(0.01)"


def test_mlflow_log_artifacts_after_the_fit(store, client, tmp_path, request):
    learn = ml_learner(store, request.node.name)
    learn.fit(1)
    (tmp_path / "model.pt2").write_bytes(b"an export")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.png").write_bytes(b"a plot")
    learn.mlflow.log_artifacts(tmp_path / "model.pt2", tmp_path / "plots")
    with pytest.warns(RuntimeWarning, match="no such file"):
        learn.mlflow.log_artifacts(tmp_path / "missing.png")
    run_id = learn.mlflow.run_id
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["model.pt2", "plots"]
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/loss.png"]


def test_an_unwritable_tracking_store_warns_once_and_training_keeps_its_checkpoints(tmp_path):
    (tmp_path / "runs").write_text("a file where the store's folder should be")
    learn = learner(MLflowCB(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", log_every=2),
                    cbs=[CheckpointCB(tmp_path / "ckpt.pt")])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        learn.fit(2)
    assert len(logger_warnings(record, "MLflowCB could not")) == 1
    assert "runs/mlflow.db" in str(logger_warnings(record, "MLflowCB")[0].message)
    assert_finished_with_checkpoint(learn, tmp_path / "ckpt.pt")


def test_an_unreachable_tracking_server_warns_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins over MLflowCB's 2 retries
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    learn = learner(MLflowCB(f"http://127.0.0.1:{port}", log_every=2), cbs=[CheckpointCB(tmp_path / "ckpt.pt")])
    with pytest.warns(RuntimeWarning, match="MLflowCB could not"):
        learn.fit(2)
    assert_finished_with_checkpoint(learn, tmp_path / "ckpt.pt")


class FailStoreWrites(Callback):
    """From batch 2 of epoch 0 on, MLflowCB's client fails its next `times` calls of `log_batch`."""

    order = logging_module.LoggerCB.order - 1

    def __init__(self, times):
        self.times = times

    def after_batch(self, learn):
        if (learn.epoch, learn.iter) != (0, 2) or not learn.training:
            return
        client, left = learn.mlflow._client, [self.times]
        working = client.log_batch

        def flaky(*args, **kwargs):
            left[0] -= 1
            if left[0] >= 0:
                raise ConnectionError("503 Service Unavailable")
            return working(*args, **kwargs)
        client.log_batch = flaky


@pytest.mark.parametrize("failures", [1, 2])  # 2: sending the buffered points at the end fails too
def test_mlflow_ends_the_run_after_a_failed_write_sending_what_it_buffered(store, client, request, monkeypatch,
                                                                           failures):
    monkeypatch.setattr(MLflowCB, "flush_secs", 0.)  # every point is sent at once
    learn = ml_learner(store, request.node.name, cbs=[FailStoreWrites(failures)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        learn.fit(2)
    assert len(logger_warnings(record, "MLflowCB could not write")) == 1
    assert len(logger_warnings(record, "MLflowCB could not finish the run")) == failures - 1
    run = client.get_run(learn.mlflow.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    sent = [step for step, _ in history(client, run.info.run_id, "train/step_loss")]
    assert sent == [2, 4] if failures == 1 else sent == [2]  # the failed point, sent at the end when it can be


def test_mlflow_warns_when_it_cannot_end_the_run_and_the_fit_ends_as_it_would(store, client, request, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("503 Service Unavailable")
    monkeypatch.setattr(MLflowCB, "flush_secs", 0.)
    learn = ml_learner(store, request.node.name, cbs=[FailStoreWrites(1)])
    monkeypatch.setattr("mlflow.MlflowClient.set_terminated", refuse)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        learn.fit(2)
    assert "ConnectionError: 503" in str(logger_warnings(record, "MLflowCB could not finish the run")[0].message)
    assert len(learn.history) == 4 and client.get_run(learn.mlflow.run_id).info.status == "RUNNING"


def test_mlflow_only_rank_0_logs(store, client, monkeypatch, request):
    monkeypatch.setattr(logging_module, "is_rank0", lambda: False)
    learn = ml_learner(store, request.node.name)
    learn.fit(1)
    assert learn.mlflow.run_id is None and client.get_experiment_by_name(request.node.name) is None


def test_a_fit_that_fails_before_the_loggers_start_keeps_its_own_error(store, tmp_path, request):
    loggers = [TensorBoardCB(tmp_path / "tb"), MLflowCB(store, experiment=request.node.name),
               CSVLoggerCB(tmp_path / "log")]
    learn = learner(FailsBeforeFit(), cbs=loggers)
    with pytest.raises(ValueError, match="before_fit failed") as error:
        learn.fit(1)
    assert not [note for note in error.value.__notes__ if "cleanup" in note]  # no cleanup failed


def test_mlflow_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="log_every"):
        MLflowCB(log_every=0)
    with pytest.raises(ValueError, match="tracking_uri"):
        MLflowCB(tracking_uri="")


def test_mlflow_is_not_imported_with_slowlearn():
    out = subprocess.run([sys.executable, "-c", "import sys, slowlearn; print('mlflow' in sys.modules)"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "False"
