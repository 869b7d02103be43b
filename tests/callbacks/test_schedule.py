import math
import random
import warnings
from types import SimpleNamespace

import matplotlib.figure
import numpy as np
import pytest
import torch
from conftest import StopAt, make_dls
from torch import nn
from torch.optim import lr_scheduler

from slowlearn import (
    ActivationStatsCB,
    Adam,
    BatchSchedulerCB,
    Callback,
    CancelFitException,
    CheckpointCB,
    CSVLoggerCB,
    DataLoaders,
    DeviceCB,
    EarlyStoppingCB,
    EpochSchedulerCB,
    GradientAccumulationCB,
    GradientClipCB,
    Learner,
    LRFinderCB,
    MetricsCB,
    MixedPrecisionCB,
    MomentumCB,
    MomentumSGD,
    OneCycleCB,
    ParamSchedulerCB,
    ProgressCB,
    RecorderCB,
    TensorLoader,
    combine_scheds,
    one_cycle_lr,
    one_cycle_mom,
    sched_cos,
    sched_exp,
    sched_lin,
    train_1cycle,
    warmup_cos,
)
from slowlearn.callbacks.schedule import get_hyper, set_hyper
from slowlearn.callbacks.tracking import ReduceLROnPlateauCB


def progress(n_epochs, n_batches):
    """`learn.pct_train` at every training batch of a fit, computed as the Learner does."""
    return [(epoch + i / n_batches) / n_epochs for epoch in range(n_epochs) for i in range(n_batches)]










def test_fit_callbacks_leave_nothing_behind():
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[MetricsCB()])
    learn.fit(1)
    attrs, group_keys = set(vars(learn)), set(learn.opt.param_groups[0])
    learn.fit(1, cbs=[BatchSchedulerCB(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=3), RecorderCB()])
    learn.fit(1, cbs=[EpochSchedulerCB(lr_scheduler.StepLR, step_size=1), RecorderCB()])
    assert [type(cb) for cb in learn.cbs] == [MetricsCB]
    assert set(vars(learn)) == attrs and set(learn.opt.param_groups[0]) == group_keys
    with pytest.raises(AttributeError):
        learn.recorder


def test_epoch_scheduler_steps_once_per_training_epoch():
    recorder = RecorderCB(lr="lr")
    Learner(nn.Linear(3, 2), make_dls(), lr=1., cbs=[recorder]).fit(
        3, cbs=[EpochSchedulerCB(lr_scheduler.StepLR, step_size=1, gamma=0.5)])
    assert recorder.recs["lr"] == [1.] * 3 + [0.5] * 3 + [0.25] * 3


def test_a_schedule_that_starts_from_lr_0_warns_instead_of_training_at_lr_0_silently():
    """The optimizer keeps its lrs from fit to fit: a second fit under a cosine schedule that ended at 0 would
    start it from 0 and train at lr 0 throughout."""
    cosine = BatchSchedulerCB(lr_scheduler.CosineAnnealingLR, T_max=3)  # 3 steps an epoch: ends at 0
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[cosine])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit(1)
    assert all(group["lr"] == 0 for group in learn.opt.param_groups)
    with pytest.warns(UserWarning, match=r"starts from lr 0 .*fit\(n_epochs, lr=\.\.\.\)"):
        learn.fit(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit(1, lr=0.1)  # a new start
        learn.cbs = []
        learn.fit(1, cbs=[BatchSchedulerCB(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=3)])  # its own lrs
        learn.fit(1, lr=0., cbs=[BatchSchedulerCB(lr_scheduler.CyclicLR, base_lr=0., max_lr=0.1, step_size_up=2)])


def test_scheduler_state_dict_round_trip():
    cb = BatchSchedulerCB(lr_scheduler.CosineAnnealingLR, T_max=10)
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[cb])
    learn.fit(1)
    state = cb.state_dict()
    assert state["scheduler"]["last_epoch"] == 3 and state["param_groups"][0]["lr"] == learn.opt.param_groups[0]["lr"]
    learn.opt.param_groups[0]["lr"] = 1.  # as creating a scheduler resets it
    cb.load_state_dict({**state, "scheduler": {**state["scheduler"], "last_epoch": 1}})
    assert cb.scheduler.last_epoch == 1 and learn.opt.param_groups[0]["lr"] == state["param_groups"][0]["lr"]
    with pytest.raises(RuntimeError, match="no scheduler to load a state into"):
        BatchSchedulerCB(lr_scheduler.CosineAnnealingLR, T_max=10).load_state_dict(state)


def test_pure_schedules():
    assert [sched_lin(1, 3)(p) for p in (0, 0.5, 1)] == [1, 2, 3]
    assert [sched_cos(1, 3)(p) for p in (0, 0.5, 1)] == pytest.approx([1, 2, 3])
    assert [sched_exp(1, 100)(p) for p in (0, 0.5, 1)] == pytest.approx([1, 10, 100])
    combined = combine_scheds([0.25, 0.75], [sched_lin(0, 1), sched_lin(1, 0)])
    assert [combined(p) for p in (0, 0.125, 0.25, 0.625, 1)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    warm = warmup_cos(1., pct_warmup=0.2)
    assert [warm(p) for p in (0, 0.1, 0.2, 0.6, 1)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    with pytest.raises(ValueError, match="summing to 1"):
        combine_scheds([0.5, 0.6], [sched_lin(0, 1), sched_lin(1, 0)])


def one_cycle_by_hand(opt_factory, total, **kwargs):
    """The lr and momentum of each step of torch's OneCycleLR."""
    opt = opt_factory([nn.Parameter(torch.zeros(1))])
    sched = lr_scheduler.OneCycleLR(opt, total_steps=total, **kwargs)
    values = []
    for _ in range(total):
        values.append((opt.param_groups[0]["lr"], get_hyper(opt.param_groups[0], "mom")))
        opt.step()
        sched.step()
    return values


def test_one_cycle_functions_follow_torch_shape():
    total = 1000
    expected = one_cycle_by_hand(lambda p: torch.optim.SGD(p, 0.1, momentum=0.9), total, max_lr=0.1)
    ours = one_cycle_lr(0.1)
    lrs = [ours(k / total) for k in range(total)]
    assert lrs == pytest.approx([lr for lr, _ in expected], rel=0.02, abs=1e-4)
    assert [one_cycle_mom()(k / total) for k in range(total)] == pytest.approx([m for _, m in expected], abs=1e-3)


def test_param_scheduler_sets_every_group_and_betas():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt_func = lambda params, lr: Adam([{"params": model[0].parameters()}, {"params": model[1].parameters()}], lr)
    recorder = RecorderCB(lr="lr", mom="mom", lr1=lambda cb: cb.learn.opt.param_groups[1]["lr"])
    learn = Learner(model, make_dls(n_train=8), lr=0.1, opt_func=opt_func, cbs=[recorder])
    learn.fit(2, cbs=[ParamSchedulerCB(lr=sched_lin(1., 0.), mom=sched_lin(0.9, 0.8))])
    assert recorder.recs["lr"] == pytest.approx([1, 0.75, 0.5, 0.25]) == recorder.recs["lr1"]
    assert recorder.recs["mom"] == pytest.approx([0.9, 0.875, 0.85, 0.825])
    assert learn.opt.param_groups[1]["betas"][1] == 0.999


def test_param_scheduler_on_a_learner_whose_lr_is_0_gives_every_group_the_schedule():
    """Learner(lr=0) (the schedule sets the lr anyway) failed with a ZeroDivisionError: each group's share of the
    schedule was its lr over the largest, 0 / 0."""
    recorder = RecorderCB(lr="lr", lr1=lambda cb: cb.learn.opt.param_groups[1]["lr"])
    learn = Learner(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)), make_dls(n_train=8), lr=0., cbs=[recorder])
    learn.fit(2, cbs=[ParamSchedulerCB(lr=sched_lin(1., 0.))])
    assert recorder.recs["lr"] == pytest.approx([1, 0.75, 0.5, 0.25]) == recorder.recs["lr1"]


def test_one_cycle_cb_on_momentum_sgd():
    recorder = RecorderCB()
    Learner(nn.Linear(3, 2), make_dls(n_train=40, bs=4), opt_func=MomentumSGD, cbs=[recorder, OneCycleCB(0.1)]).fit(2)
    lrs, moms = recorder.recs["lr"], recorder.recs["mom"]
    peak = int(np.argmax(lrs))
    assert max(lrs) == pytest.approx(0.1, rel=0.01) and lrs[0] == pytest.approx(0.1 / 25)
    assert moms[peak] == pytest.approx(0.85, abs=0.01) and moms[0] == 0.95


def test_get_set_hyper_names():
    group = {"lr": 0.1, "betas": (0.9, 0.99), "weight_decay": 0.}
    set_hyper(group, "mom", 0.8)
    set_hyper(group, "wd", 0.1)
    assert group["betas"] == (0.8, 0.99) and get_hyper(group, "wd") == 0.1 and get_hyper(group, "mom") == 0.8
    group = {"lr": 0.1, "momentum": 0.9}
    set_hyper(group, "mom", 0.5)
    assert group["momentum"] == 0.5


def model_state(learn):
    tensors = {f"model.{k}": v.clone() for k, v in learn.model.state_dict().items()}
    if learn.opt is not None:
        for i, state in enumerate(learn.opt.state.values()):
            tensors |= {f"opt.{i}.{k}": v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def adam(params, lr):
    return torch.optim.Adam(params, lr)


def test_lr_find_restores_everything_bitwise_and_suggests_inside_range():
    learn = Learner(bn_model(), make_dls(n_train=400, bs=8), lr=1e-2, opt_func=adam,
                    cbs=[MetricsCB(), ProgressCB(), RecorderCB()])
    learn.fit(1)  # optimizer state exists
    before, n_history = model_state(learn), len(learn.history)
    torch.manual_seed(3)
    rngs = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(),
            learn.dls.train.generator.get_state())
    suggestion = learn.lr_find(start_lr=1e-5, end_lr=10, num_it=80)
    after = model_state(learn)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rngs[0]) and np.array_equal(np.random.get_state()[1], rngs[1])
    assert random.getstate() == rngs[2] and torch.equal(learn.dls.train.generator.get_state(), rngs[3])
    assert len(learn.history) == n_history and learn.opt.param_groups[0]["lr"] == 1e-2
    assert [type(cb) for cb in learn.cbs] == [MetricsCB, ProgressCB, RecorderCB]
    assert len(learn.recorder.recs["lr"]) == len(learn.dls.train)  # the recorder sat the sweep out
    lrs = learn.lr_finder.lrs
    assert 1e-5 <= suggestion.steep <= lrs[-1] and 1e-5 <= suggestion.valley <= lrs[-1]
    assert isinstance(learn.lr_finder.plot(), matplotlib.figure.Figure)


def test_lr_find_then_fit_equals_fit_alone():
    def run(find):
        torch.manual_seed(0)
        learn = Learner(bn_model(), make_dls(n_train=200, bs=8, seed=5), lr=1e-2, opt_func=adam)
        if find:
            learn.lr_find(num_it=30)
        learn.fit(2)
        return torch.cat([p.flatten() for p in learn.model.state_dict().values()])

    assert torch.equal(run(True), run(False))


@pytest.mark.parametrize("cb", [lambda: GradientAccumulationCB(2), MomentumCB], ids=["accumulation", "momentum"])
def test_lr_find_leaves_the_gradients_as_they_were(cb):
    """A sweep that stopped inside an accumulation window (num_it=3 of 2-batch windows), or MomentumCB's decayed
    gradients, were left in p.grad, and the next fit's first step added them to its own."""
    def run(find):
        learn = Learner(bn_model(), make_dls(n_train=40, bs=8), lr=1e-2, cbs=[cb()])
        if find:
            learn.lr_find(num_it=3, show_plot=False)
            assert all(p.grad is None for p in learn.model.parameters())
        learn.fit(1)
        return torch.cat([p.flatten() for p in learn.model.state_dict().values()])

    assert torch.equal(run(True), run(False))


def test_lr_find_with_metric_monitors_sweeps_without_them(tmp_path):
    monitors = [EarlyStoppingCB("valid_loss"), CheckpointCB(tmp_path / "best.pt", monitor="valid_loss")]
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=200, bs=8), cbs=[MetricsCB(), *monitors])
    learn.lr_find(num_it=10, show_plot=False)  # the sweep computes no metrics: monitors would have nothing to watch
    assert learn.cbs[1:] == monitors and not (tmp_path / "best.pt").exists()




def test_train_1cycle_with_progress_prints_table(capsys, monkeypatch):
    from slowlearn import hardware
    monkeypatch.setattr(hardware, "_announced", set())  # the precision is printed once per process
    learn = train_1cycle(nn.Linear(3, 2), lr=0.05, n_epochs=2, dls=make_dls())
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Training in fp32") and len(out) == 7
    assert out[1].startswith("fit: 2 epochs")  # not a terminal: plain lines
    assert out[2].split() == ["accuracy", "loss", "epoch", "phase"]
    assert isinstance(learn.opt, torch.optim.AdamW) and math.isfinite(learn.history[-1]["loss"])
    assert [type(cb).__name__ for cb in learn.cbs] == ["DeviceCB", "MetricsCB", "ProgressCB", "RecorderCB"]


@pytest.mark.parametrize("n_batches, n_accumulate", [(5, 2), (6, 3), (4, 1)])
def test_one_cycle_with_gradient_accumulation_steps_at_the_formula_of_each_stepping_batch(n_batches, n_accumulate):
    dls = make_dls(n_train=4 * n_batches, bs=4)
    learn = train_1cycle(nn.Linear(3, 2), lr=0.1, n_epochs=2, dls=dls, cbs=[GradientAccumulationCB(n_accumulate)])
    stepping = [i for i in range(n_batches) if (i + 1) % n_accumulate == 0 or i == n_batches - 1]
    pcts = [(epoch + i / n_batches) / 2 for epoch in range(2) for i in stepping]
    assert learn.recorder.recs["lr"] == [one_cycle_lr(0.1)(p) for p in pcts]
    assert learn.opt.param_groups[0]["lr"] == one_cycle_lr(0.1)(1.)


class GroupLRs(Callback):
    order = 70  # after the schedule has set the lrs

    def __init__(self):
        self.lrs = []

    def before_batch(self, learn):
        if learn.training:
            self.lrs.append([group["lr"] for group in learn.opt.param_groups])


def test_fit_one_cycle_gives_each_param_group_its_own_peak():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt_func = lambda params, lr: torch.optim.SGD([{"params": model[0].parameters()},  # noqa: E731
                                                   {"params": model[1].parameters()}], lr, momentum=0.9)
    dls = make_dls(n_train=20, bs=4)
    groups = GroupLRs()
    learn = Learner(model, dls, lr=0.3, opt_func=opt_func)
    learn.fit_one_cycle(2, lr_max=[0.01, 0.1], pct_start=0.25, moms=None, cbs=[groups])
    pcts = progress(2, len(dls.train))
    assert groups.lrs == [[one_cycle_lr(0.01, 0.25)(p), one_cycle_lr(0.1, 0.25)(p)] for p in pcts]
    assert [g["momentum"] for g in learn.opt.param_groups] == [0.9, 0.9]  # moms=None leaves it alone
    learn.fit_one_cycle(1, cbs=[groups])  # one lr_max for every group, by default learn.lr
    assert groups.lrs[-1] == [one_cycle_lr(0.3)(1 - 1 / len(dls.train))] * 2
    with pytest.raises(ValueError, match="Got 3 lrs for 2 param groups"):
        learn.fit_one_cycle(1, lr_max=[0.1, 0.1, 0.1])


def test_explicit_total_steps_is_kept():
    dls = make_dls(n_train=20, bs=4)
    schedule = BatchSchedulerCB(lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=100)
    Learner(nn.Linear(3, 2), dls, cbs=[schedule]).fit(1)
    assert schedule.scheduler.total_steps == 100


def sweep(raw_losses, lrs):
    """An LRFinderCB fed these losses at these lrs, as a sweep would."""
    finder = LRFinderCB(lrs[0], lrs[-1], num_it=len(lrs), stop_div=False)
    finder.before_fit(None)
    for lr, loss in zip(lrs, raw_losses):
        finder.lrs.append(lr)
        try:
            finder.after_batch(SimpleNamespace(loss=torch.tensor(loss), training=True))
        except CancelFitException:
            pass
    return finder




@pytest.mark.parametrize("kwargs, match", [
    (dict(moms=(1.5, 0.85)), r"OneCycleCB: Invalid moms\[0\]: 1.5 \(must be a finite number in \[0.0, 1.0\)\)"),
    (dict(moms=(0.95, -0.1)), r"Invalid moms\[1\]: -0.1"),
    (dict(pct_start=1.2), "Invalid pct_start: 1.2"),
    (dict(div=0), "Invalid div: 0"),
    (dict(lr_max=float("nan")), "Invalid lr_max: nan"),
    (dict(lr_max=[0.1, -0.1]), "Invalid lr_max: -0.1"),
])
def test_one_cycle_refuses_hyper_parameters_that_would_diverge_or_mean_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OneCycleCB(**{"lr_max": 0.1, **kwargs})
    one_cycle_kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=match):
        train_1cycle(nn.Linear(3, 2), lr=one_cycle_kwargs.pop("lr_max", 0.1), dls=make_dls(), **one_cycle_kwargs)


class Joins(Callback):
    """A user's callback that opts in to sweeps, and one that does not."""
    sweep = True

    def __init__(self):
        self.batches = 0

    def after_batch(self, learn):
        self.batches += 1


def test_lr_find_after_a_crash_touches_no_file_nor_record_and_the_run_resumes(tmp_path):
    ckpt, log = tmp_path / "ckpt.pt", tmp_path / "log.csv"
    cbs = [MetricsCB(), CheckpointCB(ckpt, every=2), CSVLoggerCB(log), ActivationStatsCB(), joins := Joins()]
    learn = Learner(bn_model(), make_dls(n_train=40, bs=8), cbs=cbs)
    with pytest.raises(RuntimeError, match="crash"):
        learn.fit(6, cbs=[StopAt(epoch=2, iter=3, exc=lambda: RuntimeError("crash"))])
    files = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (ckpt, log)}
    records, seen = [list(layer["mean"]) for layer in learn.activation_stats.stats], joins.batches
    position = (learn.epoch, learn.iter, learn.n_epochs)
    learn.lr_find(num_it=30, show_plot=False)  # 30 batches: longer than the 5-batch training loader
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files} == files
    assert [layer["mean"] for layer in learn.activation_stats.stats] == records
    assert (learn.epoch, learn.iter, learn.n_epochs) == position
    assert joins.batches == seen  # it took part, and its attributes were put back
    assert len(learn.lr_finder.losses) > 5
    learn.fit(6, resume=ckpt)
    assert [row["epoch"] for row in learn.history if row["phase"] == "valid"] == [0, 1, 2, 3, 4, 5]


def test_only_callbacks_that_opt_in_take_part_in_a_sweep():
    joins, stays_out = Joins(), type("StaysOut", (Joins,), {"sweep": False})()
    seen = []

    class Spy(Callback):
        sweep = True

        def after_batch(self, learn):
            seen.append((joins.batches, stays_out.batches))

    learn = Learner(nn.Linear(3, 2), make_dls(n_train=200, bs=8), cbs=[joins, stays_out, Spy()])
    learn.lr_find(num_it=10, show_plot=False)
    assert seen[-1] == (10, 0)
    assert [cb.sweep for cb in (DeviceCB(), MixedPrecisionCB(), GradientClipCB(), MetricsCB(), CheckpointCB("x"),
                                CSVLoggerCB("x"), RecorderCB(), ActivationStatsCB())] == [True] * 3 + [False] * 5


class SeenCallbacks(Callback):
    """Records the types of the callbacks each fit ran with."""

    def __init__(self):
        self.fits = []

    def before_fit(self, learn):
        self.fits.append({type(cb).__name__ for cb in learn.cbs})


@pytest.mark.parametrize("native, expected", [(True, {"MixedPrecisionCB", "ChannelsLastCB"}), (False, {"ChannelsLastCB"})])
def test_fit_one_cycle_and_fine_tune_apply_precision_auto_as_the_hardware_allows(cpu_features, native, expected):
    from slowlearn import resnet
    cpu_features(amx=native)
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    dls = DataLoaders(TensorLoader(x, torch.arange(8) % 2, 4, device="cpu", mean=0.5, std=0.25),
                      TensorLoader(x[:4], torch.arange(4) % 2, 4, device="cpu", mean=0.5, std=0.25))
    seen = SeenCallbacks()
    learn = Learner(resnet(nfs=(4, 128), n_classes=2), dls, cbs=[seen])  # wide enough for bf16
    learn.fit_one_cycle(1, 1e-3, precision="auto")
    learn.fine_tune(1, freeze_epochs=1, precision="auto")
    assert len(seen.fits) == 3
    for fit in seen.fits:
        assert {"MixedPrecisionCB", "ChannelsLastCB"} & fit == expected
    assert not any(type(cb).__name__ == "MixedPrecisionCB" for cb in learn.cbs)  # for those fits only


@pytest.mark.parametrize("cbs", [lambda: [DeviceCB("cpu")], lambda: []], ids=["DeviceCB('cpu')", "no DeviceCB"])
def test_precision_auto_asks_the_device_the_fit_trains_on(cpu_features, monkeypatch, cbs):
    """On a machine with a bf16 GPU, a fit on the CPU (DeviceCB('cpu'), or a model left there) got bf16 autocast,
    which the GPU runs natively and this CPU emulates (several times slower than fp32)."""
    from slowlearn.callbacks import precision
    cpu_features(amx=False)
    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    seen = SeenCallbacks()
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(3, 128), nn.ReLU(), nn.Linear(128, 2))  # wide enough for bf16
    learn = Learner(wide, make_dls(), cbs=[seen, *cbs()])
    learn.fit_one_cycle(1, 1e-3, precision="auto")
    assert "MixedPrecisionCB" not in seen.fits[0]


def test_fit_one_cycle_precision_bf16_is_applied_and_a_contradiction_is_refused():
    seen = SeenCallbacks()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[seen])
    learn.fit_one_cycle(1, 1e-2, precision="bf16")
    assert "MixedPrecisionCB" in seen.fits[0]
    learn.add_cb(MixedPrecisionCB("fp16"))
    with pytest.raises(ValueError, match="contradicts the MixedPrecisionCB"):
        learn.fit_one_cycle(1, precision="bf16")


class Warmup(Callback):
    """A user's own lr schedule, which says so."""
    sets_lr = True

    def before_batch(self, learn):
        for group in learn.opt.param_groups:
            group["lr"] = 0.01


@pytest.mark.parametrize("fit, names", [
    (lambda learn: learn.fit_one_cycle(2, cbs=[ReduceLROnPlateauCB(patience=0)]), "OneCycleCB and ReduceLROnPlateauCB"),
    (lambda learn: learn.fit(2, cbs=[BatchSchedulerCB(lr_scheduler.CosineAnnealingLR, T_max=4),
                                     ParamSchedulerCB(lr=sched_lin(0.1, 0.))]),
     "ParamSchedulerCB and BatchSchedulerCB"),
    (lambda learn: learn.fit_one_cycle(1, cbs=[Warmup()]), "Warmup and OneCycleCB"),
])
def test_two_lr_schedules_in_one_fit_are_refused_before_training(fit, names):
    """ReduceLROnPlateauCB inside fit_one_cycle used to cut an lr that one-cycle overwrote before every batch."""
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[MetricsCB()])
    weights = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=f"Callbacks {names} both set the learning rate during this fit.*keep one "
                                         f"schedule per fit"):
        fit(learn)
    assert learn.history == [] and all(torch.equal(a, b) for a, b in zip(weights, learn.model.parameters()))
    assert [type(cb) for cb in learn.cbs] == [MetricsCB]


def test_one_lr_schedule_with_callbacks_that_set_other_hyper_parameters_is_fine():
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[MetricsCB()])
    learn.fit_one_cycle(1, cbs=[ParamSchedulerCB(wd=sched_lin(0., 0.1))])
    learn.fit(1, cbs=[ReduceLROnPlateauCB(patience=0)])
    assert not ParamSchedulerCB(wd=sched_lin(0., 0.1)).sets_lr and ParamSchedulerCB(lr=sched_lin(1., 0.)).sets_lr


def test_fit_one_cycle_with_a_precision_is_quiet_under_a_silent_progress(capsys, monkeypatch):
    from slowlearn import hardware
    monkeypatch.setattr(hardware, "_announced", set())  # the choice is printed once per process
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[DeviceCB(), ProgressCB(verbose=0)])
    learn.fit_one_cycle(1, precision="fp32")
    assert capsys.readouterr().out == ""
