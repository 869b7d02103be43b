"""Training on the real Fashion-MNIST (skipped, with the reason, where the data is not installed)."""
import subprocess
import sys

import pytest

from slowlearn import MomentumCB, get_kaiming_initialized_model, load_learner, set_seed, train, train_1cycle
from slowlearn.optim import Adam, MomentumSGD


def test_seed_recipe_reaches_84_percent_in_one_epoch(fashion_folder):
    set_seed(42)
    learn = train(get_kaiming_initialized_model(), lr=0.2, n_epochs=1, cbs=[MomentumCB()])
    valid = [row for row in learn.history if row["phase"] == "valid"]
    assert len(valid) == 1 and valid[0]["accuracy"] >= 0.84


def test_cli_train_prints_table_and_writes_its_outputs(fashion_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "slowlearn", "train", "--epochs", "1", "--out", str(tmp_path),
                             "--tensorboard"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    chosen, start, header = result.stdout.splitlines()[:3]
    assert chosen.startswith("Training in fp32, contiguous (a narrow model")  # what precision="auto" chose
    assert start.startswith("fit: 1 epoch of 118 training and 10 validation batches")
    assert header.split() == ["accuracy", "loss", "epoch", "phase"]
    for name in ("schedule.png", "loss.png", "metrics.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 1000 and name in result.stdout
    assert (tmp_path / "checkpoint.pt").exists() and len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    assert "model.pt2" in result.stdout and load_learner(tmp_path / "model.pt2").classes[0] == "T-shirt/top"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--opt", "lion"], "argument --opt: invalid choice: 'lion'"),
    (["--data", "/no/such/folder"], "--data /no/such/folder: not fashion_mnist, cifar10, or a readable folder"),
    (["--resume", "/no/such.pt"], "--resume /no/such.pt: no such checkpoint file"),
])
def test_cli_bad_values_give_one_line_and_exit_code_2(args, message):
    result = subprocess.run([sys.executable, "-m", "slowlearn", "train", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("opt_func, lr", [(MomentumSGD, 1.25), (Adam, 1e-2)], ids=["MomentumSGD", "Adam"])
def test_seed_optimizers_reach_85_percent_in_three_epochs(fashion_folder, opt_func, lr):
    set_seed(0)
    learn = train(get_kaiming_initialized_model(), lr=lr, n_epochs=3, opt_func=opt_func)
    assert learn.history[-1]["phase"] == "valid" and learn.history[-1]["accuracy"] >= 0.85


def test_train_1cycle_seed_recipe_reaches_90_percent(fashion_folder):
    # The recipe sits at the DESIGN target of 90.5 %: with the stateless one-cycle schedule, set_seed(0..3)
    # gives 90.24, 90.49, 90.41, 90.75 % (mean 90.47 %, as before it), and benchmarks/one_cycle.py's 4 seeds
    # 90.59, 91.00, 90.44, 90.81 % (mean 90.71 %) with a plain loop on the same batches giving the same numbers.
    # One seed is a coin flip around 90.5 %; a broken schedule or optimizer lands far below 90 %.
    set_seed(1)
    learn = train_1cycle(get_kaiming_initialized_model(), lr=5e-2, n_epochs=6)
    assert learn.history[-1]["phase"] == "valid" and learn.history[-1]["accuracy"] >= 0.90
    assert len(learn.recorder.recs["lr"]) == 6 * len(learn.dls.train)


def test_seed_cnn_reaches_85_percent_in_one_epoch_of_train_1cycle(fashion_folder):
    set_seed(0)  # seeds 0, 1, 2: 85.38, 85.65, 85.73 %
    learn = train_1cycle(get_kaiming_initialized_model(), n_epochs=1)
    assert learn.history[-1]["phase"] == "valid" and learn.history[-1]["accuracy"] >= 0.85


def test_bf16_mixed_precision_on_cpu_is_within_one_point_of_fp32(fashion_folder):
    from slowlearn import MixedPrecisionCB, fashion_mnist

    dls = fashion_mnist()
    accuracies = []
    for cbs in ([], [MixedPrecisionCB("bf16")]):
        set_seed(0)
        accuracies.append(train_1cycle(get_kaiming_initialized_model(), n_epochs=1, dls=dls, cbs=cbs)
                          .history[-1]["accuracy"])
    assert abs(accuracies[0] - accuracies[1]) <= 0.01
