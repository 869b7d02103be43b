import pytest
import torch
from conftest import TrainLosses, make_dls
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import (
    Callback,
    CheckpointCB,
    DataLoaders,
    Learner,
    MetricsCB,
    TensorBoardCB,
    TensorLoader,
    confusion_matrix,
    set_seed,
)
from slowlearn.callbacks import logging as logging_module


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def tb_learner(log_dir, opt_func=torch.optim.SGD, **kwargs):
    torch.manual_seed(0)
    dls = make_dls(n_train=12, n_valid=8, bs=4, n_classes=3)  # 3 training batches per epoch
    cbs = [MetricsCB(accuracy=MulticlassAccuracy()), TensorBoardCB(log_dir, log_every=2, **kwargs)]
    return Learner(nn.Linear(3, 3), dls, lr=0.1, cbs=cbs, opt_func=opt_func)


def test_training_loss_lr_and_momentum_at_every_logged_step(tmp_path):
    learn = tb_learner(tmp_path, opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    losses = TrainLosses()
    learn.fit(2, cbs=[losses])
    acc = events(tmp_path)
    l = losses.losses  # noqa: E741
    expected = [(2, (l[0] + l[1]) / 2), (3, l[2]), (4, l[3]), (6, (l[4] + l[5]) / 2)]  # every 2nd step, epoch ends
    assert [s for s, _ in scalars(acc, "train/step_loss")] == [s for s, _ in expected]
    for (_, got), (_, want) in zip(scalars(acc, "train/step_loss"), expected):
        assert got == pytest.approx(want, rel=1e-6)
    assert scalars(acc, "opt/lr/group_0") == [(s, pytest.approx(0.1)) for s, _ in expected]
    assert scalars(acc, "opt/mom/group_0") == [(s, pytest.approx(0.9)) for s, _ in expected]


def test_every_metric_per_epoch_and_phase_and_the_final_ones(tmp_path):
    learn = tb_learner(tmp_path)
    learn.fit(2)
    acc = events(tmp_path)
    for phase in ("train", "valid"):
        rows = [r for r in learn.history if r["phase"] == phase]
        for metric in ("loss", "accuracy"):
            assert [v for _, v in scalars(acc, f"{phase}/{metric}")] == pytest.approx([r[metric] for r in rows])
            assert [s for s, _ in scalars(acc, f"{phase}/{metric}")] == [3, 6]  # training steps so far
            final = scalars(acc, f"final/{phase}_{metric}")
            assert final[-1] == (6, pytest.approx(rows[-1][metric]))


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
                                                         "augment", "wd"}
    assert {m.name.tag for m in experiment.metric_infos} == {"final/train_loss", "final/train_accuracy",
                                                            "final/valid_loss", "final/valid_accuracy"}
    session = hparams_content(acc, "_hparams_/session_start_info").session_start_info.hparams
    assert session["model"].string_value == "Linear" and session["opt_func"].string_value == "SGD"
    assert session["lr"].number_value == pytest.approx(0.1) and session["bs"].number_value == 4
    assert session["loss_func"].string_value == "cross_entropy" and session["wd"].number_value == 0.01
    for metric in experiment.metric_infos:  # each metric the tab lists is a scalar of the run
        assert scalars(acc, metric.name.tag)


def test_confusion_matrix_of_the_last_validation_is_an_image(tmp_path):
    learn = tb_learner(tmp_path)
    learn.fit(2)
    result = learn.get_preds()
    assert torch.equal(learn.tensor_board.confusion, confusion_matrix(result.targets, result.preds.argmax(-1), 3))
    images = events(tmp_path).Images("confusion_matrix")
    assert len(images) == 1 and images[0].step == 6 and images[0].encoded_image_string.startswith(b"\x89PNG")


def test_confusion_matrix_leaves_out_ignored_targets(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, -100, 0, -100, 1, 2])  # -100: cross_entropy's ignore_index
    dls = DataLoaders(TensorLoader(x, y.clamp(min=0), 4, device="cpu"), TensorLoader(x, y, 4, device="cpu"))
    learn = Learner(nn.Linear(3, 3), dls, cbs=[MetricsCB(), TensorBoardCB(tmp_path, confusion_matrix=True)]).fit(1)
    assert learn.tensor_board.confusion.sum() == 6


class Interrupt(Callback):
    order = 95  # after TensorBoardCB has logged the batch

    def after_batch(self, learn):
        if learn.training and (learn.epoch, learn.iter) == (1, 1):
            raise KeyboardInterrupt


def test_a_resumed_run_continues_the_curves_without_doubled_steps(tmp_path):
    set_seed(0)
    straight = tb_learner(tmp_path / "straight")
    straight.fit(3)
    set_seed(0)
    first = tb_learner(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        first.fit(3, cbs=[CheckpointCB(tmp_path / "ckpt.pt"), Interrupt()])
    assert [s for s, _ in scalars(events(tmp_path / "resumed"), "train/step_loss")] == [2, 3, 4]  # 4 comes after the checkpoint
    tb_learner(tmp_path / "resumed").fit(3, resume=tmp_path / "ckpt.pt")
    want, got = events(tmp_path / "straight"), events(tmp_path / "resumed")
    for tag in ("train/step_loss", "valid/loss", "final/valid_accuracy"):
        assert [s for s, _ in scalars(got, tag)] == [s for s, _ in scalars(want, tag)]
        assert [v for _, v in scalars(got, tag)] == pytest.approx([v for _, v in scalars(want, tag)], rel=1e-6)


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(logging_module, "is_rank0", lambda: False)
    learn = tb_learner(tmp_path / "logs")
    learn.fit(1)
    assert not (tmp_path / "logs").exists() and learn.tensor_board.confusion is not None


def test_log_every_must_be_positive():
    with pytest.raises(ValueError, match="log_every"):
        TensorBoardCB("runs", log_every=0)
