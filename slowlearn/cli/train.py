"""The `train` and `lr-find` commands: one-cycle training into an output folder, and the lr sweep."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from .build import checked_data, data_and_model, is_vision_arch, model_name, vision_learner_for
from .common import CLIError, positive_float, positive_int, writable_folder
from .data import add_data_args

OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "nesterov", "rmsprop")
SCRATCH_LR, FINE_TUNE_LR = 1e-2, 2e-3


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


def train_command(args) -> int:
    from ..callbacks import ChannelsLastCB, CheckpointCB, CSVLoggerCB, TensorBoardCB
    from ..checkpoint import CheckpointError
    from ..display import save_png
    from ..distributed import is_rank0, rank0_print
    from ..randomness import set_seed
    from ..show import plot_confusion_matrix, plot_metrics
    from ..train import train_1cycle

    if args.recipe is not None and args.resume is not None:
        raise CLIError("--resume does not work with --recipe: a recipe run is short, start it again")
    if _fine_tuning(args) and args.resume is not None:
        raise CLIError("--resume does not work with --pretrained: fine-tuning runs a frozen and an unfrozen stage; "
                       "start it again")
    out = writable_folder(args.out, "--out")
    _check_resume(args)
    if _fine_tuning(args):  # two fits (frozen, unfrozen) write one CSV
        (out / "metrics.csv").unlink(missing_ok=True)
    cbs = [CSVLoggerCB(out / "metrics.csv", append=_fine_tuning(args)), CheckpointCB(out / "checkpoint.pt")]
    if args.tensorboard:
        cbs.append(TensorBoardCB(out / "tensorboard"))
    if args.model == "resnet" and args.precision != "auto":
        cbs.append(ChannelsLastCB())  # "auto" decides the layout itself
    if args.recipe is not None:
        learn = _run_recipe(args, cbs)
    elif is_vision_arch(args):
        learn = _train_vision_arch(args, cbs)
    else:
        set_seed(args.seed)
        dls, model = data_and_model(args)
        try:
            learn = train_1cycle(model, lr=args.lr or SCRATCH_LR, n_epochs=args.epochs, dls=dls,
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


def _fine_tuning(args) -> bool:
    return args.recipe is None and is_vision_arch(args) and (args.pretrained or args.weights is not None)


def _train_vision_arch(args, cbs):
    """--model resnet18 (torchvision) or timm:<name>: fine-tuned with --pretrained or --weights (--freeze-epochs
    with the body frozen, then --epochs unfrozen with discriminative lrs), else one-cycle from random weights."""
    from ..randomness import set_seed
    set_seed(args.seed)
    dls = checked_data(args)
    learn = vision_learner_for(args, dls, opt_func=_opt_func(args.opt), cbs=cbs, precision=args.precision,
                               verbose=args.verbose)
    if _fine_tuning(args):
        return learn.fine_tune(args.epochs, base_lr=args.lr or FINE_TUNE_LR, freeze_epochs=args.freeze_epochs)
    from ..checkpoint import CheckpointError
    try:
        return learn.fit_one_cycle(args.epochs, args.lr or SCRATCH_LR, resume=args.resume)
    except CheckpointError as e:  # saved from another --model or --opt: found before training starts
        raise CLIError(f"--resume {args.resume}: {e}") from e


def _check_resume(args) -> None:
    """--resume: a readable slowlearn checkpoint of a run that has fewer epochs than --epochs."""
    if args.resume is None:
        return
    from ..checkpoint import CheckpointError, read_checkpoint
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
    from ..distributed import rank0_print
    from ..recipes import RECIPES
    result = RECIPES[args.recipe](seed=args.seed, precision=args.precision, cbs=cbs, valid=True)
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
    p.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
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
                                   "into --out: "
                                   "metrics.csv, checkpoint.pt (every epoch), schedule.png (lr and momentum), "
                                   "loss.png, metrics.png and confusion_matrix.png.")
    _common(t, "runs/train")
    t.add_argument("--epochs", type=positive_int, default=5, help="number of epochs (default: 5)")
    t.add_argument("--lr", type=positive_float, default=None,
                   help=f"peak learning rate (default: {SCRATCH_LR:g}; with --pretrained, fine-tuning's base lr: the "
                        f"head's, the body's spread below it, default {FINE_TUNE_LR:g})")
    t.add_argument("--freeze-epochs", type=positive_int, default=1,
                   help="with --pretrained: epochs that train the new head (and BatchNorm layers) on the frozen body "
                        "before --epochs of the whole model (default: 1)")
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
    f.add_argument("--num-it", type=positive_int, default=100, help="batches in the sweep (default: 100)")
    f.add_argument("--start-lr", type=positive_float, default=1e-7, help="first learning rate (default: 1e-7)")
    f.add_argument("--end-lr", type=positive_float, default=10., help="last learning rate (default: 10)")
    f.set_defaults(func=lr_find_command)
