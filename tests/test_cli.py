"""The command line's answer to a user's mistake: exit code 2 and one line, before anything is trained or
written; never a traceback."""
from pathlib import Path

import pytest
import torch
from torch import nn

from slowlearn import Callback, CancelFitException, CheckpointCB, Learner
from slowlearn.checkpoint import read_checkpoint
from slowlearn.cli import main

from conftest import make_dls
from test_image_data import make_folder


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's errors
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def refused(capsys, *argv) -> str:
    code, err = run(capsys, *argv)
    err = [line for line in err if line.strip() and not line.startswith("decoding ")]  # progress bars
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(("slowlearn: error: ", "slowlearn train: error: ")), err
    return err[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("pets"))


class StopAfterEpoch(Callback):
    order = 100  # after CheckpointCB has saved the epoch

    def after_epoch(self, learn):
        if not learn.training:
            raise CancelFitException()


@pytest.fixture(scope="module")
def linear_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a 3-epoch run of another model, interrupted after its first epoch."""
    path = tmp_path_factory.mktemp("ckpt") / "linear.pt"
    Learner(nn.Linear(3, 2), make_dls(), cbs=[CheckpointCB(path), StopAfterEpoch()]).fit(3)
    return path


@pytest.mark.parametrize("lr", ["nan", "inf", "-1", "0"])
def test_a_learning_rate_that_cannot_train_is_refused(capsys, lr):
    assert f"argument --lr: must be a positive finite number, got {lr}" in refused(capsys, "train", "--lr", lr)


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_out_pointing_at_a_file_is_refused_before_loading_data(capsys, tmp_path, command):
    (tmp_path / "taken").write_text("my notes")
    message = refused(capsys, command, "--data", str(tmp_path / "no-data-needed"), "--out", str(tmp_path / "taken"))
    assert f"--out {tmp_path / 'taken'}: that is a file; give a folder" in message
    assert (tmp_path / "taken").read_text() == "my notes"


def test_out_in_a_place_that_cannot_be_written_is_refused(capsys):
    if not Path("/sys").is_dir():
        pytest.skip("needs /sys, read-only even for root")
    assert "--out /sys/slowlearn-out: cannot write there" in refused(capsys, "train", "--out", "/sys/slowlearn-out")


def damaged(tmp_path, kind, linear_checkpoint) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        data = linear_checkpoint.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    elif kind == "malicious":
        torch.save({"format": 2, "payload": Evil(tmp_path / "pwned")}, path)
    elif kind == "weights only":
        torch.save(nn.Linear(3, 2).state_dict(), path)
    elif kind == "text":
        path.write_text("epoch 3\n")
    return path


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind, says", [("truncated", "is truncated or damaged"),
                                        ("malicious", "Refusing to load"),
                                        ("weights only", "holds only a model's weights"),
                                        ("text", "is not a torch checkpoint")])
def test_a_bad_checkpoint_to_resume_is_one_line_and_nothing_is_written(capsys, tmp_path, images, linear_checkpoint,
                                                                       kind, says):
    path = damaged(tmp_path, kind, linear_checkpoint)
    out = tmp_path / "out"
    message = refused(capsys, "train", "--data", str(images), "--out", str(out), "--resume", str(path))
    assert message.startswith(f"slowlearn: error: --resume {path}: ") and says in message
    assert list(out.iterdir()) == [] and not (tmp_path / "pwned").exists()


def test_resuming_with_more_epochs_continues_the_run(capsys, tmp_path, images):
    out = tmp_path / "out"
    assert main(["train", "--data", str(images), "--bs", "8", "--epochs", "1", "--out", str(out)]) == 0
    code = main(["train", "--data", str(images), "--bs", "8", "--epochs", "2", "--out", str(out),
                 "--resume", str(out / "checkpoint.pt")])
    assert code == 0 and "Traceback" not in capsys.readouterr().err
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 2 * 2  # both epochs' rows, once


def test_resuming_a_finished_run_is_refused(capsys, tmp_path):
    learn = Learner(nn.Linear(3, 2), make_dls())
    learn.fit(2)
    learn.save(tmp_path / "done.pt")
    message = refused(capsys, "train", "--epochs", "2", "--out", str(tmp_path), "--resume", str(tmp_path / "done.pt"))
    assert "that run has already trained 2 epochs, so --epochs 2 would train nothing" in message


def test_resuming_another_models_checkpoint_is_refused_before_training(capsys, tmp_path, images, linear_checkpoint):
    message = refused(capsys, "train", "--data", str(images), "--epochs", "3", "--out", str(tmp_path / "out"),
                      "--resume", str(linear_checkpoint))
    assert f"--resume {linear_checkpoint}: {linear_checkpoint} was saved from another model, so nothing was loaded" \
        in message
    assert not (tmp_path / "out" / "metrics.csv").exists()
