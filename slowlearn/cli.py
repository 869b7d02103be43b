"""The `slowlearn` command line (also `python -m slowlearn`)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def demo(args: argparse.Namespace) -> int:
    from .callbacks.core import MomentumCB
    from .display import save_png
    from .distributed import rank0_print
    from .init import set_seed
    from .models import get_kaiming_initialized_model
    from .show import plot_confusion_matrix, plot_metrics
    from .train import train

    set_seed(args.seed)
    learn = train(get_kaiming_initialized_model(), lr=args.lr, n_epochs=args.epochs, cbs=[MomentumCB()])
    pictures = {"Loss plot": (learn.progress.plot_loss(), "loss.png"),
                "Metrics per epoch": (plot_metrics(learn), "metrics.png"),
                "Confusion matrix": (plot_confusion_matrix(learn), "confusion_matrix.png")}
    for what, (fig, name) in pictures.items():
        rank0_print(f"{what} saved to {save_png(fig, f'{args.out}/{name}')}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slowlearn", description="Train image classifiers with slowlearn.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train the seed CNN on Fashion-MNIST and save plots",
                       description="Train the seed CNN (Kaiming init, SGD + MomentumCB) on Fashion-MNIST, print "
                                   "the metrics table and save the loss curve, the metrics per epoch and the "
                                   "confusion matrix as PNGs.")
    d.add_argument("--epochs", type=int, default=3, help="number of epochs (default: 3)")
    d.add_argument("--lr", type=float, default=0.2, help="learning rate (default: 0.2)")
    d.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    d.add_argument("--out", default="runs/demo", help="folder for the plots (default: runs/demo)")
    d.set_defaults(func=demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "epochs", 1) < 1:
        parser().error(f"--epochs must be at least 1, got {args.epochs}")
    try:
        return args.func(args)
    except FileNotFoundError as e:
        print(f"slowlearn: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
