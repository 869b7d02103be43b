"""train_1cycle vs a plain PyTorch loop doing the same recipe on the same batches.

Recipe (the seed's headline): the seed CNN, Fashion-MNIST, bs 512, torch AdamW, one-cycle lr (peak 5e-2) and
beta1 set before every batch from the fraction of training done, 6 epochs, validation every epoch (the plain
loop computes the schedule with the same pure functions, `one_cycle_lr` and `one_cycle_mom`). Both start from the same weights and see the same
batches; each repeat uses a new seed, and the two take turns going first. Reports wall time (ratio of the
medians, target <= 1.02, and the median of each seed's ratio with its bootstrap 95 % interval),
final accuracy, and the achieved FLOP/s of the run (FLOPs of a training step and of a validation batch counted by
torch.utils.flop_counter, times the steps and batches taken; both train in fp32) as a percentage of the fp32
matmul peak measured first in this process.

    python benchmarks/one_cycle.py [--repeats 3] [--epochs 6]
    python benchmarks/one_cycle.py --smoke     # 256 training images, 1 epoch, 1 repeat: it all runs
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import matmul_peak, paired_ratio, step_flops
from overhead import fresh_loaders, plain_loop

from slowlearn import (
    default_device,
    fashion_mnist,
    get_kaiming_initialized_model,
    one_cycle_lr,
    one_cycle_mom,
    set_seed,
    train_1cycle,
)
from slowlearn.train import fast_adamw

LR = 5e-2


class OneCycleByHand:
    """Sets lr and beta1 for the next batch from the fraction of training done, after every step."""

    def __init__(self, opt, n_epochs: int, n_batches: int):
        self.opt, self.n_epochs, self.n_batches, self.done = opt, n_epochs, n_batches, 0
        self.lr, self.mom = one_cycle_lr(LR), one_cycle_mom()
        self.set()

    def set(self) -> None:
        epoch, i = divmod(self.done, self.n_batches)
        pct = (epoch + i / self.n_batches) / self.n_epochs
        for group in self.opt.param_groups:
            group["lr"], group["betas"] = self.lr(pct), (self.mom(pct), group["betas"][1])

    def step(self) -> None:
        self.done += 1
        self.set()


def plain_one_cycle(model, dls, n_epochs: int) -> float:
    """The recipe by hand; returns the final validation accuracy."""
    opt = fast_adamw()(model.parameters(), LR)
    sched = OneCycleByHand(opt, n_epochs, len(dls.train))
    for _ in range(n_epochs):
        accuracy = plain_loop(model, dls, opt=opt, sched=sched)
    return accuracy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="256 training images, 1 epoch, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs = 1, 1
    device = default_device()
    peak = matmul_peak(torch.float32, device, seconds=0.2 if args.smoke else 2.)
    base = fashion_mnist(bs=512, device=device, **({"n_train": 256, "n_valid": 128} if args.smoke else {}))
    flops = run_flops(base, args.epochs, device)
    results = {"plain loop": [], "train_1cycle": []}
    for seed in range(args.repeats):
        for name in list(results)[::1 if seed % 2 == 0 else -1]:  # alternate who goes first
            set_seed(seed)
            model = get_kaiming_initialized_model().to(device)
            dls = fresh_loaders(base)
            start = time.perf_counter()
            if name == "plain loop":
                accuracy = plain_one_cycle(model, dls, args.epochs)
            else:
                accuracy = train_1cycle(model, lr=LR, n_epochs=args.epochs, dls=dls).history[-1]["accuracy"]
            if device.type == "cuda":
                torch.cuda.synchronize()
            results[name].append((time.perf_counter() - start, accuracy))
    plain_time = statistics.median(t for t, _ in results["plain loop"])
    print(f"\n{args.epochs} epochs on {device}, {args.repeats} seeds (same seed = same weights and batches for both); "
          f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s:")
    for name, runs in results.items():
        times, accs = [t for t, _ in runs], [a for _, a in runs]
        median = statistics.median(times)
        print(f"{name:14} median {median:6.2f} s ({median / plain_time:.3f} x plain)"
              f"  accuracy per seed {', '.join(f'{a:.4f}' for a in accs)}  mean {statistics.mean(accs):.4f}"
              f"  {flops / median / 1e9:.1f} GFLOP/s = {100 * flops / median / peak:.2f} % of the fp32 peak")
    ratio, low, high = paired_ratio([t for t, _ in results["train_1cycle"]], [t for t, _ in results["plain loop"]])
    print(f"train_1cycle paired by seed (each seed's ratio, so a machine whose speed drifts moves both alike): "
          f"{1 + ratio:.3f} x plain, 95 % interval {1 + low:.3f} to {1 + high:.3f}")


def run_flops(dls, n_epochs: int, device) -> float:
    """FLOPs of the recipe: `n_epochs` of training steps and a validation pass after each epoch."""
    set_seed(0)
    model = get_kaiming_initialized_model().to(device)
    xb, yb = dls.train.normalise(dls.train.x[:dls.train.bs]).to(device), dls.train.y[:dls.train.bs].to(device)
    train, evaluate = step_flops(model, xb, yb)  # per batch of len(xb)
    return (train * dls.train.n_items + evaluate * dls.valid.n_items) * n_epochs / len(xb)


if __name__ == "__main__":
    main()
