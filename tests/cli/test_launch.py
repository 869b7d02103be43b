"""`slowlearn train --nproc N`: N local processes under torch.distributed.run, restarted on failure, resuming."""
import os
import subprocess
import sys

import pytest
from images import make_folder

from slowlearn.checkpoint import read_checkpoint
from slowlearn.cli import launch, main


def test_the_launch_command_runs_this_command_in_n_processes_resuming_automatically():
    argv = ["train", "--data", "pets", "--nproc", "2", "--epochs", "3", "--max-restarts=5", "--resume", "auto"]
    command = launch.torchrun_command(argv, nproc=2, max_restarts=5)
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "--max_restarts=5", "-m", "slowlearn", "train", "--data", "pets", "--epochs", "3",
                       "--resume", "auto"]


def test_the_launcher_sets_the_rendezvous_setting_before_torchrun_starts(monkeypatch, tmp_path, capsys):
    started = {}

    class Child:
        def __init__(self, command, env):
            started.update(command=command, env=env)

        def wait(self):
            return 7
    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    root = make_folder(tmp_path / "pets", n_per_class=2)
    code = main(["train", "--data", str(root), "--nproc", "3", "--max-restarts", "1", "--out", str(tmp_path / "out")])
    assert code == 7  # torchrun's exit code
    assert started["env"]["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    assert started["command"][3:6] == ["--standalone", "--nproc_per_node=3", "--max_restarts=1"]
    assert "--nproc" not in started["command"] and started["command"][-2:] == ["--resume", "auto"]
    assert "Launching 3 processes (restarted up to 1 times" in capsys.readouterr().out


def test_ctrl_c_waits_for_the_processes_and_exits_130_without_a_traceback(monkeypatch, tmp_path, capsys):
    """Ctrl-C reaches torchrun and the processes as well (the launcher alone says how to go on): it waits for them to
    stop rather than ending in a traceback of its own."""
    waits = []

    class Child:
        def __init__(self, command, env):
            waits.append(env)

        def wait(self):
            waits.append(1)
            if len(waits) == 2:
                raise KeyboardInterrupt
            return -2  # torchrun stopped by the signal
    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    root = make_folder(tmp_path / "pets", n_per_class=2)
    code = main(["train", "--data", str(root), "--nproc", "2", "--out", str(tmp_path / "out")])
    assert code == 130 and len(waits) == 3 and waits[0][launch.LAUNCHED_ENV] == "1"  # the processes stay quiet
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "slowlearn: interrupted; the processes stopped: the same command with --resume auto goes on from the last "
        "checkpoint")


@pytest.mark.parametrize("given, how", [
    ([], "the same command with --resume auto goes on from the last checkpoint"),  # else it refuses that --out
    (["--resume", "auto"], "the same command goes on from the last checkpoint"),
    (["--force"], "the same command with --resume auto in place of --force goes on from the last checkpoint"),
    (["--model", "resnet18", "--weights", "w.pth"], "run the command again with --force"),  # fine-tuning: afresh
    (["--model", "resnet18", "--weights", "w.pth", "--force"], "run the command again")])
def test_ctrl_c_says_a_command_that_goes_on_from_the_out_the_processes_left(monkeypatch, tmp_path, capsys, given,
                                                                              how):
    """The same command (without --force) went on from the last checkpoint, said the launcher; but the same command
    without --resume auto or --force refuses an --out that holds a run, as the processes' checkpoint then is."""
    out = tmp_path / "out"

    class Child:
        def __init__(self, command, env):
            self.waits = 0

        def wait(self):
            self.waits += 1
            if self.waits == 1:
                out.mkdir(exist_ok=True)
                (out / "metrics.csv").write_text("loss,epoch,phase\n")  # what the processes wrote before the Ctrl-C
                raise KeyboardInterrupt
            return -2
    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    root = make_folder(tmp_path / "pets", n_per_class=2)
    command = ["train", "--data", str(root), "--nproc", "2", "--out", str(out), *given]
    assert main(command) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"slowlearn: interrupted; the processes stopped: {how}"
    told = [arg for arg in command if arg != "--force" or "in place of --force" not in how]
    told += ["--resume", "auto"] * ("with --resume auto" in how) + ["--force"] * how.endswith("with --force")
    monkeypatch.setattr(launch.subprocess, "Popen", lambda command, env: type("Child", (), {"wait": lambda _: 0})())
    assert main(told) == 0, capsys.readouterr().err  # the command it told of goes on


def test_a_checkpoint_to_resume_is_refused_with_nproc(tmp_path, capsys):
    code = main(["train", "--nproc", "2", "--resume", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path)])
    assert code == 2 and "--nproc resumes from --out's checkpoint.pt only" in capsys.readouterr().err


def test_train_in_two_processes_through_torchrun(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=4)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "slowlearn", "train", "--nproc", "2", "--data", str(root), "--bs",
                             "4", "--epochs", "1", "--no-in-memory", "--workers", "0", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume='auto': no checkpoint at" in result.stdout and result.stdout.count("Wrote to") == 1
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1 and (out / "model.pt2").exists()


@pytest.mark.parametrize("value", ["-1", "x"])
def test_bad_max_restarts_are_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--nproc", "2", "--max-restarts", value])
    assert "argument --max-restarts" in capsys.readouterr().err


@pytest.mark.parametrize("run", [["--recipe", "fashion_mnist"], ["--model", "resnet18", "--weights", "WEIGHTS"]],
                         ids=["recipe", "fine-tuning"])
def test_runs_that_cannot_resume_are_launched_to_start_afresh(monkeypatch, tmp_path, capsys, run):
    """A recipe and fine-tuning refuse --resume, and the launcher added --resume auto to them: every process
    refused it, and torchrun started them all again --max-restarts times before failing."""
    started = {}

    class Child:
        def __init__(self, command, env):
            started.update(command=command)

        def wait(self):
            return 0
    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    (tmp_path / "weights.pth").write_bytes(b"")
    root = make_folder(tmp_path / "pets", n_per_class=2)
    run = [str(tmp_path / "weights.pth") if arg == "WEIGHTS" else arg for arg in run]
    data = [] if "--recipe" in run else ["--data", str(root)]
    assert main(["train", *run, *data, "--nproc", "2", "--out", str(tmp_path / "out")]) == 0
    child = started["command"][started["command"].index("slowlearn") + 1:]
    assert "--resume" not in child and "--nproc" not in child
    assert "each start from the beginning" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--epochs", "2"], "that run has already trained 2 epochs, so --epochs 2 would train nothing"),
    (["--epochs", "3", "--bs", "8"], "the run was trained with --bs 4, and a resumed run is the same run"),
])
def test_a_resume_from_out_that_would_be_refused_is_refused_once_before_launching(monkeypatch, tmp_path, capsys,
                                                                                   argv, says):
    """--nproc resumes from --out's checkpoint.pt: a mistake there (a finished run, another --bs) was found by every
    process of every start (--max-restarts + 1 times), and the launch ended in torchrun's traceback, exit code 1."""
    def no_launch(*args, **kwargs):
        raise AssertionError("launched although every process would refuse to resume")
    monkeypatch.setattr(launch.subprocess, "Popen", no_launch)
    root, out = make_folder(tmp_path / "pets", n_per_class=2), tmp_path / "out"
    assert main(["train", "--data", str(root), "--bs", "4", "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--nproc", "2", "--out", str(out), "--resume", "auto", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slowlearn: error: --resume auto: ") and says in err[0]


def test_the_launcher_says_nothing_of_a_resume_its_processes_announce(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(launch.subprocess, "Popen", lambda command, env: type("Child", (), {"wait": lambda self: 0})())
    root, out = make_folder(tmp_path / "pets", n_per_class=2), tmp_path / "out"
    assert main(["train", "--data", str(root), "--bs", "4", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--nproc", "2", "--epochs", "2", "--out", str(out), "--resume",
                 "auto"]) == 0
    assert "Resuming" not in capsys.readouterr().out


def test_the_launch_options_are_left_out_of_the_processes_command_however_abbreviated():
    """argparse takes --npro for --nproc: it used to reach torchrun (which stopped at the ambiguous --npro), and
    --max-r 5 reached every process (which refuses --max-restarts without --nproc)."""
    argv = ["train", "--npro", "2", "--max-r=5", "--epochs", "3", "--res", "auto"]
    command = launch.torchrun_command(argv, nproc=2, max_restarts=5)
    assert command[command.index("slowlearn") + 1:] == ["train", "--epochs", "3", "--resume", "auto"]


def test_force_makes_the_first_start_fresh_and_the_restarts_resume_this_run(monkeypatch, tmp_path, capsys):
    """Without --resume auto or --force, --nproc went on from an earlier run in --out: deleting it was the only way
    to start afresh. Now the launcher refuses that --out (as one process does) unless told which."""
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda command, env: started.append(command) or
                        type("Child", (), {"wait": lambda self: 0})())
    root, out = make_folder(tmp_path / "pets", n_per_class=2), tmp_path / "out"
    assert main(["train", "--data", str(root), "--bs", "4", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    run = ["train", "--data", str(root), "--nproc", "2", "--epochs", "2", "--out", str(out)]
    assert main(run) == 2 and "holds an earlier run" in capsys.readouterr().err and not started
    assert main([*run, "--forc"]) == 0 and not (out / "checkpoint.pt").exists()
    child = started[0][started[0].index("slowlearn") + 1:]
    assert child[-2:] == ["--resume", "auto"] and not any(arg.startswith("--forc") for arg in child)


def test_processes_of_runs_that_cannot_resume_are_told_to_start_afresh_over_the_last_start():
    command = launch.torchrun_command(["train", "--recipe", "cifar10", "--nproc", "2"], 2, 3, resume=False)
    assert command[command.index("slowlearn") + 1:] == ["train", "--recipe", "cifar10", "--force"]
