import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slowlearn import (ActivationStatsCB, Callback, CancelFitException, CheckpointCB, CSVLoggerCB, DataLoaders,
                       EarlyStoppingCB, GradientAccumulationCB, GradientClipCB, Learner, MetricsCB, MixedPrecisionCB,
                       ProfilerCB, ProgressCB, ReduceLROnPlateauCB, TensorLoader, TerminateOnNaNCB, find_batch_size,
                       set_seed)
from slowlearn import checkpoint as checkpoint_module
from slowlearn.checkpoint import read_checkpoint

from conftest import make_dls
from resume_run import N_BATCHES, make_learner, weights

HERE = Path(__file__).parent


class StopAt(Callback):
    """Raises `exc` at the end of training batch `iter` of epoch `epoch`."""

    def __init__(self, epoch, iter, exc=CancelFitException):
        self.epoch, self.iter, self.exc = epoch, iter, exc

    def after_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == self.iter:
            raise self.exc()


def resume_in_new_process(tmp_path, checkpoint, n_epochs=4):
    out = tmp_path / "resumed.pt"
    result = subprocess.run([sys.executable, str(HERE / "resume_run.py"), str(checkpoint), str(out), str(n_epochs)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return torch.load(out, weights_only=True)


def straight_run(tmp_path):
    set_seed(0)
    learn = make_learner(tmp_path / "straight.csv")
    learn.fit(4)
    return learn


def test_resume_after_two_epochs_in_a_new_process_is_bitwise_exact(tmp_path):
    straight = straight_run(tmp_path)
    set_seed(0)
    learn = make_learner(tmp_path / "resumed.csv")
    learn.fit(2)
    learn.save(tmp_path / "ckpt.pt")
    shutil.copy(tmp_path / "resumed.csv", tmp_path / "resumed_before.csv")
    resumed = resume_in_new_process(tmp_path, tmp_path / "ckpt.pt")
    assert torch.equal(resumed["weights"], weights(straight))
    assert resumed["lrs"] == straight.recorder.recs["lr"]  # the one-cycle schedule continued, not restarted
    assert resumed["history"] == straight.history
    rows = list(csv.DictReader(open(tmp_path / "resumed.csv")))
    assert len(rows) == 8 and [r["train"] for r in rows[:2]] == ["train", "eval"]  # 4 epochs x 2 phases


def test_resume_from_a_mid_epoch_checkpoint_is_bitwise_exact(tmp_path):
    straight = straight_run(tmp_path)
    set_seed(0)
    learn = make_learner(tmp_path / "resumed.csv")
    learn.fit(4, cbs=[CheckpointCB(tmp_path / "ckpt.pt", every=3), StopAt(epoch=1, iter=4)])
    state = read_checkpoint(tmp_path / "ckpt.pt")
    assert (state["epoch"], state["iter"]) == (1, 3)
    resumed = resume_in_new_process(tmp_path, tmp_path / "ckpt.pt")
    assert torch.equal(resumed["weights"], weights(straight))
    assert len(resumed["lrs"]) == len(straight.recorder.recs["lr"]) == 4 * N_BATCHES


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


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    learn = Learner(nn.Linear(3, 2), make_dls())
    learn.fit(1)
    learn.save(tmp_path / "ckpt.pt")
    good = read_checkpoint(tmp_path / "ckpt.pt")

    def crash(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    learn.fit(1)
    with pytest.raises(OSError, match="disk full"):
        learn.save(tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.pt"]  # the temporary file is gone
    assert torch.equal(read_checkpoint(tmp_path / "ckpt.pt")["model"]["weight"], good["model"]["weight"])


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "model": {}, "payload": Evil(marker)}, tmp_path / "evil.pt")
    learn = Learner(nn.Linear(3, 2), make_dls())
    with pytest.raises(ValueError, match="Refusing to load"):
        learn.load(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="Refusing to load"):
        learn.fit(1, resume=tmp_path / "evil.pt")
    assert not marker.exists()


def test_load_restores_model_optimizer_and_history(tmp_path):
    learn = Learner(nn.Linear(3, 2), make_dls(), opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9),
                    cbs=[MetricsCB()])
    learn.fit(2)
    learn.save(tmp_path / "ckpt.pt")
    fresh = Learner(nn.Linear(3, 2), make_dls(), opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9),
                    cbs=[MetricsCB()]).load(tmp_path / "ckpt.pt")
    assert torch.equal(fresh.model.weight, learn.model.weight) and fresh.history == learn.history
    assert torch.equal(fresh.opt.state[fresh.model.weight]["momentum_buffer"],
                       learn.opt.state[learn.model.weight]["momentum_buffer"])


def test_checkpoints_of_a_compiled_model_load_into_the_plain_model_and_back(tmp_path):
    def learner(model):
        return Learner(model, make_dls(), opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))

    torch.manual_seed(0)
    compiled = learner(torch.compile(nn.Linear(3, 2), backend="eager"))  # the eager backend: a fast test
    compiled.fit(2)
    compiled.save(tmp_path / "compiled.pt")
    assert list(read_checkpoint(tmp_path / "compiled.pt")["model"]) == ["weight", "bias"]  # no "_orig_mod."
    plain = learner(nn.Linear(3, 2)).load(tmp_path / "compiled.pt")
    assert torch.equal(plain.model.weight, compiled.model.weight)
    plain.fit(1)
    plain.save(tmp_path / "plain.pt")
    again = learner(torch.compile(nn.Linear(3, 2), backend="eager")).load(tmp_path / "plain.pt")
    assert torch.equal(again.model.weight, plain.model.weight)


def test_a_model_with_an_attribute_named_module_is_saved_whole(tmp_path):
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.module, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.module(x))

    learn = Learner(Head(), make_dls())
    learn.fit(1)
    learn.save(tmp_path / "ckpt.pt")
    assert set(read_checkpoint(tmp_path / "ckpt.pt")["model"]) == {"module.weight", "module.bias", "out.weight",
                                                                    "out.bias"}


@pytest.mark.parametrize("with_generator", [False, True], ids=["global RNG", "own generator"])
def test_torch_dataloaders_resume_and_lr_find_exactly(tmp_path, with_generator):
    def torch_dls():
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(64, 3, generator=g), torch.randint(0, 2, (64,), generator=g))
        order = torch.Generator().manual_seed(1) if with_generator else None
        return DataLoaders(DataLoader(ds, batch_size=8, shuffle=True, generator=order), DataLoader(ds, batch_size=16))

    def run(n_epochs, cbs=(), resume=None, find_lr=False):
        set_seed(0)
        learn = Learner(nn.Linear(3, 2), torch_dls(), cbs=list(cbs),
                        opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
        if find_lr:
            learn.lr_find(show_plot=False)
        learn.fit(n_epochs, resume=resume)
        return learn.model.weight

    straight = run(3)
    run(2, cbs=[CheckpointCB(tmp_path / "ckpt.pt")])
    assert torch.equal(run(3, resume=tmp_path / "ckpt.pt"), straight)
    assert torch.equal(run(3, find_lr=True), straight)


def linear_dls(n, bs):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, bs, device="cpu"), TensorLoader(x[:8], y[:8], 8, device="cpu"))


def trained_weights(dls, cbs=()):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    Learner(model, dls, lr=0.5, cbs=list(cbs)).fit(1, valid=False)
    return torch.cat([model.weight.flatten(), model.bias])


def test_gradient_accumulation_equals_one_big_batch():
    big = trained_weights(linear_dls(512, 512))
    accumulated = trained_weights(linear_dls(512, 128), [GradientAccumulationCB(4)])
    plain_small = trained_weights(linear_dls(512, 128))
    torch.testing.assert_close(accumulated, big)
    assert not torch.allclose(plain_small, big)


def test_last_partial_accumulation_is_stepped():
    steps = []

    class CountSteps(Callback):
        def after_step(self, learn):
            steps.append(learn.iter)

    trained_weights(linear_dls(640, 128), [GradientAccumulationCB(4), CountSteps()])
    assert steps == [3, 4]  # after 4 batches, then the 5th batch alone at the end of the epoch


def test_gradient_clip_bounds_the_global_norm():
    seen = []

    class Norm(Callback):
        order = 10  # after GradientClipCB

        def after_backward(self, learn):
            grads = [p.grad for p in learn.model.parameters()]
            seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    clip = GradientClipCB(max_norm=0.05)
    trained_weights(linear_dls(256, 32), [clip, Norm()])
    assert max(seen) <= 0.05 + 1e-6 and max(clip.norms) > 0.05 and len(clip.norms) == 8


def test_mixed_precision_bf16_on_cpu_runs_forward_in_bf16():
    dtypes = []

    class Watch(Callback):
        def after_predict(self, learn):
            dtypes.append(learn.preds.dtype)

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MixedPrecisionCB("bf16"), Watch()])
    learn.fit(1)
    assert set(dtypes) == {torch.bfloat16} and learn.model.weight.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


def test_mixed_precision_fp16_counts_skipped_steps():
    class Overflow(Callback):
        order = -3  # after MixedPrecisionCB's backward, before its step

        def after_backward(self, learn):
            if learn.iter == 1:
                learn.model.weight.grad[0, 0] = math.inf

    mp = MixedPrecisionCB("fp16")
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[mp, Overflow(), GradientClipCB(1.), TerminateOnNaNCB()])
    learn.fit(1)
    assert mp.skipped_steps == 1 and torch.isfinite(learn.model.weight).all()
    with pytest.raises(ValueError, match="dtype must be one of"):
        MixedPrecisionCB("int8")


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


def test_keyboard_interrupt_runs_every_cleanup_and_keeps_history():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    progress = ProgressCB()
    cbs = [MetricsCB(), progress, ActivationStatsCB(), StopAt(1, 1, KeyboardInterrupt)]
    learn = Learner(model, make_dls(), cbs=cbs)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert progress.view.batches is None and progress.view.epochs.disable
    assert [(r["epoch"], r["train"]) for r in learn.history] == [(0, "train"), (0, "eval")]
    learn.fit(1)  # the learner still works


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
    assert [(r["epoch"], r["train"]) for r in rows] == [("0", "train"), ("0", "eval"), ("1", "train"), ("1", "eval")]
    assert float(rows[0]["lr"]) == 0.1 and float(rows[0]["time"]) >= 0 and float(rows[0]["loss"]) > 0
    learn.fit(1)
    assert len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 2  # a new fit starts a new log


def test_profiler_report(capsys):
    profiler = ProfilerCB()
    learn = Learner(nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 2)), make_dls(n_train=40, bs=4),
                    cbs=[profiler, MetricsCB(), ProgressCB()])
    learn.fit(2)
    report = profiler.report()
    assert report["batches"] == 20 and report["samples_per_s"] > 0 and report["peak_memory_mb"] > 0
    assert set(report["times"]) == {"data", "forward", "loss", "backward", "step", "callbacks"}
    assert all(t >= 0 for t in report["times"].values()) and report["times"]["callbacks"] > 0
    assert report["total"] == pytest.approx(sum(report["times"].values()))
    assert "samples/s" in capsys.readouterr().out


def test_find_batch_size():
    dls = make_dls(n_train=300, bs=4)
    rows = find_batch_size(nn.Linear(3, 2), dls, candidates=(16, 64, 256, 1024), steps=2)
    assert [r["bs"] for r in rows] == [16, 64, 256] and all(r["samples_per_s"] > 0 for r in rows)


def test_train_1cycle_resumes_its_own_run(tmp_path):
    def run(cbs, resume=None):
        set_seed(0)
        from slowlearn import train_1cycle
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        return train_1cycle(model, lr=0.05, n_epochs=3, dls=make_dls(n_train=32, bs=8), cbs=cbs, resume=resume)

    straight = run([])
    run([CheckpointCB(tmp_path / "ckpt.pt"), StopAt(epoch=1, iter=3)])
    resumed = run([CheckpointCB(tmp_path / "ckpt.pt")], resume=tmp_path / "ckpt.pt")
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))
    assert resumed.recorder.recs["lr"] == straight.recorder.recs["lr"]


def test_resuming_a_one_cycle_run_with_other_epochs_is_refused_before_training(tmp_path):
    from slowlearn import train_1cycle
    dls = make_dls(n_train=32, bs=8)
    train_1cycle(nn.Linear(3, 2), lr=0.05, n_epochs=2, dls=dls, cbs=[CheckpointCB(tmp_path / "ckpt.pt"),
                                                                      StopAt(epoch=1, iter=1)])
    model = nn.Linear(3, 2)
    saved = read_checkpoint(tmp_path / "ckpt.pt")["model"]
    with pytest.raises(ValueError, match="made for 8 steps, but this fit has 12: resume with the n_epochs"):
        train_1cycle(model, lr=0.05, n_epochs=3, dls=dls, resume=tmp_path / "ckpt.pt")
    assert torch.equal(model.weight, saved["weight"])  # the checkpoint's weights, not one step further


def test_mid_epoch_resume_with_batch_augmentation_is_exact(tmp_path):
    from slowlearn.augment import BatchAugment

    def run(cbs=(), resume=None):
        set_seed(0)
        dls = make_dls(n_train=32, bs=4)
        dls.train.x = dls.train.x.reshape(32, 1, 1, 3).expand(32, 1, 3, 3).contiguous()
        dls.valid.x = dls.valid.x.reshape(-1, 1, 1, 3).expand(-1, 1, 3, 3).contiguous()
        dls.train.aug = BatchAugment(pad=1, flip=True)
        learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(9, 2)), dls, lr=0.1)
        return learn.fit(2, cbs=list(cbs), resume=resume)

    straight = run()
    run([CheckpointCB(tmp_path / "ckpt.pt", every=3), StopAt(epoch=0, iter=5)])
    assert read_checkpoint(tmp_path / "ckpt.pt")["iter"] == 3
    resumed = run(resume=tmp_path / "ckpt.pt")
    assert torch.equal(straight.model[1].weight, resumed.model[1].weight)
