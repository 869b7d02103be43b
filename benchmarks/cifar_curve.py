"""The CIFAR-10 speed recipe's per-epoch test accuracy, for a CPU where the full run does not fit.

Trains `slowlearn.recipes.CIFAR10` (its 10-epoch schedule, or `--epochs`) with the Learner on the first `--n-train`
training images of the shared JPEG set (all 50,000 by default), validating on the whole test set after every
epoch (no TTA; the last line adds the recipe's flip-TTA accuracy), and prints each epoch's accuracy and seconds
(common.EpochTimer).

    python benchmarks/cifar_curve.py [--n-train 10000] [--epochs 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses

from cifar import shared_cifar10
from common import EpochTimer

from slowlearn.recipes import CIFAR10, run_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: all 50,000)")
    parser.add_argument("--epochs", type=int, default=CIFAR10.epochs)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = dataclasses.replace(CIFAR10, epochs=args.epochs)
    dls = shared_cifar10(bs=config.bs, aug=None, n_train=args.n_train)
    result = run_recipe(config, dls, seed=args.seed, cbs=[EpochTimer()], valid=True, verbose=0)  # a line an epoch
    valid = [row["accuracy"] for row in result.learn.history if row["phase"] == "valid"]
    print(f"CIFAR-10 recipe, {dls.train.n_items} training images, {config.epochs} epochs, seed {args.seed}: "
          f"test accuracy after each epoch (no TTA) {', '.join(f'{a:.4f}' for a in valid)}")
    print(f"  with flip TTA after epoch {config.epochs}: {result.accuracy:.4f}; {result.seconds:.1f} s in all")


if __name__ == "__main__":
    main()
