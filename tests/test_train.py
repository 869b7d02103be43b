import pytest
import torch
from conftest import StopAt, make_dls
from torch import nn

from slowlearn import (
    ChannelsLastCB,
    CheckpointCB,
    DataLoaders,
    MixedPrecisionCB,
    TensorLoader,
    get_kaiming_initialized_model,
    one_cycle_lr,
    resnet,
    set_seed,
    train_1cycle,
)


def one_cycle_run(cbs=(), resume=None, n_epochs=3):
    set_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    return train_1cycle(model, lr=0.05, n_epochs=n_epochs, dls=make_dls(n_train=32, bs=8, unseeded=True),
                        cbs=list(cbs), resume=resume)


@pytest.mark.parametrize("stop_at, every", [((1, 3), "epoch"), ((1, 3), 2), ((2, 0), 1)],
                         ids=["epoch end", "mid-epoch", "first batch of the last epoch"])
def test_train_1cycle_resumes_its_own_run_bitwise(tmp_path, stop_at, every):
    straight = one_cycle_run()
    one_cycle_run([CheckpointCB(tmp_path / "ckpt.pt", every=every), StopAt(*stop_at)])
    resumed = one_cycle_run([CheckpointCB(tmp_path / "ckpt.pt", every=every)], resume=tmp_path / "ckpt.pt")
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                  resumed.model.state_dict().values()))
    assert resumed.recorder.recs["lr"] == straight.recorder.recs["lr"]
    # (a train row of an epoch resumed mid-way averages only the batches run after the resume)
    valid_rows = [r for r in straight.history if r["phase"] == "valid"]
    assert [r for r in resumed.history if r["phase"] == "valid"] == valid_rows
    assert resumed.opt.param_groups[0]["lr"] == straight.opt.param_groups[0]["lr"] == one_cycle_lr(0.05)(1.)


def test_resuming_a_one_cycle_run_with_more_epochs_continues_on_the_longer_cycle(tmp_path):
    one_cycle_run([CheckpointCB(tmp_path / "ckpt.pt"), StopAt(epoch=1, iter=1)])  # saved after epoch 0 of 3
    resumed = one_cycle_run(resume=tmp_path / "ckpt.pt", n_epochs=5)
    lrs = resumed.recorder.recs["lr"]
    assert len(lrs) == 5 * 4  # epoch 0's 4 from the checkpoint, then epochs 1-4
    assert lrs[4:] == [one_cycle_lr(0.05)((epoch + i / 4) / 5) for epoch in range(1, 5) for i in range(4)]
    assert resumed.opt.param_groups[0]["lr"] == one_cycle_lr(0.05)(1.)


def test_train_1cycle_trains_wide_models_in_bf16_channels_last_under_auto(cpu_features):
    cpu_features(amx=True)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 2
    dls = DataLoaders(TensorLoader(x, y, 4, device="cpu"), TensorLoader(x, y, 4, device="cpu"))
    wide = train_1cycle(resnet(nfs=(8, 128), n_classes=2), n_epochs=1, dls=dls)
    assert {type(cb) for cb in wide.cbs} >= {MixedPrecisionCB, ChannelsLastCB}
    narrow = train_1cycle(get_kaiming_initialized_model(), n_epochs=1, dls=dls)
    assert not {type(cb) for cb in narrow.cbs} & {MixedPrecisionCB, ChannelsLastCB}


def test_verbose_0_prints_nothing_not_even_the_precision(capsys, monkeypatch):
    from slowlearn import hardware, vision_learner
    monkeypatch.setattr(hardware, "_announced", set())  # the choice is printed once per process
    x, y = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 2
    dls = DataLoaders(*(TensorLoader(x, y, 4, device="cpu", mean=0.5, std=0.25) for _ in range(2)), classes=["a", "b"])
    train_1cycle(nn.Linear(3, 2), n_epochs=1, dls=make_dls(), precision="fp32", verbose=0)
    vision_learner(dls, "resnet18", pretrained=False, precision="bf16", verbose=0)
    assert capsys.readouterr().out == ""


def test_the_users_own_metrics_progress_and_recorder_replace_the_defaults():
    """train_1cycle(cbs=[MetricsCB(f1=...)]) used to run it beside the default MetricsCB: two history rows per epoch
    and phase (one without accuracy, one without f1), and `learn.recorder` was the default RecorderCB, not the
    user's."""
    from torcheval.metrics import MulticlassF1Score

    from slowlearn import MetricsCB, ProgressCB, RecorderCB
    metrics, progress = MetricsCB(f1=MulticlassF1Score()), ProgressCB(verbose=0)
    recorder = RecorderCB(wd="weight_decay")
    learn = train_1cycle(nn.Linear(3, 2), n_epochs=1, dls=make_dls(), cbs=[metrics, progress, recorder])
    assert [set(row) for row in learn.history] == [{"f1", "loss", "epoch", "phase"}] * 2
    assert learn.metrics is metrics and learn.progress is progress and learn.recorder is recorder
    assert sum(isinstance(cb, (MetricsCB, ProgressCB, RecorderCB)) for cb in learn.cbs) == 3


def test_a_distributed_cb_of_the_users_replaces_the_default_one(monkeypatch):
    """Under torchrun, train_1cycle(cbs=[DistributedCB(sync_bn=True)]) used to add it beside default_cbs' own: the
    model was wrapped in DistributedDataParallel twice, and stayed wrapped once after the fit."""
    from slowlearn import DistributedCB
    from slowlearn.train import default_cbs
    monkeypatch.setenv("WORLD_SIZE", "2")
    mine = DistributedCB(sync_bn=True)
    cbs = default_cbs(verbose=0, given=[mine])
    assert not any(isinstance(cb, DistributedCB) for cb in cbs)
    assert sum(isinstance(cb, DistributedCB) for cb in default_cbs(verbose=0)) == 1


def test_metrics_given_twice_are_refused():
    from slowlearn import MetricsCB
    from slowlearn.train import default_cbs
    with pytest.raises(ValueError, match="metrics= and a MetricsCB in cbs"):
        default_cbs(metrics={"accuracy": None}, given=[MetricsCB()])


@pytest.mark.parametrize("helper", ["train", "train_1cycle"])
def test_a_batch_size_that_the_given_loaders_do_not_have_is_refused(helper):
    """bs= makes the Fashion-MNIST loaders; with dls= it was silently ignored (train_1cycle(model, dls=dls, bs=64)
    trained in the loaders' batches of 4)."""
    from slowlearn import train
    fit = {"train": lambda **kw: train(lr=0.1, **kw), "train_1cycle": train_1cycle}[helper]
    with pytest.raises(ValueError, match=rf"{helper}: bs=64 sizes the Fashion-MNIST batches it loads, but dls= "
                                         rf"are given, in batches of 4"):
        fit(model=nn.Linear(3, 2), n_epochs=1, dls=make_dls(bs=4), bs=64, verbose=0)
    with pytest.raises(ValueError, match=rf"{helper}: bs=512 sizes"):  # the default's value, given: it was taken as
        fit(model=nn.Linear(3, 2), n_epochs=1, dls=make_dls(bs=4), bs=512, verbose=0)  # the default, and ignored
    fit(model=nn.Linear(3, 2), n_epochs=1, dls=make_dls(bs=4), bs=4, verbose=0)  # the loaders' own: fine


def test_the_batch_size_of_a_dataloader_made_with_a_batch_sampler_is_its_samplers():
    """DataLoader(batch_sampler=...) has batch_size None: its batch size is the sampler's, not an unknown one
    ('in batches of None')."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    from slowlearn import DataLoaders, train
    data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
    dl = DataLoader(data, batch_sampler=BatchSampler(RandomSampler(data), 8, drop_last=False))
    train(nn.Linear(3, 2), lr=0.1, n_epochs=1, bs=8, dls=DataLoaders(dl, dl), verbose=0)
    with pytest.raises(ValueError, match=r"dls= are given, in batches of 8: make the loaders with bs=4"):
        train(nn.Linear(3, 2), lr=0.1, n_epochs=1, bs=4, dls=DataLoaders(dl, dl), verbose=0)
