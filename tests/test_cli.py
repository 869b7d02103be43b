"""The command line as a user meets it: its version, lr-find's options, errors in CLI terms, logs that fit a file."""
import subprocess
import sys
import urllib.error
from contextlib import nullcontext

import pytest

from slowlearn import cli
from test_image_data import make_folder

ESCAPES = ("\r", "\x1b")


def slowlearn(*args, timeout=300):
    result = subprocess.run([sys.executable, "-m", "slowlearn", *map(str, args)], capture_output=True, timeout=timeout)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()  # not text=True: it turns \r into \n
    return result


def test_version():
    from importlib.metadata import version
    result = slowlearn("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"slowlearn {version('slowlearn')}"


def test_train_into_a_log_file_writes_one_line_per_epoch_and_phase(tmp_path):
    data = make_folder(tmp_path / "pets")
    result = slowlearn("train", "--data", data, "--epochs", 2, "--bs", 4, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stdout + result.stderr for c in ESCAPES)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fit: 2 epochs of 3 training and 2 validation batches")
    assert lines[1].split() == ["accuracy", "loss", "epoch", "phase"]
    assert [line.split()[-2:] for line in lines[2:6]] == [["0", "train"], ["0", "valid"], ["1", "train"],
                                                         ["1", "valid"]]
    assert lines[6].startswith("Wrote to") and len(lines) == 7


def test_train_verbose_draws_bars_even_into_a_file(tmp_path):
    data = make_folder(tmp_path / "pets")
    result = slowlearn("train", "--data", data, "--epochs", 1, "--bs", 4, "--out", tmp_path / "out", "--verbose")
    assert result.returncode == 0 and "\r" in result.stderr


@pytest.mark.parametrize("flag, verbose", [([], None), (["--quiet"], 2), (["--verbose"], 1)])
def test_train_quiet_and_verbose_set_progress_verbosity(flag, verbose):
    assert cli.parser().parse_args(["train", *flag]).verbose == verbose


def test_lr_find_takes_the_sweeps_options(tmp_path):
    data = make_folder(tmp_path / "pets")
    result = slowlearn("lr-find", "--data", data, "--bs", 4, "--num-it", 8, "--start-lr", 1e-4, "--end-lr", 1,
                       "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Suggested learning rate" in result.stdout and (tmp_path / "lr_find.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--lr", "1"], "unrecognized arguments: --lr 1"),
    (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr 1 must be below --end-lr 0.1"),
    (["--num-it", "1"], "--num-it 1: the sweep needs at least 2 batches"),
])
def test_lr_find_bad_options_give_one_line(args, message, capsys):
    with pytest.raises(SystemExit) if "unrecognized" in message else nullcontext():
        code = cli.main(["lr-find", *args])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_cifar10_is_reported_in_cli_terms(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "empty"))
    assert cli.main(["train", "--data", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slowlearn: error: --data cifar10: CIFAR-10 was not found under")
    assert "--data PATH" in err and "SLOWLEARN_DATA" in err and "root=" not in err



