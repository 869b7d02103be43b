"""Does an EMA of the weights (WeightAveragingCB) help the CIFAR-10 recipe of benchmarks/cifar.py at equal time?

The same recipe (ResNet, train_1cycle's speed settings for this hardware: bf16 and channels-last where bf16 is native,
else fp32; train_1cycle with AdamW, label smoothing 0.1, crop + flip) twice
per seed, from the same initial weights and batches, without and with `WeightAveragingCB(decay=...)`; both
are scored on the test set with and without flip TTA. On a CPU, `--n-train` keeps a random subset of the
training images so that a run takes minutes (the test set stays whole unless `--n-valid`).

    python benchmarks/weight_averaging.py [--epochs 5] [--n-train 10000] [--seeds 0 1] [--decay 0.999]
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch.nn.functional as F
from cifar import shared_cifar10

from slowlearn import WeightAveragingCB, resnet, set_seed, train_1cycle


def accuracy(learn, tta: bool) -> float:
    p = learn.get_preds(tta=tta)
    return (p.preds.argmax(-1) == p.targets).float().mean().item()


def run(dls, args, seed: int, ema: bool) -> dict:
    set_seed(seed)
    cbs = []
    if ema:
        cbs.append(WeightAveragingCB(decay=args.decay))  # final="average": the model ends with the average
    start = time.perf_counter()
    learn = train_1cycle(resnet(in_channels=3), lr=args.lr, n_epochs=args.epochs, dls=dls, cbs=cbs,
                         loss_func=partial(F.cross_entropy, label_smoothing=0.1))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "accuracy": accuracy(learn, tta=False), "tta": accuracy(learn, tta=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-valid", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    dls = shared_cifar10(bs=256, n_train=args.n_train, n_valid=args.n_valid, seed=0)
    print(f"{dls.train.n_items} training and {dls.valid.n_items} test images, {args.epochs} epochs, "
          f"{len(dls.train) * args.epochs} steps, EMA decay {args.decay} (with warm-up)")
    results = {"plain": [], "EMA": []}
    for seed in args.seeds:
        for name in results:
            results[name].append(run(dls, args, seed, ema=name == "EMA"))
            print(f"seed {seed} {name}: {results[name][-1]}", flush=True)
    for name, rows in results.items():
        mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
        print(f"{name:6} accuracy {mean['accuracy']:.4f}, with TTA {mean['tta']:.4f}, {mean['seconds']:.0f} s "
              f"(mean of {len(rows)} seeds)")
    seconds = {name: statistics.mean(r["seconds"] for r in rows) for name, rows in results.items()}
    print(f"EMA time / plain time: {seconds['EMA'] / seconds['plain']:.3f}")


if __name__ == "__main__":
    main()
