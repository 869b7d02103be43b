"""`slowlearn train --nproc N`: N local processes through PyTorch's own launcher (`torch.distributed.run`, what
`torchrun` runs), with the settings that make its restarts reliable, and resuming on. A process that dies
(a crash, a SIGKILL) makes torchrun stop the others and start them all again, up to `--max-restarts` times;
each new start continues from the run's last checkpoint (`--resume auto`), so a run that loses a process ends
as an uninterrupted one would (exactly, with `--checkpoint-every N`)."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["torchrun_command", "launch_local", "RESTART_ENV", "LAUNCHED_ENV"]

# Without it a restarted run on gloo hung or failed in 5 of 8 tries here (PyTorch issue #135712): the new
# processes reach the rendezvous store of the agent's first round. It must be set before torchrun starts.
RESTART_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
# Set for the processes: after a Ctrl-C the launcher alone says how to go on (the processes' own command, with
# the --resume auto or --force it adds, is not the user's)
LAUNCHED_ENV = "SLOWLEARN_LAUNCHED"
LAUNCH_OPTIONS = ("--nproc", "--max-restarts", "--resume")  # the launcher's own: not passed to the processes
LAUNCH_FLAGS = ("--force",)  # the same, for options that take no value


def _without(argv: Sequence[str], option: str, takes_value: bool = True) -> list[str]:
    """`argv` without `option VALUE` and `option=VALUE` (without `option` where it takes no value), `option` also as
    argparse takes it abbreviated (`--npro`: argv parsed, so an abbreviation of it can mean nothing else)."""
    kept, skip = [], False
    for arg in argv:
        name, is_option = arg.split("=", 1)[0], arg.startswith("--") and len(arg) > 2
        if skip:
            skip = False
        elif is_option and option.startswith(name):
            skip = takes_value and "=" not in arg
        else:
            kept.append(arg)
    return kept


def torchrun_command(argv: Sequence[str], nproc: int, max_restarts: int, resume: bool = True) -> list[str]:
    """The command that runs `slowlearn <argv>` (without the launch options) in `nproc` local processes, restarted
    up to `max_restarts` times, each start resuming from the last checkpoint (with `resume`; else each start
    trains from the beginning: a recipe or fine-tuning, which do not resume, and which the earlier start's files in
    --out then do not stop)."""
    for option in LAUNCH_OPTIONS:
        argv = _without(argv, option)
    for flag in LAUNCH_FLAGS:
        argv = _without(argv, flag, takes_value=False)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            f"--max_restarts={max_restarts}", "-m", "slowlearn", *argv,
            *(["--resume", "auto"] if resume else ["--force"])]


def launch_local(argv: Sequence[str], nproc: int, max_restarts: int, resume: bool = True, forced: bool = False,
                 resumed: bool = False) -> int:
    """Run `torchrun_command` with `RESTART_ENV` and return its exit code; a SIGTERM (a scheduler stopping the
    job) is passed on, so that every process saves a checkpoint before it stops. After a Ctrl-C it says how to go
    on: the command has --force (`forced`: it would start afresh) or --resume auto (`resumed`: it goes on), else
    the --out that the processes wrote to refuses it."""
    command = torchrun_command(argv, nproc, max_restarts, resume)
    starts = "resuming from the last checkpoint" if resume else "each start from the beginning"
    print(f"Launching {nproc} process{'es' * (nproc > 1)} (restarted up to {max_restarts} times, {starts}): "
          f"{' '.join(f'{k}={v}' for k, v in RESTART_ENV.items())} {shlex.join(command)}", flush=True)
    child = subprocess.Popen(command, env={**os.environ, **RESTART_ENV, LAUNCHED_ENV: "1"})
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached torchrun and the processes too: they stop, rank 0 says where it was
        child.wait()
        told = "" if resumed else " with --resume auto in place of --force" if forced else " with --resume auto"
        again = (f"the same command{told} goes on from the last checkpoint" if resume else
                 f"run the command again{' with --force' * (not forced)}")
        print(f"slowlearn: interrupted; the processes stopped: {again}", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
