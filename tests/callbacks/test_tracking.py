import csv
import re

import pytest
import torch
from conftest import FailsBeforeFit, make_dls
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import (
    ActivationStatsCB,
    Callback,
    CheckpointCB,
    CheckpointError,
    CSVLoggerCB,
    EarlyStoppingCB,
    Learner,
    MetricsCB,
    ReduceLROnPlateauCB,
    TerminateOnNaNCB,
    set_seed,
)
from slowlearn import checkpoint as checkpoint_module
from slowlearn.checkpoint import read_checkpoint


def test_checkpoint_keeps_best_by_monitor(tmp_path):
    losses = iter([0.5, 0.4, 0.45, 0.3])

    class Scripted(Callback):
        order = MetricsCB.order + 1

        def after_epoch(self, learn):
            if not learn.training:
                learn.history[-1]["loss"] = next(losses)

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), Scripted(),
                                                      CheckpointCB(tmp_path / "best.pt", monitor="valid_loss")])
    saved = []
    original = checkpoint_module.save_checkpoint

    def spy(learn, path, epoch, iter=0):
        saved.append(epoch)
        return original(learn, path, epoch, iter)

    import slowlearn.callbacks.tracking as tracking
    tracking.save_checkpoint, old = spy, tracking.save_checkpoint
    try:
        learn.fit(4)
    finally:
        tracking.save_checkpoint = old
    assert saved == [1, 2, 4]  # positions after epochs 0, 1 and 3: the improvements
    assert read_checkpoint(tmp_path / "best.pt")["callbacks"]["CheckpointCB"]["best"] == 0.3


def test_early_stopping_on_a_scripted_sequence():
    losses = iter([1.0, 0.8, 0.81, 0.79, 0.80, 0.82, 0.5])

    class Scripted(Callback):
        order = MetricsCB.order + 1

        def after_epoch(self, learn):
            if not learn.training:
                learn.history[-1]["loss"] = next(losses)

    stop = EarlyStoppingCB(patience=2, min_delta=0.02)
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), Scripted(), stop])
    learn.fit(10)
    # 0.79 improves on 0.8 by less than min_delta: epochs 2 and 3 are no better, so it stops at epoch 3
    assert stop.stopped_epoch == 3 and len(learn.history) == 8


def test_terminate_on_nan_names_epoch_and_batch_and_cleans_up(capsys):
    cleanups = []

    class Poison(Callback):
        order = -1

        def after_loss(self, learn):
            if learn.training and learn.epoch == 1 and learn.iter == 2:
                learn.loss = learn.loss * float("nan")

        def cleanup_fit(self, learn):
            cleanups.append("fit")

    nan = TerminateOnNaNCB()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    learn = Learner(model, make_dls(), cbs=[Poison(), nan, ActivationStatsCB()])
    learn.fit(3)
    assert nan.stopped_at == (1, 2) and cleanups == ["fit"]
    assert "epoch 1, batch 2" in capsys.readouterr().out
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    learn.fit(1)  # a later fit that meets no NaN: it did not stop
    assert nan.stopped_at is None


def test_reduce_lr_on_plateau():
    class Flat(Callback):
        order = MetricsCB.order + 1

        def after_epoch(self, learn):
            if not learn.training:
                learn.history[-1]["loss"] = 1.0

    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1,
                    cbs=[MetricsCB(), Flat(), ReduceLROnPlateauCB(patience=0, factor=0.5)])
    learn.fit(3)
    assert learn.opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_csv_logger_rows(tmp_path):
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[MetricsCB(), CSVLoggerCB(tmp_path / "log.csv")])
    learn.fit(2)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [(r["epoch"], r["phase"]) for r in rows] == [("0", "train"), ("0", "valid"), ("1", "train"), ("1", "valid")]
    assert float(rows[0]["lr"]) == 0.1 and float(rows[0]["time"]) >= 0 and float(rows[0]["loss"]) > 0
    learn.fit(1)
    assert len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 6  # a later fit adds its rows to the log


class CountBatches(Callback):
    def __init__(self):
        self.n = 0

    def after_batch(self, learn):
        self.n += 1


def test_a_monitored_name_the_fit_does_not_compute_fails_before_training_naming_those_it_does(tmp_path):
    monitors = [EarlyStoppingCB("valid_acc"), CheckpointCB(tmp_path / "best.pt", monitor="valid_acc"),
                ReduceLROnPlateauCB("valid_acc")]
    for monitor in monitors:
        batches = CountBatches()
        learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(accuracy=MulticlassAccuracy()), monitor, batches])
        with pytest.raises(ValueError, match=f"{type(monitor).__name__} monitors 'valid_acc', which this fit does "
                                             f"not compute; available: train_accuracy, train_loss, valid_accuracy, "
                                             f"valid_loss"):
            learn.fit(1)
        assert batches.n == 0 and not (tmp_path / "best.pt").exists()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), EarlyStoppingCB("valid_loss")])
    with pytest.raises(ValueError, match="available: train_loss[.]"):
        learn.fit(1, valid=False)  # no valid phase, no valid_loss
    with pytest.raises(ValueError, match=r"available: none \(add a MetricsCB\)"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[EarlyStoppingCB("valid_loss")]).fit(1)
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), ReduceLROnPlateauCB("valid_loss")]).fit(1)
    assert learn.reduce_lr_on_plateau.scheduler is not None  # the monitor's check, then the scheduler's before_fit



@pytest.mark.parametrize("monitor, mode", [
    ("valid_mse", "min"), ("valid_MeanSquaredError", "min"), ("valid_error_rate", "min"), ("valid_mae", "min"),
    ("train_perplexity", "min"), ("valid_Loss", "min"), ("valid_accuracy", "max"), ("valid_MulticlassAccuracy", "max"),
    ("valid_acc", "max"), ("valid_f1", "max"), ("valid_BinaryAUROC", "max"), ("valid_R2Score", "max"),
    ("valid_iou", "max")])
def test_the_default_mode_follows_the_metrics_name(tmp_path, monitor, mode):
    monitors = [EarlyStoppingCB(monitor), CheckpointCB(tmp_path / "best.pt", monitor=monitor),
                ReduceLROnPlateauCB(monitor)]
    assert [cb.mode for cb in monitors] == [mode] * 3


def test_a_monitor_whose_name_does_not_tell_its_direction_needs_a_mode(tmp_path):
    for make in (EarlyStoppingCB, ReduceLROnPlateauCB, lambda m: CheckpointCB(tmp_path / "best.pt", monitor=m)):
        with pytest.raises(ValueError, match=r"monitor='valid_kappa'\) cannot tell .* pass mode='min' .* mode='max'"):
            make("valid_kappa")
    assert EarlyStoppingCB("valid_kappa", mode="max").mode == "max"


def test_checkpoint_keeps_the_lowest_mse_without_a_mode(tmp_path):
    mses = iter([0.5, 0.4, 0.6, 0.7])

    class ScriptedMSE(Callback):
        order = MetricsCB.order + 1

        def after_epoch(self, learn):
            if not learn.training:
                learn.history[-1]["mse"] = next(mses)

    checkpoint = CheckpointCB(tmp_path / "best.pt", monitor="valid_mse")
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(mse=MulticlassAccuracy()), ScriptedMSE(), checkpoint])
    learn.fit(4)
    assert checkpoint.best == 0.4 and read_checkpoint(tmp_path / "best.pt")["epoch"] == 2



@pytest.mark.parametrize("keep, existing, problem", [
    ("last", "folder", "writes the checkpoint file {path}, but that is a folder: give the path of a file"),
    ("best", "folder", "writes the checkpoint file {path}, but that is a folder: give the path of a file"),
    ("both", "file", "which keeps last.pt and best.pt in the folder {path}, writes the checkpoint file {path}/"),
    ("last", "parent", "but {path} is a file, so it cannot hold last.pt: give another path")])
def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(tmp_path, keep, existing, problem):
    path = tmp_path / "ckpt"
    path.mkdir() if existing == "folder" else path.write_text("a file")
    target = path / "last.pt" if existing == "parent" else path
    batches = CountBatches()
    checkpoint = CheckpointCB(target, keep=keep, monitor=None if keep == "last" else "valid_loss")
    with pytest.raises(CheckpointError, match=re.escape(problem.format(path=path))):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), checkpoint, batches]).fit(1)
    assert batches.n == 0


class ScriptedValidLoss(Callback):
    """Replaces each validation loss with the next value of a script, and keeps the weights each epoch ended with."""

    order = MetricsCB.order + 1

    def __init__(self, losses):
        self.losses, self.weights = iter(losses), []

    def after_epoch(self, learn):
        if not learn.training:
            learn.history[-1]["loss"] = next(self.losses)
            self.weights.append({k: v.clone() for k, v in learn.model.state_dict().items()})


def same_weights(a, b):
    return all(torch.equal(v, b[k]) for k, v in a.items())


def test_a_non_finite_monitored_value_is_never_the_best(tmp_path):
    script = ScriptedValidLoss([float("nan"), 0.5, float("inf"), 0.4])
    checkpoint, stop = CheckpointCB(tmp_path / "best.pt", monitor="valid_loss"), EarlyStoppingCB(patience=3)
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), script, checkpoint, stop]).fit(4)
    assert checkpoint.best == stop.best == 0.4 and stop.best_epoch == 3
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 4


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_restores_the_best_weights(restore_best):
    script = ScriptedValidLoss([0.5, 0.3, 0.4, 0.45, 0.2])
    stop = EarlyStoppingCB(patience=2, restore_best=restore_best)
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.5, cbs=[MetricsCB(), script, stop])
    learn.fit(5)
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1
    expected = script.weights[1] if restore_best else script.weights[3]
    assert same_weights(learn.model.state_dict(), expected)
    assert not same_weights(script.weights[1], script.weights[3])


def test_early_stopping_with_restore_best_resumes_exactly(tmp_path):
    def run(cbs=(), resume=None, epochs=4):
        set_seed(0)
        stop = EarlyStoppingCB(patience=10, restore_best=True)
        learn = Learner(nn.Linear(3, 2), make_dls(n_train=16, unseeded=True), lr=2.0, cbs=[MetricsCB(), stop])
        learn.fit(epochs, cbs=cbs, resume=resume)
        return learn

    straight = run()
    run(cbs=[CheckpointCB(tmp_path / "ckpt.pt")], epochs=2)  # the first two epochs of the same run
    resumed = run(resume=tmp_path / "ckpt.pt")
    assert straight.early_stopping.best_epoch == resumed.early_stopping.best_epoch == 0  # before the checkpoint
    assert same_weights(straight.model.state_dict(), resumed.model.state_dict())


def test_checkpoint_keeps_last_and_best_side_by_side(tmp_path):
    script = ScriptedValidLoss([0.5, 0.4, 0.45, 0.47])
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.5,
                    cbs=[MetricsCB(), script, CheckpointCB(tmp_path / "run", monitor="valid_loss", keep="both")])
    learn.fit(4)
    last, best = read_checkpoint(tmp_path / "run" / "last.pt"), read_checkpoint(tmp_path / "run" / "best.pt")
    assert last["epoch"] == 4 and best["epoch"] == 2  # best: after epoch 1, with 0.4
    assert same_weights(best["model"], script.weights[1]) and same_weights(last["model"], script.weights[3])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": "all"}, "keep must be 'last', 'best' or 'both'"), ({"keep": "both"}, "needs monitor="),
    ({"keep": "best", "monitor": "valid_loss", "every": 3}, "use keep='last' or keep='both'")])
def test_checkpoint_keep_arguments_say_what_is_wrong(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CheckpointCB(tmp_path, **kwargs)


def test_csv_logger_resumed_with_append_keeps_the_earlier_runs_rows(tmp_path):
    log, best = tmp_path / "log.csv", tmp_path / "best.pt"
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), CSVLoggerCB(log)]).fit(1)  # an earlier run: 2 rows
    earlier = log.read_text()
    cbs = [MetricsCB(), ScriptedValidLoss([0.3, 0.5, 0.6]), CSVLoggerCB(log, append=True),
           CheckpointCB(best, monitor="valid_loss")]
    Learner(nn.Linear(3, 2), make_dls(), cbs=cbs).fit(3)  # best.pt: after epoch 0, 4 rows of the log before it
    assert len(list(csv.DictReader(open(log)))) == 2 + 6
    Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB(), CSVLoggerCB(log, append=True)]).fit(3, resume=best)
    assert log.read_text().startswith(earlier)
    assert [r["epoch"] for r in csv.DictReader(open(log))] == ["0", "0"] + ["0", "0", "1", "1", "2", "2"]


def test_early_stopping_does_not_roll_back_to_an_earlier_fits_best_when_a_fit_fails_to_start():
    stop = EarlyStoppingCB(patience=5, restore_best=True)
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.5, cbs=[MetricsCB(), ScriptedValidLoss([0.2, 0.5, 0.6]), stop])
    learn.fit(2)  # restores epoch 0's weights
    learn.remove_cb(stop).fit(1)  # trains on, without early stopping
    trained = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.add_cb(stop)
    with pytest.raises(ValueError, match="before_fit failed"):
        learn.fit(1, cbs=[FailsBeforeFit()])
    assert same_weights(learn.model.state_dict(), trained)


def test_checkpoint_best_carries_over_between_fits_and_early_stopping_counts_each_fit_afresh(tmp_path):
    best = tmp_path / "best.pt"
    stop = EarlyStoppingCB(patience=1)
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.5, cbs=[MetricsCB(), ScriptedValidLoss([0.3, 0.5, 0.4]), stop,
                                                             CheckpointCB(best, monitor="valid_loss")])
    learn.fit(1)
    learn.fit(2)  # starts worse than the first fit ended: no early stop, and best.pt stays the first fit's
    assert stop.stopped_epoch is None and stop.best == 0.4
    assert read_checkpoint(best)["history"][-1]["loss"] == 0.3 and learn.checkpoint.best == 0.3


@pytest.mark.parametrize("stop_listed_first", [True, False])
def test_an_early_stopped_run_is_checkpointed_at_its_last_epoch_and_resuming_it_trains_nothing(tmp_path,
                                                                                              stop_listed_first):
    def learner():
        tracking = [EarlyStoppingCB(patience=1), CheckpointCB(tmp_path / "run", monitor="valid_loss", keep="both")]
        cbs = [MetricsCB(), ScriptedValidLoss([0.3, 0.5, 0.6]), *(tracking if stop_listed_first else tracking[::-1])]
        return Learner(nn.Linear(3, 2), make_dls(), lr=0.5, cbs=cbs)

    learn = learner().fit(6)  # stops after epoch 1
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == len(learn.history) == 4
    assert last["callbacks"]["EarlyStoppingCB"]["wait"] == 1
    assert last["stop_reason"] == learn.stop_reason == "valid_loss has not improved on 0.3 for 1 epochs"
    files = {name: (tmp_path / "run" / name).read_bytes() for name in ("last.pt", "best.pt")}
    with pytest.raises(CheckpointError, match=r"last.pt is the end of a run that stopped early after 2 epochs "
                                              r"\(valid_loss has not improved on 0.3 for 1 epochs\), so fit\(6, "
                                              r"resume=...\) would train nothing"):
        learner().fit(6, resume="auto")
    assert files == {name: (tmp_path / "run" / name).read_bytes() for name in files}
