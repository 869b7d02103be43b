"""The `train` and `lr-find` commands: one-cycle training into an output folder, and the lr sweep."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

from ..callback import Callback
from ..data import image_size
from .build import checked_data, data_and_model, is_vision_arch, model_name, vision_learner_for
from .common import CLIError, non_negative_int, positive_float, positive_int, seed, writable_folder
from .data import BUILT_IN, add_data_args, check_data_args

OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "nesterov", "rmsprop")
MLFLOW_STORE = "sqlite:///runs/mlflow.db"  # MLflowCB's default
SCRATCH_LR, FINE_TUNE_LR = 1e-2, 2e-3
RUN_FILES = ("checkpoint.pt", "model.pt2", "metrics.csv")  # what a run writes into --out that a new one would replace
RUN_PICTURES = ("schedule.png", "loss.png", "metrics.png", "confusion_matrix.png")


def _opt_func(name: str):
    import torch

    from ..optim import Adam, MomentumSGD, RMSProp
    from ..train import fast_adamw
    return {"adamw": None, "adam": Adam, "sgd": torch.optim.SGD, "momentum": partial(MomentumSGD, dampening=0.),
            "nesterov": partial(MomentumSGD, dampening=0., nesterov=True), "rmsprop": RMSProp}[name] or fast_adamw()


def _speed_cbs(args, model) -> list:
    """Precision as asked ("auto": bf16 where the hardware runs it natively), channels-last for the ResNet."""
    from ..callbacks import speed_cbs
    return speed_cbs(model, args.precision, channels_last=True if args.model == "resnet" else None)


# What makes a run what it is: recorded in its checkpoint (RunOptionsCB) and reused by --resume, which refuses
# another value for any of them (--epochs may differ: the one-cycle schedule then stretches to the new length)
RUN_OPTIONS = ("data", "images", "valid_col", "size", "valid_pct", "aug", "n_train", "model", "bs", "opt", "precision",
               "seed", "lr", "epochs")
# What a --recipe does not use: it brings its own data, model, optimizer, schedule and epochs
RECIPE_IGNORES = ("data", "images", "valid_col", "size", "valid_pct", "aug", "n_train", "workers", "model",
                  "pretrained", "weights", "freeze_epochs", "bs", "opt", "epochs", "lr")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _shown(value) -> str:
    """An option's value as it is written on the command line."""
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def train_command(args) -> int:
    from ..callbacks import ChannelsLastCB, CheckpointCB, CSVLoggerCB, TensorBoardCB
    from ..checkpoint import CheckpointError
    from ..display import save_png
    from ..distributed import is_rank0, rank0_print
    from ..randomness import set_seed
    from ..show import plot_confusion_matrix, plot_metrics
    from ..train import train_1cycle

    if args.recipe is not None:
        _check_recipe_options(args)
    _check_options_used(args)
    if _fine_tuning(args) and args.resume is not None:
        raise CLIError("--resume does not work with --pretrained: fine-tuning runs a frozen and an unfrozen stage; "
                       "start it again")
    out = writable_folder(args.out, "--out")
    _check_out_is_free(args, out)
    if args.nproc is not None:
        return _launch(args)
    _resume_options(args)
    checkpoints = CheckpointCB(out / "checkpoint.pt", every=args.checkpoint_every or "epoch")
    cbs = [CSVLoggerCB(out / "metrics.csv"), checkpoints]  # fine-tuning's two fits (frozen, unfrozen) write one CSV
    cbs += [ClearEarlierRunCB(out)] if args.force else []
    if args.tensorboard:
        cbs.append(TensorBoardCB(out / "tensorboard"))
    tracker = _mlflow_cb(args.mlflow, out) if args.mlflow is not None else None
    cbs += [tracker] if tracker is not None else []
    if args.model == "resnet" and args.precision != "auto":
        cbs.append(ChannelsLastCB())  # "auto" decides the layout itself
    with _batch_size_in_cli_terms(), _interrupt_in_cli_terms(args, out):
        if args.recipe is not None:
            learn = _run_recipe(args, cbs)
        elif is_vision_arch(args):
            learn = _train_vision_arch(args, cbs)
        else:
            set_seed(args.seed)
            dls, model = data_and_model(args)
            try:
                learn = train_1cycle(model, lr=args.lr or SCRATCH_LR, n_epochs=args.epochs, dls=dls,
                                     opt_func=_opt_func(args.opt), cbs=[*cbs, RunOptionsCB(_run_options(args))],
                                     resume=args.resume, verbose=args.verbose, precision=args.precision)
            except CheckpointError as e:  # saved from another --model or --opt: found before training starts
                raise CLIError(f"--resume {args.resume}: {e}") from e
    with _interrupt_while_writing_results(args, out):
        figures = (learn.recorder.plot(), learn.progress.plot_loss(), plot_metrics(learn), plot_confusion_matrix(learn))
        for fig, name in zip(figures, RUN_PICTURES):  # lr and momentum, loss, metrics per epoch, confusion matrix
            save_png(fig, out / name)
        if is_rank0():
            learn.export(out / "model.pt2")
    written = ["metrics.csv", "checkpoint.pt", "model.pt2 (slowlearn predict)", *RUN_PICTURES]
    rank0_print(f"Wrote to {out}/: " + ", ".join(written + ["tensorboard/"] * args.tensorboard))
    if tracker is not None and tracker.run_id is not None:
        tracker.log_artifacts(out / "model.pt2", *(out / name for name in RUN_PICTURES))
        rank0_print(f"MLflow run {tracker.run_id} in {args.mlflow} (mlflow ui --backend-store-uri {args.mlflow})")
    return 0


@contextmanager
def _batch_size_in_cli_terms():
    """A --bs that gives a BatchNorm layer batches of one image (found at the first batch, before any step): one
    line naming --bs and a batch size that works, not the library's advice of drop_last=, which the command line
    does not have."""
    from ..checks import SingleItemBatchError
    from ..distributed import world_size
    try:
        yield
    except SingleItemBatchError as e:
        images = f"{e.n_items} training images{' per process' * (world_size() > 1)}"
        what = ("--bs 1 gives batches of one image" if e.bs == 1 else
                f"--bs {e.bs} leaves 1 of the {images} alone in the last batch of each epoch")
        works = next((bs for bs in range(max(2, e.bs + 1), e.bs + 1 + e.n_items) if e.n_items % bs != 1), None)
        raise CLIError(f"{what}, and BatchNorm layer {e.layer} cannot train on a single image: give another --bs"
                       f"{f' (e.g. {works})' if works else ''}") from e


@contextmanager
def _interrupt_in_cli_terms(args, out: Path):
    """Ctrl-C: one line saying what is kept and how to go on, exit code 130 (as a shell reports SIGINT), not a
    traceback. --out's checkpoint.pt is this run's when the run wrote it or resumed from it (not an earlier run's)."""
    saved = out / "checkpoint.pt"
    found = _file_version(saved)
    try:
        yield
    except KeyboardInterrupt:
        from ..distributed import rank0_print
        from .launch import LAUNCHED_ENV
        if os.environ.get(LAUNCHED_ENV):  # one of --nproc's processes: the launcher says how to go on
            raise SystemExit(130) from None
        again = _run_again(args, out)
        if _file_version(saved) in (None, found) and not (found and args.resume == "auto"):
            how = f"nothing was saved yet: {again}"
        elif args.recipe is not None or _fine_tuning(args):
            how = f"this kind of run starts afresh: {again}{' (without --resume)' * args.force}"
        else:
            how = (f"{saved} holds the run up to its last save (each epoch's end, or every --checkpoint-every "
                   f"batches): continue it with the same command and --resume auto"
                   f"{' in place of --force' * args.force}")  # which refuses --resume
        rank0_print(f"slowlearn: interrupted; {how}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


@contextmanager
def _interrupt_while_writing_results(args, out: Path):
    """Ctrl-C after training, while the pictures and model.pt2 are written: one line saying what holds the trained
    run and how to get model.pt2 (--resume would train nothing), exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        from ..distributed import rank0_print
        how = ("run the command again with --force" if args.recipe is not None else
               f"`slowlearn export {args.out}` with the run's --data and --model options writes model.pt2 from it")
        rank0_print(f"slowlearn: interrupted after training, while writing the results: {out / 'checkpoint.pt'} holds "
                    f"the trained run; {how}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _file_version(path: Path) -> tuple[int, int] | None:
    """What changes when `path` is written again (checkpoints are renamed into place): None when it is not there."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def _run_again(args, out: Path) -> str:
    """How to run the command again from the start, after this run wrote files into --out that the same command
    may refuse (`_check_out_is_free`): with --force, or (a --resume of another folder's run) once they are gone."""
    try:
        _check_out_is_free(args, out)
    except CLIError:
        if args.resume is None:
            return "run the command again with --force"
        written = ", ".join(_run_files_in(out))
        return f"delete this run's {written} in --out {args.out} and run the command again (or give another --out)"
    return "run the command again"


def _check_out_is_free(args, out: Path) -> None:
    """An earlier run's files in --out are neither replaced nor continued unless the command says which: --resume
    continues it (auto, or a checkpoint in --out; another run's checkpoint is refused), --force starts afresh over
    it."""
    if args.force and args.resume is not None:
        raise CLIError(f"--force starts afresh over --out's run and --resume {args.resume} continues a run: give one")
    found = _run_files_in(out)
    if not found or args.force or args.resume == "auto":
        return
    if args.resume is not None:  # a checkpoint of --out's run goes on there; another run's would replace it
        resume = Path(args.resume)  # (not a file: _resume_options says so)
        if resume.is_file() and resume.resolve().parent != out.resolve():
            raise CLIError(f"--out {args.out} holds an earlier run ({', '.join(found)}), and --resume {args.resume} "
                           f"continues another: give that run's own --out, or another --out")
        return
    raise CLIError(f"--out {args.out} holds an earlier run ({', '.join(found)}): "
                   f"{'continue it with --resume auto, ' * _resumable(args)}start afresh over it with --force, "
                   f"or give another --out")


def _run_files_in(out: Path) -> list[str]:
    """The files of RUN_FILES that --out holds: an earlier run's."""
    return [name for name in RUN_FILES if (out / name).exists()]


def _resumable(args) -> bool:
    """Whether the run can resume: a recipe and fine-tuning refuse --resume (each start is afresh)."""
    return args.recipe is None and not _fine_tuning(args)


def _fine_tuning(args) -> bool:
    return args.recipe is None and is_vision_arch(args) and (args.pretrained or args.weights is not None)


def _train_vision_arch(args, cbs):
    """--model resnet18 (torchvision) or timm:<name>: fine-tuned with --pretrained or --weights (--freeze-epochs
    with the body frozen, then --epochs unfrozen with discriminative lrs), else one-cycle from random weights."""
    from ..randomness import set_seed
    set_seed(args.seed)
    dls = checked_data(args)
    learn = vision_learner_for(args, dls, opt_func=_opt_func(args.opt), cbs=[*cbs, RunOptionsCB(_run_options(args))],
                               precision=args.precision, verbose=args.verbose)
    if _fine_tuning(args):
        return learn.fine_tune(args.epochs, base_lr=args.lr or FINE_TUNE_LR, freeze_epochs=args.freeze_epochs)
    from ..checkpoint import CheckpointError
    try:
        return learn.fit_one_cycle(args.epochs, args.lr or SCRATCH_LR, resume=args.resume)
    except CheckpointError as e:  # saved from another --model or --opt: found before training starts
        raise CLIError(f"--resume {args.resume}: {e}") from e


def _launch(args) -> int:
    """--nproc N: this command again in N processes under torch.distributed.run, restarted on failure."""
    from .launch import launch_local
    if args.resume not in (None, "auto"):
        raise CLIError(f"--resume {args.resume}: --nproc resumes from --out's checkpoint.pt only (--resume auto, "
                       f"which its restarts use too): copy the checkpoint there and give --resume auto")
    if "WORLD_SIZE" in os.environ:
        raise CLIError("--nproc: this command already runs under torchrun (WORLD_SIZE is set): leave --nproc out")
    resumable = _resumable(args)
    checked = argparse.Namespace(**{**vars(args), "resume": "auto" if resumable else None})
    if args.force:  # the first start must not resume the earlier run (later starts resume this one)
        checked.resume = None
    _resume_options(checked, announce=False)  # mistakes in the options: one line here, not one per process
    check_data_args(checked)
    if args.force:
        clear_earlier_run(Path(args.out))
    return launch_local(args.argv, args.nproc, args.max_restarts, resume=resumable, forced=args.force,
                        resumed=args.resume == "auto")


def _mlflow_cb(uri: str, out: Path):
    """MLflowCB for --mlflow URI, the run named after --out; a missing mlflow package is refused before training."""
    from ..callbacks import MLflowCB
    try:
        return MLflowCB(uri, run_name=out.name)
    except ImportError as e:
        raise CLIError(f"--mlflow: {e}") from e
    except ValueError as e:
        raise CLIError(f"--mlflow {uri}: {e}") from e


def _check_recipe_options(args) -> None:
    """A recipe trains its own data, model and schedule: an option it would ignore is refused, by name."""
    if args.resume is not None:
        raise CLIError("--resume does not work with --recipe: a recipe run is short, start it again")
    ignored = [args.given[dest] or _flag(dest) for dest in RECIPE_IGNORES if dest in args.given]
    ignored += ["--no-in-memory"] * (not args.in_memory)  # (BooleanOptionalAction: not in args.given)
    if ignored:
        them = "them" if len(ignored) > 1 else "it"
        raise CLIError(f"--recipe {args.recipe} brings its own data, model, optimizer, schedule and epochs, so it "
                       f"would ignore {', '.join(ignored)}: drop {them}, or train without --recipe")


def _check_options_used(args) -> None:
    """--freeze-epochs and --max-restarts apply to fine-tuning and to --nproc only: given without them, refused."""
    if "freeze_epochs" in args.given and args.recipe is None and not _fine_tuning(args):
        raise CLIError(f"--freeze-epochs {args.freeze_epochs}: only fine-tuning (--pretrained or --weights, with a "
                       f"torchvision or timm --model) trains a frozen stage first; drop --freeze-epochs")
    if "max_restarts" in args.given and args.nproc is None:
        raise CLIError(f"--max-restarts {args.max_restarts}: only goes with --nproc (restarts of the processes it "
                       f"launches); add --nproc N, or drop --max-restarts")


def clear_earlier_run(out: Path) -> None:
    """--force: the earlier run's files in --out go, so that none of them is left beside the new run's (its model.pt2
    next to an interrupted new run's checkpoint, say)."""
    for name in (*RUN_FILES, *RUN_PICTURES):
        (out / name).unlink(missing_ok=True)
    board = out / "tensorboard"  # --tensorboard's event files, or the runs' curves would mix (the user's files stay)
    for events in board.glob("events.out.tfevents.*"):
        events.unlink(missing_ok=True)
    with suppress(OSError):  # the folder, when that left it empty
        board.rmdir()


class ClearEarlierRunCB(Callback):
    """--force in one process: clears --out's earlier run once the first batch has given a loss, before anything is
    written there (a mistake in the data, the model or --bs, found by then, leaves the earlier run as it was)."""

    order = -100  # the first handler of the first batch's after_loss: nothing is written to --out before then

    def __init__(self, out: Path):
        self.out, self.cleared = out, False

    def after_loss(self, learn) -> None:
        from ..distributed import is_rank0
        if not self.cleared and is_rank0():
            clear_earlier_run(self.out)
        learn.dispatch.set_active(self, "after_loss", False)  # once is all: the fit's other batches skip the call
        self.cleared = True


class RunOptionsCB(Callback):
    """Keeps the command line's run options (RUN_OPTIONS) in every checkpoint of the run, for --resume."""

    def __init__(self, options: dict):
        self.options = options

    def state_dict(self) -> dict:
        return {"options": self.options}

    def load_state_dict(self, state: dict) -> None:
        pass  # --resume has read them from the checkpoint before the run was rebuilt


def _run_options(args) -> dict:
    """RUN_OPTIONS as plain data; the paths of --data and --images absolute, so a resume from another folder
    finds them."""
    options = {dest: getattr(args, dest) for dest in RUN_OPTIONS}
    for dest in ("data", "images"):
        if options[dest] is not None and options[dest] not in BUILT_IN:
            options[dest] = str(Path(options[dest]).resolve())
    options["size"] = list(image_size(options["size"]) or ()) or None
    return options


def _resume_options(args, announce: bool = True) -> None:
    """--resume: a readable slowlearn checkpoint; the options the run recorded are reused (one given with
    another value is refused, by name, but for --epochs); the run must have epochs left to train. --resume auto:
    the same for --out's checkpoint.pt when there is one (the fit then resumes from it), nothing when there is none.
    `announce`: say where the run resumes (the launcher of --nproc checks, its processes say it)."""
    path = Path(args.out) / "checkpoint.pt" if args.resume == "auto" else Path(args.resume or "")
    if args.resume is None or (args.resume == "auto" and not path.is_file()):
        return
    from ..checkpoint import CheckpointError, read_checkpoint
    from ..distributed import rank0_print
    if not path.is_file():
        raise CLIError(f"--resume {args.resume}: no such checkpoint file")
    try:
        state = read_checkpoint(path)
    except CheckpointError as e:
        raise CLIError(f"--resume {args.resume}: {e}") from e
    recorded = state["callbacks"].get(RunOptionsCB.__name__, {}).get("options")
    say = rank0_print if announce else (lambda *_: None)
    if recorded is None:  # a checkpoint of an older slowlearn, or of a run started from Python
        recorded = {"epochs": state["n_epochs"]} if state.get("n_epochs") else {}
        say(f"--resume {args.resume}: the checkpoint does not record the options of its run, so the options given "
            f"here are used: give the same ones as the run")
    given_now = _run_options(args)
    for dest, value in recorded.items():
        if dest not in args.given:
            setattr(args, dest, tuple(value) if dest == "size" and value else value)
        elif dest != "epochs" and given_now[dest] != value:
            flag, shown = _flag(dest), _shown(value) if value is not None else None
            fix = f"drop {flag} or pass {flag} {shown}" if shown is not None else f"drop {flag}"
            raise CLIError(f"--resume {args.resume}: the run was trained with "
                           f"{f'{flag} {shown}' if shown is not None else f'no {flag}'}, and a resumed run is the same "
                           f"run: {fix}")
    done = state["epoch"]
    if done >= args.epochs:  # another number of epochs than the run's continues on the longer cycle
        raise CLIError(f"--resume {args.resume}: that run has already trained {done} epochs, so "
                       f"--epochs {args.epochs} would train nothing: give more epochs than {done}")
    planned = recorded.get("epochs")
    stretched = "" if planned in (None, args.epochs) else \
        f" (the run was for {planned}: its schedule now spans {args.epochs})"
    position = f"epoch {done}" if not state["iter"] else f"batch {state['iter']} of epoch {done}"
    say(f"Resuming the run of {path} from {position} of {args.epochs}{stretched}: epochs {done} to "
        f"{args.epochs - 1} follow")


def _run_recipe(args, cbs):
    from ..distributed import rank0_print
    from ..recipes import RECIPES
    result = RECIPES[args.recipe](seed=args.seed, precision=args.precision, cbs=cbs, valid=True, verbose=args.verbose)
    rank0_print(f"Recipe {args.recipe}: test accuracy {result.accuracy:.4f} with flip TTA, "
                f"{result.seconds:.0f} s from the first batch")
    return result.learn


def lr_find_command(args) -> int:
    from ..distributed import rank0_print
    from ..learner import Learner
    from ..randomness import set_seed
    from ..train import default_cbs

    if args.start_lr >= args.end_lr:
        raise CLIError(f"--start-lr {args.start_lr:g} must be below --end-lr {args.end_lr:g}")
    if args.num_it < 2:
        raise CLIError(f"--num-it {args.num_it}: the sweep needs at least 2 batches")
    out = writable_folder(args.out, "--out")
    set_seed(args.seed)
    if is_vision_arch(args):
        learn = vision_learner_for(args, checked_data(args), opt_func=_opt_func(args.opt), precision=args.precision)
    else:
        dls, model = data_and_model(args)
        learn = Learner(model, dls, cbs=[*default_cbs(), *_speed_cbs(args, model)], opt_func=_opt_func(args.opt))
    with _batch_size_in_cli_terms():
        suggestion = learn.lr_find(args.start_lr, args.end_lr, args.num_it, show_plot=False)
    path = out / "lr_find.png"
    learn.lr_finder.plot(suggestion, path)
    rank0_print(f"Suggested learning rate: {suggestion.valley:.2e} (valley); steepest descent at "
                f"{suggestion.steep:.2e}. Plot: {path}")
    return 0


def _common(p: argparse.ArgumentParser, out: str) -> None:
    add_data_args(p)
    p.add_argument("--model", type=model_name, default="cnn",
                   help="cnn: the seed CNN (Kaiming init, BatchNorm); resnet: a ResNet for small images, "
                        "trained in channels-last layout; or a torchvision architecture (resnet18, resnet34, "
                        "convnext_tiny, ...) or timm:<name> (needs timm: pip install slowlearn[timm]), with a new "
                        "head for the data's classes (default: cnn)")
    p.add_argument("--pretrained", action="store_true",
                   help="start --model from its pretrained weights (torchvision's cache, $TORCH_HOME/hub/checkpoints, "
                        "or the Hugging Face cache for timm; downloaded when missing and the network answers) and "
                        "fine-tune it; the images are normalised with the weights' statistics")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="with a torchvision or timm --model: start from the weights in this file (a .pth state dict "
                        "or .safetensors) and fine-tune")
    p.add_argument("--bs", type=positive_int, default=512, help="batch size per process (default: 512)")
    p.add_argument("--opt", choices=OPTIMIZERS, default="adamw",
                   help="optimizer: adamw (torch's, fused on CUDA), adam, sgd, momentum, nesterov, rmsprop "
                        "(slowlearn's) (default: adamw)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 autocast where the hardware runs it natively (a CUDA GPU with bf16, a CPU "
                        "with AMX or AVX-512 bf16) for wide models, else fp32; or fp32, bf16, fp16 (with loss "
                        "scaling) (default: auto)")
    p.add_argument("--seed", type=seed, default=42, help="random seed, 0 to 2**32 - 1 (default: 42)")
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")


def _verbosity(p: argparse.ArgumentParser) -> None:
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--quiet", dest="verbose", action="store_const", const=2,
                       help="no progress bars: one line per epoch and phase (the default when the output is a "
                            "file or a pipe)")
    shown.add_argument("--verbose", dest="verbose", action="store_const", const=1,
                       help="progress bars even when the output is a file or a pipe (the default on a terminal)")


def add_train_commands(sub) -> None:
    """Add `train` and `lr-find` to the subcommands `sub` of the `slowlearn` parser."""
    t = sub.add_parser("train", help="one-cycle training, with metrics table, plots, CSV log and checkpoint",
                       description="Train with train_1cycle (one-cycle lr and momentum), or with --pretrained "
                                   "fine-tune a torchvision or timm --model (vision_learner, fine_tune), and write "
                                   "into --out: metrics.csv, checkpoint.pt (every epoch, or every --checkpoint-every "
                                   "batches; on SIGTERM too, before it stops), schedule.png (lr and momentum), "
                                   "loss.png, metrics.png and confusion_matrix.png.")
    _common(t, "runs/train")
    t.add_argument("--epochs", type=positive_int, default=5, help="number of epochs (default: 5)")
    t.add_argument("--lr", type=positive_float, default=None,
                   help=f"peak learning rate (default: {SCRATCH_LR:g}; with --pretrained, fine-tuning's base lr: the "
                        f"head's, the body's spread below it, default {FINE_TUNE_LR:g})")
    t.add_argument("--freeze-epochs", type=positive_int, default=1,
                   help="with --pretrained or --weights (refused without): epochs that train the new head (and "
                        "BatchNorm layers) on the frozen body before --epochs of the whole model (default: 1)")
    t.add_argument("--recipe", choices=("fashion_mnist", "cifar10"), default=None,
                   help="train a speed recipe of slowlearn.recipes (its own data, model, optimizer, schedule "
                        "and epochs: --data and the other data options, --model, --pretrained, --weights, "
                        "--freeze-epochs, --bs, --opt, --epochs and --lr are refused with it)")
    t.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run saved in this checkpoint, with the options it records (an option given "
                        "with another value is refused; --epochs may differ: the schedule then spans the new number); "
                        "auto: from --out's checkpoint.pt when there is one, else start afresh (the same command for "
                        "every restart)")
    t.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds an earlier run, replacing its files (by default such an "
                        "--out is refused: --resume auto continues the run there)")
    t.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="also save checkpoint.pt every N training batches, so that a resumed run loses less than N "
                        "batches (default: at the end of every epoch only)")
    t.add_argument("--nproc", type=positive_int, metavar="N",
                   help="train data-parallel in N local processes (torch.distributed.run; --bs is per process), "
                        "restarted when one fails and resuming from checkpoint.pt (--resume auto; a --recipe or "
                        "fine-tuning run, which do not resume, starts again from the beginning)")
    t.add_argument("--max-restarts", type=non_negative_int, default=3, metavar="R",
                   help="with --nproc (refused without): how many times the processes are started again after a "
                        "failure (default: 3)")
    _verbosity(t)
    t.add_argument("--tensorboard", action="store_true",
                   help="also log curves, hyper-parameters and final metrics for TensorBoard into --out/tensorboard")
    t.add_argument("--mlflow", nargs="?", const=MLFLOW_STORE, default=None, metavar="URI",
                   help=f"also log the run to MLflow: parameters, curves, final metrics, and the files written "
                        f"into --out; URI is the tracking store (default: {MLFLOW_STORE}; a server: "
                        f"http://host:5000); needs pip install 'slowlearn[mlflow]'")
    t.set_defaults(func=train_command)
    f = sub.add_parser("lr-find", help="suggest a learning rate and plot loss against it",
                       description="Raise the learning rate geometrically from --start-lr to --end-lr over --num-it "
                                   "training batches (restoring everything afterwards), print the suggestions and "
                                   "write lr_find.png into --out.")
    _common(f, "runs/lr_find")
    f.add_argument("--num-it", type=positive_int, default=100, help="batches in the sweep (default: 100)")
    f.add_argument("--start-lr", type=positive_float, default=1e-7, help="first learning rate (default: 1e-7)")
    f.add_argument("--end-lr", type=positive_float, default=10., help="last learning rate (default: 10)")
    f.set_defaults(func=lr_find_command)
