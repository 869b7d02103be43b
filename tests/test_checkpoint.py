import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slowlearn import CheckpointCB, DataLoaders, Learner, MetricsCB, set_seed
from slowlearn import checkpoint as checkpoint_module
from slowlearn.callbacks import latest_metric
from slowlearn.checkpoint import read_checkpoint

from conftest import StopAt, make_dls
from resume_run import N_BATCHES, make_learner, weights

HERE = Path(__file__).parent


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
    assert len(rows) == 8 and [r["phase"] for r in rows[:2]] == ["train", "valid"]  # 4 epochs x 2 phases


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


def test_histories_of_older_checkpoints_read_with_the_phase_names_of_today(tmp_path):
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB()])
    learn.fit(1)
    learn.save(tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    state["history"] = [{"loss": 0.7, "epoch": 0, "train": "train"}, {"loss": 0.6, "epoch": 0, "train": "eval"}]
    torch.save(state, tmp_path / "old.pt")  # as slowlearn wrote it before the phases were "train"/"valid"
    old = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB()]).load(tmp_path / "old.pt")
    assert old.history == [{"loss": 0.7, "epoch": 0, "phase": "train"}, {"loss": 0.6, "epoch": 0, "phase": "valid"}]
    old.fit(2, resume=tmp_path / "old.pt")
    assert [r["phase"] for r in old.history] == ["train", "valid"] * 2
    assert latest_metric(old, "valid_loss") == old.history[-1]["loss"]


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
