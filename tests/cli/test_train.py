"""The command line as a user meets it: its version, lr-find's options, errors in CLI terms, logs that fit a file;
and its answer to a user's mistake: exit code 2 and one line, before anything is trained or written, never a
traceback."""
import subprocess
import sys
import urllib.error
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import make_dls
from images import make_folder
from torch import nn

from slowlearn import Callback, CancelFitException, CheckpointCB, Learner, cli, load_learner
from slowlearn import checkpoint as checkpoint_module
from slowlearn.checkpoint import read_checkpoint
from slowlearn.cli import main

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
    assert lines[0].startswith("images per class")  # the data's table comes first, then the run
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("fit:")):]
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


def test_train_mlflow_logs_the_run_and_its_files(tmp_path, capsys):
    from mlflow import MlflowClient
    store, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    images = make_folder(tmp_path / "pets")
    argv = ["train", "--data", str(images), "--epochs", "1", "--bs", "8", "--out", str(out), "--mlflow", store]
    assert main(argv) == 0
    assert "MLflow run " in capsys.readouterr().out
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("slowlearn").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "out" and run.data.params["n_epochs"] == "1"
    assert {"train/step_loss", "valid/accuracy", "final/valid_loss"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "metrics.csv", "model.pt2", "schedule.png", "loss.png", "metrics.png", "confusion_matrix.png"}


def test_train_mlflow_takes_the_default_store_or_a_uri():
    assert cli.parser().parse_args(["train", "--mlflow"]).mlflow == "sqlite:///runs/mlflow.db"
    assert cli.parser().parse_args(["train", "--mlflow", "http://host:5000"]).mlflow == "http://host:5000"
    assert cli.parser().parse_args(["train"]).mlflow is None


def test_train_mlflow_without_the_package_is_refused_before_training(capsys, tmp_path, monkeypatch):
    from slowlearn.callbacks import logging
    monkeypatch.setattr(logging, "_has", lambda module: False)
    message = refused(capsys, "train", "--out", str(tmp_path / "out"), "--mlflow")
    assert "--mlflow: MLflowCB needs the mlflow package: pip install 'slowlearn[mlflow]'" in message
    assert not (tmp_path / "out" / "metrics.csv").exists()


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


@pytest.mark.parametrize("command", ["train", "lr-find", "export"])
def test_the_seed_cnn_is_refused_for_images_it_does_not_reduce_to_one_logit_per_class(capsys, tmp_path, images,
                                                                                       command, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("images decoded before the options were checked")
    monkeypatch.setattr("slowlearn.data.images.decode_images", no_decoding)
    source = [str(tmp_path)] if command == "export" else ["--out", str(tmp_path / "out")]
    (tmp_path / "checkpoint.pt").write_bytes(b"never read")
    message = refused(capsys, command, *source, "--data", str(images), "--size", "64")  # default --model cnn
    assert "--model cnn: the seed CNN takes images up to 32x32, these are 64x64: use --model resnet" in message


def test_the_seed_cnn_is_refused_for_large_images_found_when_decoding(capsys, tmp_path):
    make_folder(tmp_path / "big", n_per_class=2, size=40)
    message = refused(capsys, "train", "--data", str(tmp_path / "big"), "--out", str(tmp_path / "out"))
    assert "the seed CNN takes images up to 32x32, these are 40x40" in message


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
    assert not out.exists() and not (tmp_path / "pwned").exists()


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


def test_a_recipe_refuses_the_options_it_would_ignore_naming_them(capsys, monkeypatch):
    """`--recipe fashion_mnist --data pets/ --epochs 1` used to train Fashion-MNIST for 5 epochs."""
    from slowlearn.recipes import RECIPES

    def trains(**kwargs):
        raise AssertionError("the recipe trained, ignoring the options")
    for name in RECIPES:
        monkeypatch.setitem(RECIPES, name, trains)
    message = refused(capsys, "train", "--recipe", "fashion_mnist", "--data", "pets/", "--epochs", "1")
    assert ("--recipe fashion_mnist brings its own data, model, optimizer, schedule and epochs, so it would ignore "
            "--data, --epochs: drop them, or train without --recipe") in message
    assert "would ignore --bs: drop it" in refused(capsys, "train", "--recipe", "cifar10", "--bs", "512")  # a default


@pytest.mark.parametrize("argv, message", [
    (["--lr", "3e"], "argument --lr: '3e' is not a number"),
    (["--bs", "6.5"], "argument --bs: '6.5' is not a whole number"),
    (["--seed", "x"], "argument --seed: 'x' is not a whole number"),
    (["--valid-pct", "a fifth"], "argument --valid-pct: 'a fifth' is not a number"),
    (["--batch-size", "64"], "unrecognized arguments: --batch-size 64; did you mean --bs?"),
    (["--learning-rate", "0.1", "--num-epochs", "2"],
     "did you mean --lr for --learning-rate, --epochs for --num-epochs?"),
])
def test_bad_options_are_named_in_command_line_terms(capsys, argv, message):
    """They used to read "invalid positive_float value: '3e'" (an internal name), and an unknown option got no
    suggestion."""
    line = refused(capsys, "train", *argv)
    assert message in line and "positive_" not in line and "_fraction" not in line


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory, images):
    """`slowlearn train` with --bs 4 --lr 0.05 for 2 epochs: its folder."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(images), "--bs", "4", "--lr", "0.05", "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_the_checkpoint_records_the_runs_options(two_epoch_run, images):
    options = read_checkpoint(two_epoch_run / "checkpoint.pt")["callbacks"]["RunOptionsCB"]["options"]
    assert options["bs"] == 4 and options["lr"] == 0.05 and options["epochs"] == 2 and options["seed"] == 42
    assert options["data"] == str(images.resolve()) and options["model"] == "cnn" and options["size"] is None


@pytest.mark.parametrize("argv, message", [
    (["--bs", "8"], "the run was trained with --bs 4, and a resumed run is the same run: drop --bs or pass --bs 4"),
    (["--bs", "512"], "drop --bs or pass --bs 4"),  # the default, asked for: refused too
    (["--lr", "0.1"], "the run was trained with --lr 0.05"),
    (["--model", "resnet"], "the run was trained with --model cnn"),
    (["--size", "8"], "the run was trained with no --size, and a resumed run is the same run: drop --size"),
])
def test_resume_refuses_an_option_the_run_was_not_trained_with(capsys, two_epoch_run, tmp_path, argv, message):
    """A run resumed without its --bs 64 used to go on at batch size 512, silently."""
    line = refused(capsys, "train", "--resume", str(two_epoch_run / "checkpoint.pt"), "--epochs", "3",
                   "--out", str(tmp_path), *argv)
    assert message in line and not list(tmp_path.iterdir())


def test_resume_reuses_the_runs_options_and_says_where_it_resumes(capsys, two_epoch_run, images, tmp_path):
    """`--resume <a 2-epoch run> --epochs 4` used to exit 0 in a way a user could not tell from a fresh run."""
    checkpoint = two_epoch_run / "checkpoint.pt"
    message = refused(capsys, "train", "--resume", str(checkpoint), "--out", str(tmp_path))  # its --epochs 2: done
    assert "that run has already trained 2 epochs, so --epochs 2 would train nothing" in message
    assert main(["train", "--resume", str(checkpoint), "--epochs", "3", "--out", str(tmp_path / "more"),
                 "--data", str(images), "--bs", "4"]) == 0  # the same values: fine
    out = capsys.readouterr().out
    assert (f"Resuming the run of {checkpoint} from epoch 2 of 3 (the run was for 2: its schedule now spans 3): "
            f"epochs 2 to 2 follow") in out
    assert "fit: 3 epochs of 3 training and 2 validation batches" in out  # 12 images in batches of 4, not 512
    state = read_checkpoint(tmp_path / "more" / "checkpoint.pt")
    assert state["epoch"] == 3 and state["callbacks"]["RunOptionsCB"]["options"]["lr"] == 0.05


def test_checkpoint_every_and_resume_auto(capsys, tmp_path, images):
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--resume", "auto", "--no-in-memory",
              "--workers", "0"]
    saves = []
    real_save = checkpoint_module.write_atomically
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "write_atomically", lambda state, path: saves.append(
            (state["epoch"], state["iter"])) or real_save(state, path))
        assert main([*common, "--epochs", "1", "--checkpoint-every", "2"]) == 0
    assert "resume='auto': no checkpoint at" in capsys.readouterr().out
    assert saves == [(0, 2), (1, 0)]  # after 2 training batches (of 2), and at the end of the epoch
    assert main([*common, "--epochs", "2"]) == 0
    said = capsys.readouterr().out
    assert f"resume='auto': resuming from {out / 'checkpoint.pt'} at epoch 1" in said
    assert f"Resuming the run of {out / 'checkpoint.pt'} from epoch 1 of 2" in said  # it read "the run of auto"
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2


@pytest.mark.parametrize("given, then", [([], ""), (["--force"], " in place of --force")], ids=["plain", "forced"])
def test_ctrl_c_is_one_line_saying_how_to_go_on_exit_code_130(capsys, tmp_path, images, given, then):
    """A --force run (`make demo`) was told "the same command and --resume auto", which --force refuses."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--no-in-memory", "--workers", "0",
              "--epochs", "2"]
    real_save = checkpoint_module.write_atomically

    def ctrl_c_after_saving(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "write_atomically", ctrl_c_after_saving)
        code, err = run(capsys, *common, *given)
    assert code == 130 and err[-1] == (f"slowlearn: interrupted; {out / 'checkpoint.pt'} holds the run up to its "
                                       f"last save (each epoch's end, or every --checkpoint-every batches): "
                                       f"continue it with the same command and --resume auto{then}")
    assert main([*common, "--resume", "auto"]) == 0
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_ctrl_c_before_a_save_or_of_a_run_that_starts_afresh_tells_a_command_that_out_then_takes(capsys, tmp_path,
                                                                                                   images):
    """'Run the command again', said Ctrl-C where nothing was saved yet (but the first epoch's rows were in
    metrics.csv) and of a recipe that had saved: the same command then refused that --out as holding a run."""
    from slowlearn.recipes import RECIPES
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--no-in-memory", "--workers", "0"]

    def ctrl_c(state, path):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "write_atomically", ctrl_c)  # at the first epoch's end: its rows written
        code, err = run(capsys, *common)
    assert code == 130 and err[-1] == ("slowlearn: interrupted; nothing was saved yet: run the command again with "
                                       "--force")
    assert main([*common, "--force"]) == 0

    def recipe_saves_then_stops(**kwargs):
        (tmp_path / "recipe" / "checkpoint.pt").write_bytes(b"its first epoch")
        raise KeyboardInterrupt

    for given, how in (([], " with --force"), (["--force"], " (without --resume)")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(RECIPES, "fashion_mnist", recipe_saves_then_stops)
            code, err = run(capsys, "train", "--recipe", "fashion_mnist", "--out", str(tmp_path / "recipe"), *given)
        assert code == 130 and err[-1] == f"slowlearn: interrupted; this kind of run starts afresh: run the command " \
                                          f"again{how}"
        (tmp_path / "recipe" / "checkpoint.pt").unlink()


def test_ctrl_c_before_a_run_saves_does_not_send_to_an_earlier_runs_checkpoint(capsys, tmp_path, images):
    """--out's checkpoint.pt of a finished run, then the same command with more epochs, stopped before its first
    save: that checkpoint is the earlier run's, and --resume auto would go on from it, not from this run."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--no-in-memory", "--workers", "0"]
    assert main([*common, "--epochs", "1"]) == 0

    def ctrl_c(learn):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Learner, "_step", ctrl_c)
        code, err = run(capsys, *common, "--epochs", "2", "--force")
    assert code == 130 and err[-1] == "slowlearn: interrupted; nothing was saved yet: run the command again"


def test_ctrl_c_before_the_first_save_of_a_run_resumed_into_another_out_tells_a_command_it_then_takes(capsys,
                                                                                                       tmp_path,
                                                                                                       images):
    """--resume a/checkpoint.pt --out b (b empty), stopped before its first save with its first rows in b's
    metrics.csv: 'run the command again', said Ctrl-C, and the same command then refused b as holding a run."""
    common = ["train", "--data", str(images), "--bs", "8", "--no-in-memory", "--workers", "0"]
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "b"
    resumed = [*common, "--epochs", "2", "--resume", str(tmp_path / "a" / "checkpoint.pt"), "--out", str(out)]

    def ctrl_c(state, path):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "write_atomically", ctrl_c)  # at the resumed epoch's end: its rows written
        code, err = run(capsys, *resumed)
    assert code == 130 and err[-1] == (f"slowlearn: interrupted; nothing was saved yet: delete this run's metrics.csv "
                                       f"in --out {out} and run the command again (or give another --out)")
    (out / "metrics.csv").unlink()
    assert main(resumed) == 0
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_train_a_pretrained_torchvision_model_then_export_and_predict(capsys, tmp_path, torchvision_cache):
    torchvision_cache("resnet18")
    data = make_folder(tmp_path / "pets", n_per_class=4, size=16)
    with pytest.warns(UserWarning, match="size=224"):
        code, out = main(["train", "--data", str(data), "--model", "resnet18", "--pretrained", "--epochs", "1",
                          "--bs", "4", "--precision", "fp32", "--out", str(tmp_path / "run")]), capsys.readouterr().out
    assert code == 0, out
    starts = [line for line in out.splitlines() if line.startswith("fit:")]  # fine-tuning: frozen, then unfrozen
    assert len(starts) == 2 and starts[0].endswith("AdamW at lrs 0.0002, 0.0002, 0.002 (param groups 1, 2 of 3 frozen)")
    assert starts[1].endswith("AdamW at lrs 1e-05, 0.0001, 0.001")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5  # the header, then both stages' train and valid rows
    predictor = load_learner(tmp_path / "run" / "model.pt2", device="cpu")
    assert predictor.preprocessing.mean == pytest.approx([0.485, 0.456, 0.406])  # the weights' statistics
    code = main(["export", str(tmp_path / "run"), "--data", str(data), "--model", "resnet18", "--pretrained",
                 "--out", str(tmp_path / "again.pt2")])
    assert code == 0
    files = sorted((data / "test").rglob("*.png"))
    torch.testing.assert_close(load_learner(tmp_path / "again.pt2", device="cpu").predict_batch(files).probs,
                               predictor.predict_batch(files).probs, atol=1e-5, rtol=0)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "again.pt2"), str(files[0])]) == 0
    assert capsys.readouterr().out.startswith(str(files[0]))


def test_lr_find_on_a_pretrained_architecture(capsys, tmp_path, images, torchvision_cache):
    torchvision_cache("resnet18")
    with pytest.warns(UserWarning, match="size=224"):
        code = main(["lr-find", "--data", str(images), "--model", "resnet18", "--pretrained", "--num-it", "3",
                     "--bs", "4", "--precision", "fp32", "--out", str(tmp_path)])
    assert code == 0 and "Suggested learning rate" in capsys.readouterr().out and (tmp_path / "lr_find.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet34", "--pretrained"], "--model resnet34 --pretrained: The weights ResNet34_Weights"),
    (["--model", "resnet18", "--weights", "/no/such.pth"], "--weights /no/such.pth: no such file"),
    (["--model", "cnn", "--pretrained"], "--pretrained: --model cnn has no pretrained weights"),
    (["--model", "resnet19"], "argument --model: give cnn, resnet, a torchvision model name"),
    (["--model", "timm:no_such_model"], "--model timm:no_such_model: arch='timm:no_such_model' is not a timm model"),
])
def test_pretrained_models_mistakes_are_one_line(capsys, tmp_path, images, torchvision_cache, args, message):
    got = refused(capsys, "train", "--data", str(images), "--out", str(tmp_path / "out"), *args)
    assert message in got
    if "--pretrained" in args and "resnet34" in args:
        assert "resnet34-b627a593.pth" in got and "--weights FILE" in got and "weights=" not in got


@pytest.mark.parametrize("bs, says", [
    ("11", "--bs 11 leaves 1 of the 12 training images alone in the last batch of each epoch, and BatchNorm layer "),
    ("1", "--bs 1 gives batches of one image, and BatchNorm layer "),
])
def test_a_batch_size_that_gives_batchnorm_one_image_is_refused_in_cli_terms(capsys, tmp_path, images, bs, says):
    """It ended in a traceback (exit code 1) that said drop_last=True (TensorLoader(...)), which the command line
    does not have, or in torch's "Expected more than 1 value per channel when training"."""
    message = refused(capsys, "train", "--data", str(images), "--bs", bs, "--epochs", "1", "--out", str(tmp_path))
    assert says in message and "cannot train on a single image: give another --bs" in message
    assert "drop_last" not in message and not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_is_refused_by_the_parser(capsys, seed):
    """It ended in NumPy's traceback: "Seed must be between 0 and 2**32 - 1"."""
    assert f"argument --seed: must be 0 to 4294967295, got {seed}" in refused(capsys, "train", "--seed", seed)


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_a_mistake_in_the_options_leaves_no_output_folder_behind(capsys, tmp_path, command):
    """The guide says a mistake exits "before any image is decoded or any file written"; --out (and its missing
    parents) used to be created first, so a typo in --data left runs/NAME behind, empty."""
    out = tmp_path / "runs" / "typo"
    assert "--data no-such-folder" in refused(capsys, command, "--data", "no-such-folder", "--out", str(out))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--freeze-epochs", "2"], "--freeze-epochs 2: only fine-tuning (--pretrained or --weights, with a torchvision or "
                               "timm --model) trains a frozen stage first; drop --freeze-epochs"),
    (["--model", "resnet18", "--freeze-epochs", "2"], "--freeze-epochs 2: only fine-tuning"),
    (["--max-restarts", "5"], "--max-restarts 5: only goes with --nproc (restarts of the processes it launches)"),
    (["--recipe", "fashion_mnist", "--pretrained"], "so it would ignore --pretrained: drop it"),
    (["--recipe", "fashion_mnist", "--freeze-epochs", "2", "--no-in-memory"],
     "so it would ignore --freeze-epochs, --no-in-memory: drop them"),
])
def test_an_option_that_would_be_ignored_is_refused(capsys, tmp_path, images, monkeypatch, argv, message):
    """They used to be silently ignored: --freeze-epochs without fine-tuning, --max-restarts without --nproc, and
    --pretrained, --weights, --freeze-epochs, --no-in-memory and --workers with a --recipe."""
    from slowlearn.recipes import RECIPES

    def trains(**kwargs):
        raise AssertionError("the recipe trained, ignoring the options")
    for name in RECIPES:
        monkeypatch.setitem(RECIPES, name, trains)
    data = [] if "--recipe" in argv else ["--data", str(images), "--epochs", "1"]
    assert message in refused(capsys, "train", *data, *argv, "--out", str(tmp_path / "out"))


def test_a_bad_native_bf16_setting_in_the_environment_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLOWLEARN_NATIVE_BF16", "yes")
    data = make_folder(tmp_path / "pets")
    message = refused(capsys, "train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert "SLOWLEARN_NATIVE_BF16='yes' is not 0 or 1" in message and not (tmp_path / "run").exists()


def test_an_out_holding_an_earlier_run_is_refused_unless_the_command_resumes_it_or_forces(capsys, tmp_path, images):
    """A second `slowlearn train` into the same --out overwrote the first run's checkpoint, log and model."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--epochs", "1"]
    assert main(common) == 0
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "model.pt2", "metrics.csv")}
    message = refused(capsys, *common, "--lr", "0.1")
    assert message == (f"slowlearn: error: --out {out} holds an earlier run (checkpoint.pt, model.pt2, metrics.csv): "
                       f"continue it with --resume auto, start afresh over it with --force, or give another --out")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert "--resume auto continues a run: give one" in refused(capsys, *common, "--resume", "auto", "--force")
    assert main([*common, "--lr", "0.1", "--force"]) == 0
    assert (out / "checkpoint.pt").read_bytes() != before["checkpoint.pt"]


def test_resuming_another_folders_run_into_an_out_that_holds_a_run_is_refused(capsys, tmp_path, images):
    """--resume a/checkpoint.pt --out b, b holding a run of its own: b's model was replaced without --force, and
    b's metrics.csv was cut at a's byte count (in the middle of one of b's rows) and a's rows added to it."""
    common = ["train", "--data", str(images), "--bs", "8", "--no-in-memory", "--workers", "0"]
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--epochs", "3", "--out", str(tmp_path / "b")]) == 0
    before = {name: (tmp_path / "b" / name).read_bytes() for name in ("checkpoint.pt", "model.pt2", "metrics.csv")}
    message = refused(capsys, *common, "--epochs", "2", "--resume", str(tmp_path / "a" / "checkpoint.pt"), "--out",
                      str(tmp_path / "b"))
    assert message == (f"slowlearn: error: --out {tmp_path / 'b'} holds an earlier run (checkpoint.pt, model.pt2, "
                       f"metrics.csv), and --resume {tmp_path / 'a' / 'checkpoint.pt'} continues another: give that "
                       f"run's own --out, or another --out")
    assert {name: (tmp_path / "b" / name).read_bytes() for name in before} == before
    assert main([*common, "--epochs", "2", "--resume", str(tmp_path / "a" / "checkpoint.pt"), "--out",
                 str(tmp_path / "a")]) == 0  # its own folder: it goes on there


def test_a_run_that_cannot_resume_is_told_only_to_force_or_move(capsys, tmp_path, images):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text("loss,epoch,phase\n")
    message = refused(capsys, "train", "--data", str(images), "--model", "resnet18", "--weights",
                      str(tmp_path / "w.pth"), "--out", str(out))
    assert message.endswith("holds an earlier run (metrics.csv): start afresh over it with --force, or give another "
                            "--out")


def test_force_clears_the_earlier_run_once_the_new_one_starts_and_not_on_a_mistake(capsys, tmp_path, images):
    """--force left the earlier run's model.pt2 and pictures beside an interrupted new run's checkpoint and CSV, so
    `slowlearn predict --out/model.pt2` used the old model."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--epochs", "1"]
    assert main(common) == 0
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"")  # as --tensorboard writes them
    earlier = sorted(p.name for p in out.iterdir())
    assert refused(capsys, *common[:2], str(tmp_path / "nowhere"), *common[3:], "--force")  # a mistake in the data
    assert sorted(p.name for p in out.iterdir()) == earlier  # ... keeps the earlier run

    def ctrl_c(learn):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Learner, "_step", ctrl_c)
        code, _ = run(capsys, *common, "--force")
    assert code == 130 and not any((out / name).exists() for name in ("model.pt2", "checkpoint.pt", "loss.png",
                                                                       "tensorboard"))


def test_force_keeps_the_earlier_run_when_a_mistake_is_found_at_the_first_batch(capsys, tmp_path, images):
    """--force --bs 11 of 12 training images (a BatchNorm layer would get one image), refused in one line at the first
    batch: the earlier run's files had gone already, when the first fit started."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--out", str(out), "--epochs", "1"]
    assert main([*common, "--bs", "8"]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "--bs 11 leaves 1 of the 12 training images alone" in refused(capsys, *common, "--bs", "11", "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier


def test_force_replaces_the_earlier_runs_tensorboard_events_and_not_the_users_files_beside_them(tmp_path, images):
    """--force removed the whole of --out/tensorboard: the user's own runs logged into folders under it too."""
    out = tmp_path / "out"
    common = ["train", "--data", str(images), "--bs", "8", "--out", str(out), "--epochs", "1", "--tensorboard"]
    assert main(common) == 0
    earlier = {p.name for p in (out / "tensorboard").glob("events.out.tfevents.*")}
    mine = [out / "tensorboard" / "notebook" / "events.out.tfevents.1", out / "tensorboard" / "notes.txt"]
    mine[0].parent.mkdir()
    for path in mine:
        path.write_text("the user's")
    assert earlier and main([*common, "--force"]) == 0
    events = {p.name for p in (out / "tensorboard").glob("events.out.tfevents.*")}
    assert events and not events & earlier  # the new run's only
    assert all(path.read_text() == "the user's" for path in mine)


def test_resume_given_the_runs_folder_is_told_to_give_its_checkpoint_file(capsys, two_epoch_run, images):
    """--resume runs/x --out runs/x (the folder, as `slowlearn export` takes it) was told that it continues another
    run than runs/x's."""
    message = refused(capsys, "train", "--data", str(images), "--bs", "4", "--epochs", "3", "--resume",
                      str(two_epoch_run), "--out", str(two_epoch_run))
    assert message == f"slowlearn: error: --resume {two_epoch_run}: no such checkpoint file"


def test_a_process_of_the_launcher_leaves_saying_how_to_go_on_to_it(capsys, tmp_path, images, monkeypatch):
    """Rank 0 of --nproc said "run the command again" of its own command (the launcher adds --resume auto to it),
    and the launcher another command: two instructions, the first refused once --out held the run's files."""
    from slowlearn.cli.launch import LAUNCHED_ENV
    monkeypatch.setenv(LAUNCHED_ENV, "1")

    def ctrl_c(learn):
        raise KeyboardInterrupt

    monkeypatch.setattr(Learner, "_step", ctrl_c)
    code, err = run(capsys, "train", "--data", str(images), "--bs", "8", "--out", str(tmp_path / "out"))
    assert code == 130 and not [line for line in err if "interrupted" in line]


def test_ctrl_c_while_the_results_are_written_says_how_to_get_the_model(capsys, tmp_path, images, monkeypatch):
    """After training, a Ctrl-C during the pictures or the export ended in a traceback."""
    from slowlearn import display

    def ctrl_c(fig, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(display, "save_png", ctrl_c)
    out = tmp_path / "out"
    code, err = run(capsys, "train", "--data", str(images), "--bs", "8", "--out", str(out), "--epochs", "1")
    assert code == 130 and err[-1] == (f"slowlearn: interrupted after training, while writing the results: "
                                       f"{out / 'checkpoint.pt'} holds the trained run; `slowlearn export {out}` with "
                                       f"the run's --data and --model options writes model.pt2 from it")
    monkeypatch.undo()
    assert main(["export", str(out), "--data", str(images)]) == 0 and (out / "model.pt2").is_file()
