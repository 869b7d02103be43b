"""The `slowlearn` command line (also `python -m slowlearn`): train, find a learning rate; and, in
`cli_model.py`, export a trained model, predict with it on image files, evaluate it on a labelled folder."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from . import __version__
from .cli_common import CLIError, writable_folder
from .cli_common import positive_int as _positive_int
from .cli_data import add_data_args, check_data_args, load_data
from .cli_model import add_model_commands

OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "nesterov", "rmsprop")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _check_model_fits(args, size: int | tuple[int, int] | None) -> None:
    """--model cnn only for images the seed CNN reduces to 1x1 (else it gives several logits per class)."""
    from .image_decode import image_size
    from .models import seed_cnn_fits
    size = image_size(size)
    if args.model == "cnn" and size is not None and not seed_cnn_fits(size):
        raise CLIError(f"--model cnn: the seed CNN takes images up to 32x32, these are {size[0]}x{size[1]}: use "
                       f"--model resnet, or --size 32")


def _model(args, dls):
    from .models import get_kaiming_initialized_model, resnet, seed_cnn
    channels, size = dls.train.x.shape[1], dls.train.x.shape[-1]
    n_classes = len(dls.classes)
    _check_model_fits(args, tuple(dls.train.x.shape[-2:]))
    if args.model == "resnet":
        return resnet(in_channels=channels, n_classes=n_classes)
    if (channels, size, n_classes) == (1, 28, 10):
        return get_kaiming_initialized_model()
    return seed_cnn(in_channels=channels, n_classes=n_classes)


def _data_and_model(args):
    check_data_args(args)
    _check_model_fits(args, args.size)  # before any image is decoded
    dls = load_data(args)
    return dls, _model(args, dls)


def _opt_func(name: str):
    import torch

    from .optim import Adam, MomentumSGD, RMSProp
    from .train import fast_adamw
    return {"adamw": None, "adam": Adam, "sgd": torch.optim.SGD, "momentum": partial(MomentumSGD, dampening=0.),
            "nesterov": partial(MomentumSGD, dampening=0., nesterov=True), "rmsprop": RMSProp}[name] or fast_adamw()


def _speed_cbs(args, model) -> list:
    """Precision as asked ("auto": bf16 where the hardware runs it natively), channels-last for the ResNet."""
    from .callbacks.precision import speed_cbs
    return speed_cbs(model, args.precision, channels_last=True if args.model == "resnet" else None)


def train_command(args) -> int:
    from .callbacks.core import ChannelsLastCB
    from .callbacks.logging import TensorBoardCB
    from .callbacks.tracking import CheckpointCB, CSVLoggerCB
    from .checkpoint import CheckpointError
    from .display import save_png
    from .distributed import is_rank0, rank0_print
    from .init import set_seed
    from .show import plot_confusion_matrix, plot_metrics
    from .train import train_1cycle

    if args.recipe is not None and args.resume is not None:
        raise CLIError("--resume does not work with --recipe: a recipe run is short, start it again")
    out = writable_folder(args.out, "--out")
    _check_resume(args)
    cbs = [CSVLoggerCB(out / "metrics.csv"), CheckpointCB(out / "checkpoint.pt")]
    if args.tensorboard:
        cbs.append(TensorBoardCB(out / "tensorboard"))
    if args.model == "resnet" and args.precision != "auto":
        cbs.append(ChannelsLastCB())  # "auto" decides the layout itself
    if args.recipe is not None:
        learn = _run_recipe(args, cbs)
    else:
        set_seed(args.seed)
        dls, model = _data_and_model(args)
        try:
            learn = train_1cycle(model, lr=args.lr, n_epochs=args.epochs, dls=dls,
                                 opt_func=_opt_func(args.opt), cbs=cbs, resume=args.resume, verbose=args.verbose,
                                 precision=args.precision)
        except CheckpointError as e:  # saved from another --model or --opt: found before training starts
            raise CLIError(f"--resume {args.resume}: {e}") from e
    pictures = {"lr and momentum": (learn.recorder.plot(), "schedule.png"),
                "loss curves": (learn.progress.plot_loss(), "loss.png"),
                "metrics per epoch": (plot_metrics(learn), "metrics.png"),
                "confusion matrix": (plot_confusion_matrix(learn), "confusion_matrix.png")}
    for fig, name in pictures.values():
        save_png(fig, out / name)
    if is_rank0():
        learn.export(out / "model.pt2")
    written = ["metrics.csv", "checkpoint.pt", "model.pt2 (slowlearn predict)", *(n for _, n in pictures.values())]
    rank0_print(f"Wrote to {out}/: " + ", ".join(written + ["tensorboard/"] * args.tensorboard))
    return 0


def _check_resume(args) -> None:
    """--resume: a readable slowlearn checkpoint of a run that has fewer epochs than --epochs."""
    if args.resume is None:
        return
    from .checkpoint import CheckpointError, read_checkpoint
    if not Path(args.resume).is_file():
        raise CLIError(f"--resume {args.resume}: no such checkpoint file")
    try:
        state = read_checkpoint(args.resume)
    except CheckpointError as e:
        raise CLIError(f"--resume {args.resume}: {e}") from e
    if state["epoch"] >= args.epochs:  # another number of epochs than the run's continues on the longer cycle
        raise CLIError(f"--resume {args.resume}: that run has already trained {state['epoch']} epochs, so "
                       f"--epochs {args.epochs} would train nothing")


def _run_recipe(args, cbs):
    from .distributed import rank0_print
    from .recipes import RECIPES
    result = RECIPES[args.recipe](seed=args.seed, precision=args.precision, cbs=cbs, valid=True)
    rank0_print(f"Recipe {args.recipe}: test accuracy {result.accuracy:.4f} with flip TTA, "
                f"{result.seconds:.0f} s from the first batch")
    return result.learn


def lr_find_command(args) -> int:
    from .distributed import rank0_print
    from .init import set_seed
    from .learner import Learner
    from .train import default_cbs

    if args.start_lr >= args.end_lr:
        raise CLIError(f"--start-lr {args.start_lr:g} must be below --end-lr {args.end_lr:g}")
    if args.num_it < 2:
        raise CLIError(f"--num-it {args.num_it}: the sweep needs at least 2 batches")
    out = writable_folder(args.out, "--out")
    set_seed(args.seed)
    dls, model = _data_and_model(args)
    learn = Learner(model, dls, cbs=[*default_cbs(), *_speed_cbs(args, model)],
                    opt_func=_opt_func(args.opt))
    suggestion = learn.lr_find(args.start_lr, args.end_lr, args.num_it, show_plot=False)
    path = out / "lr_find.png"
    learn.lr_finder.plot(suggestion, path)
    rank0_print(f"Suggested learning rate: {suggestion.valley:.2e} (valley); steepest descent at "
                f"{suggestion.steep:.2e}. Plot: {path}")
    return 0


def _common(p: argparse.ArgumentParser, out: str) -> None:
    add_data_args(p)
    p.add_argument("--model", choices=("cnn", "resnet"), default="cnn",
                   help="cnn: the seed CNN (Kaiming init, BatchNorm); resnet: a ResNet for small images, "
                        "trained in channels-last layout (default: cnn)")
    p.add_argument("--bs", type=_positive_int, default=512, help="batch size per process (default: 512)")
    p.add_argument("--opt", choices=OPTIMIZERS, default="adamw",
                   help="optimizer: adamw (torch's, fused on CUDA), adam, sgd, momentum, nesterov, rmsprop "
                        "(slowlearn's) (default: adamw)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 autocast where the hardware runs it natively (a CUDA GPU with bf16, a CPU "
                        "with AMX or AVX-512 bf16) for wide models, else fp32; or fp32, bf16, fp16 (with loss "
                        "scaling) (default: auto)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")


def _verbosity(p: argparse.ArgumentParser) -> None:
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--quiet", dest="verbose", action="store_const", const=2,
                       help="no progress bars: one line per epoch and phase (the default when the output is a "
                            "file or a pipe)")
    shown.add_argument("--verbose", dest="verbose", action="store_const", const=1,
                       help="progress bars even when the output is a file or a pipe (the default on a terminal)")


def _positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {value}")
    return number


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="slowlearn", description="Train image classifiers with slowlearn. Under torchrun, the same "
                                             "commands train on every process (data parallel).")
    p.add_argument("--version", action="version", version=f"slowlearn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="one-cycle training, with metrics table, plots, CSV log and checkpoint",
                       description="Train with train_1cycle (one-cycle lr and momentum) and write into --out: "
                                   "metrics.csv, checkpoint.pt (every epoch), schedule.png (lr and momentum), "
                                   "loss.png, metrics.png and confusion_matrix.png.")
    _common(t, "runs/train")
    t.add_argument("--epochs", type=_positive_int, default=5, help="number of epochs (default: 5)")
    t.add_argument("--lr", type=_positive_float, default=1e-2, help="peak learning rate (default: 1e-2)")
    t.add_argument("--recipe", choices=("fashion_mnist", "cifar10"), default=None,
                   help="train a speed recipe of slowlearn.recipes (its own data, model, optimizer, schedule "
                        "and epochs: --data, --model, --bs, --opt, --epochs and --lr are not used)")
    t.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run saved in this checkpoint (same options otherwise)")
    _verbosity(t)
    t.add_argument("--tensorboard", action="store_true",
                   help="also log curves, hyper-parameters and final metrics for TensorBoard into --out/tensorboard")
    t.set_defaults(func=train_command)
    f = sub.add_parser("lr-find", help="suggest a learning rate and plot loss against it",
                       description="Raise the learning rate geometrically from --start-lr to --end-lr over --num-it "
                                   "training batches (restoring everything afterwards), print the suggestions and "
                                   "write lr_find.png into --out.")
    _common(f, "runs/lr_find")
    f.add_argument("--num-it", type=_positive_int, default=100, help="batches in the sweep (default: 100)")
    f.add_argument("--start-lr", type=_positive_float, default=1e-7, help="first learning rate (default: 1e-7)")
    f.add_argument("--end-lr", type=_positive_float, default=10., help="last learning rate (default: 10)")
    f.set_defaults(func=lr_find_command)
    add_model_commands(sub, rebuild=_data_and_model, data_args=add_data_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, FileNotFoundError) as e:
        print(f"slowlearn: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
