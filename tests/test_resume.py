"""Resuming: a file-backed run killed mid-epoch (SIGKILL) or stopped by SIGTERM and resumed in a new process ends
with the uninterrupted run's weights, bitwise, with 0 and 2 worker processes; resume="auto" in fit,
fit_one_cycle, fine_tune and train_1cycle; what a resume with other workers or processes is told."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_dls
from images import data_folder, make_folder  # noqa: F401 (data_folder: an autouse fixture)
from torch import nn

from slowlearn import Callback, CheckpointCB, CheckpointError, EarlyStoppingCB, Learner, MetricsCB, Preempted, set_seed
from slowlearn import checkpoint as checkpoint_module
from slowlearn.train import train_1cycle

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import files_run  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """204 PNGs, 8 x 8 RGB, in train/ and valid/: 7 training batches of 16 an epoch."""
    return make_folder(tmp_path_factory.mktemp("resume") / "pets", n_per_class=34, size=8, splits=("train", "valid"))


def run(images, out, *extra, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE / "files_run.py"), str(images), str(out), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


def weights(out, rank=0):
    return torch.load(Path(out) / "results" / f"rank{rank}.pt", weights_only=True)["weights"]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def uninterrupted(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run(images, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no checkpoint at" in result.stdout and "so this is a new run" in result.stdout
    return weights(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_killed_mid_epoch_resumes_exactly_in_a_new_process(images, uninterrupted, tmp_path, workers):
    killed = run(images, tmp_path, "--workers", str(workers), "--kill", "1.2")  # after batch 3 of epoch 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "results").exists()
    resumed = run(images, tmp_path, "--workers", str(workers))  # the same command: resume="auto"
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "at epoch 1, batch 2" in resumed.stdout  # every=2 batches
    assert same(weights(tmp_path), uninterrupted)  # and with 2 workers, the run of 0 workers


def test_sigterm_saves_at_the_next_step_exits_non_zero_and_resumes_exactly(images, uninterrupted, tmp_path):
    stopped = run(images, tmp_path, "--sigterm", "0.2")  # during batch 3 of epoch 0
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"SIGTERM received: saved a checkpoint after batch 3 of epoch 0 to {tmp_path / 'ckpt.pt'}" in stopped.stdout
    assert "Traceback" not in stopped.stderr
    resumed = run(images, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 0, batch 3" in resumed.stdout
    assert same(weights(tmp_path), uninterrupted)


class Killed(Exception):
    pass


class StopAt(Callback):
    """Ends the program's training (raises Killed) after training batch `iter` of `epoch` (of the `fit`-th fit,
    for fine_tune)."""

    def __init__(self, epoch, iter, fit=0):
        self.at, self.fit, self.fits = (epoch, iter), fit, -1

    def before_fit(self, learn):
        self.fits += 1

    def after_batch(self, learn):
        if learn.training and self.fits == self.fit and (learn.epoch, learn.iter) == self.at:
            raise Killed()


def tiny_learner(path, cbs=(), every=2):
    set_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    return Learner(model, make_dls(n_train=40, n_valid=8, bs=4, unseeded=True), lr=0.05,
                   cbs=[CheckpointCB(path, every=every), *cbs], opt_func=torch.optim.AdamW)


def params(learn):
    return [p.detach().clone() for p in learn.model.parameters()]


def test_resume_auto_starts_afresh_then_resumes_saying_which(tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    straight = tiny_learner(tmp_path / "straight.pt").fit_one_cycle(3, resume="auto")
    with pytest.raises(Killed):
        tiny_learner(path, [StopAt(1, 5)]).fit_one_cycle(3, resume="auto")
    assert "resume='auto': no checkpoint at" in capsys.readouterr().out
    resumed = tiny_learner(path).fit_one_cycle(3, resume="auto")
    assert f"resume='auto': resuming from {path} at epoch 1, batch 4" in capsys.readouterr().out
    assert same(params(resumed), params(straight)) and resumed.history == straight.history


def test_resume_auto_needs_one_checkpoint_cb_and_never_replaces_a_damaged_file(tmp_path):
    learn = tiny_learner(tmp_path / "ckpt.pt")
    learn.cbs = []
    with pytest.raises(CheckpointError, match="resume='auto' resumes from the last checkpoint that the run's "
                                              "CheckpointCB writes, but this fit has no CheckpointCB"):
        learn.fit(1, resume="auto")
    best_only = CheckpointCB(tmp_path / "best.pt", monitor="train_loss")
    with pytest.raises(CheckpointError, match=r"keep='best' keeps only the best epoch: use keep='both'"):
        learn.fit(1, cbs=[best_only], resume="auto")
    (tmp_path / "ckpt.pt").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        tiny_learner(tmp_path / "ckpt.pt").fit(1, resume="auto")
    assert (tmp_path / "ckpt.pt").read_bytes() == b"damaged"


@pytest.mark.parametrize("stop", [(0, 1, 3), (1, 1, 4), (1, 0, 2)], ids=["frozen stage", "unfrozen stage",
                                                                         "between the stages"])
def test_fine_tune_resume_auto_continues_the_stage_it_was_in(tmp_path, stop):
    fit, epoch, iter = stop
    straight = tiny_learner(tmp_path / "straight.pt", every="epoch")
    straight.fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        tiny_learner(path, [StopAt(epoch, iter, fit)], every="epoch").fine_tune(2, base_lr=0.05, freeze_epochs=2,
                                                                                resume="auto")
    resumed = tiny_learner(path, every="epoch")
    resumed.fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
    assert same(params(resumed), params(straight))


@pytest.mark.parametrize("stop", [(0, 1, 3), (1, 1, 4), (1, 0, 2)], ids=["frozen stage", "unfrozen stage",
                                                                         "between the stages"])
def test_fine_tune_resume_auto_of_a_model_that_freezing_leaves_as_it_is_continues_the_stage_it_was_in(tmp_path, stop):
    """One param group: freeze() freezes nothing, so a checkpoint's frozen layers could not tell the stages apart.
    A frozen-stage checkpoint was taken for an unfrozen one: the run skipped epochs, or refused to go on."""
    def learner(path, cbs=()):
        learn = tiny_learner(path, [MetricsCB(), *cbs], every="epoch")
        learn.splitter = lambda model: [list(model.parameters())]
        return learn

    fit, epoch, iter = stop
    straight = learner(tmp_path / "straight.pt")
    straight.fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        learner(path, [StopAt(epoch, iter, fit)]).fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
    resumed = learner(path)
    resumed.fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
    assert same(params(resumed), params(straight)) and resumed.history == straight.history


class BestAtFitStart(Callback):
    """What a CheckpointCB holds as its best when each fit starts."""

    def __init__(self, saver):
        self.saver, self.seen = saver, []

    def before_fit(self, learn):
        self.seen.append(self.saver.best)


def test_fine_tune_resume_auto_between_the_stages_keeps_what_callbacks_carried_over(tmp_path):
    """Killed in the unfrozen stage before its first checkpoint, the run goes on from the frozen stage's last one:
    the callbacks must hold what they held after the frozen stage (CheckpointCB's best), not start afresh."""
    def run(path, stop=()):
        saver = CheckpointCB(path, keep="both", monitor="valid_loss")
        probe = BestAtFitStart(saver)
        learn = tiny_learner(path / "last.pt", [MetricsCB(), probe, *stop], every="epoch")
        learn.cbs = [saver if isinstance(cb, CheckpointCB) else cb for cb in learn.cbs]
        learn.fine_tune(2, base_lr=0.05, freeze_epochs=2, resume="auto")
        return probe.seen, saver.best

    straight_seen, straight_best = run(tmp_path / "straight")
    with pytest.raises(Killed):
        run(tmp_path / "run", [StopAt(0, 2, fit=1)])
    resumed_seen, resumed_best = run(tmp_path / "run")
    assert straight_seen[1] is not None and resumed_seen == straight_seen[1:]  # the unfrozen fit's start
    assert resumed_best == straight_best


def test_fine_tune_resume_auto_after_an_early_stopped_frozen_stage_starts_the_unfrozen_one(tmp_path):
    def learner(path, cbs=()):  # each stage stops after 2 epochs: the first always improves, the second cannot
        return tiny_learner(path, [MetricsCB(), EarlyStoppingCB("valid_loss", patience=1, min_delta=10.), *cbs],
                            every="epoch")

    straight = learner(tmp_path / "straight.pt").fine_tune(3, base_lr=0.05, freeze_epochs=3)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        learner(path, [StopAt(0, 1, fit=1)]).fine_tune(3, base_lr=0.05, freeze_epochs=3, resume="auto")
    resumed = learner(path).fine_tune(3, base_lr=0.05, freeze_epochs=3, resume="auto")
    assert same(params(resumed), params(straight)) and resumed.history == straight.history  # 2 epochs a stage


def test_train_1cycle_takes_resume_auto(tmp_path):
    def run(stop=()):
        set_seed(0)
        return train_1cycle(nn.Linear(3, 2), lr=0.05, n_epochs=2, dls=make_dls(n_train=40, bs=4, unseeded=True),
                            cbs=[CheckpointCB(tmp_path / "ckpt.pt", every=3), *stop], resume="auto", verbose=0,
                            precision="fp32")
    straight = params(run())
    (tmp_path / "ckpt.pt").unlink()
    with pytest.raises(Killed):
        run([StopAt(1, 4)])
    assert same(params(run()), straight)


def file_backed_learner(images, tmp_path, workers, cbs=()):
    return files_run.learner(images, tmp_path, workers, cbs)


def test_a_mid_epoch_resume_with_other_workers_or_processes_is_refused_before_anything_changes(images, tmp_path,
                                                                                               monkeypatch):
    with pytest.raises(Killed):
        file_backed_learner(images, tmp_path, 0, [StopAt(0, 4)]).fit(2)
    learn = file_backed_learner(images, tmp_path, 2)
    before = params(learn)
    with pytest.raises(CheckpointError, match=r"ckpt.pt: it was saved mid-epoch by a file-backed loader with "
                                              r"num_workers=0, .* resume with num_workers=0 \(--workers 0"):
        learn.fit(2, resume="auto")
    assert same(params(learn), before)  # refused before the weights were loaded
    monkeypatch.setattr(checkpoint_module, "world_size", lambda: 2)
    with pytest.raises(CheckpointError, match=r"saved mid-epoch by a run of 1 process, .* this run has 2: resume "
                                              r"with 1"):
        file_backed_learner(images, tmp_path, 0).fit(2, resume="auto")


def test_sigterm_handler_is_put_back_after_every_fit(tmp_path):
    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        learn = tiny_learner(tmp_path / "ckpt.pt")
        learn.fit(1)
        assert signal.getsignal(signal.SIGTERM) is mine
        with pytest.raises(RuntimeError, match="boom"):
            learn.fit(1, cbs=[Boom()])
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


class Boom(Callback):
    def after_batch(self, learn):
        raise RuntimeError("boom")


def test_sigterm_in_process_saves_and_raises_preempted(tmp_path, capsys):
    class Term(Callback):
        def after_batch(self, learn):
            if learn.training and (learn.epoch, learn.iter) == (0, 4):
                os.kill(os.getpid(), signal.SIGTERM)
    learn = tiny_learner(tmp_path / "ckpt.pt", [Term()])
    with pytest.raises(Preempted) as stopped:
        learn.fit(2)
    assert stopped.value.code == 143
    assert "SIGTERM received: saved a checkpoint after batch 5 of epoch 0" in capsys.readouterr().out
    state = checkpoint_module.read_checkpoint(tmp_path / "ckpt.pt")
    assert (state["epoch"], state["iter"]) == (0, 5)


def test_sigterm_with_a_shuffling_torch_dataloader_waits_for_the_end_of_the_epoch(tmp_path, capsys):
    from torch.utils.data import DataLoader, TensorDataset

    from slowlearn import DataLoaders
    class Term(Callback):
        def after_batch(self, learn):
            if learn.training and (learn.epoch, learn.iter) == (0, 1):
                os.kill(os.getpid(), signal.SIGTERM)
    data = TensorDataset(torch.randn(24, 3), torch.randint(0, 2, (24,)))
    dls = DataLoaders(DataLoader(data, 4, shuffle=True), DataLoader(data, 8))
    learn = Learner(nn.Linear(3, 2), dls, cbs=[CheckpointCB(tmp_path / "ckpt.pt"), Term()])
    with pytest.raises(Preempted):
        learn.fit(3)
    assert "SIGTERM received: saved a checkpoint at the end of epoch 0" in capsys.readouterr().out
    state = checkpoint_module.read_checkpoint(tmp_path / "ckpt.pt")
    assert (state["epoch"], state["iter"]) == (1, 0)  # a new order next epoch: exact, unlike mid-epoch


def test_a_mid_epoch_checkpoint_of_in_memory_images_resumes_file_backed_exactly(images, tmp_path):
    from slowlearn import image_folder

    def run(in_memory, cbs=(), resume=None):
        loading = {} if in_memory else {"in_memory": False, "num_workers": 0}
        dls = image_folder(images, bs=16, device="cpu", verbose=False, **loading)
        learn = Learner(files_run.model(), dls, lr=0.05, cbs=[CheckpointCB(tmp_path / "ckpt.pt", every=2), *cbs],
                        opt_func=torch.optim.AdamW)
        learn.fit_one_cycle(2, resume=resume)
        return params(learn)
    straight = run(in_memory=True)
    with pytest.raises(Killed):
        run(in_memory=True, cbs=[StopAt(1, 4)])
    assert same(run(in_memory=False, resume=tmp_path / "ckpt.pt"), straight)  # the same order, skipped undecoded
