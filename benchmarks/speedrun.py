"""Speedrun: each recipe of slowlearn.recipes for N seeds, next to today's default, in one process.

For every recipe: training wall time from the first batch to the final (flip-TTA) test accuracy,
accuracy mean and min over the seeds, training samples per second, and the achieved FLOP/s of the
run (FLOPs of one training step and one evaluation batch counted by torch.utils.flop_counter, times
the steps taken) as a percentage of this CPU's bf16 and fp32 matmul peaks, measured here first.
Next to it, on the same data: today's default `train_1cycle(resnet())` in fp32 (one seed).

    python benchmarks/speedrun.py [--recipe fashion_mnist|cifar10|all] [--seeds 3] [--baseline-epochs 3]
                                  [--precision auto|fp32|bf16] [--epochs N]
    python benchmarks/speedrun.py --smoke     # 256 images (CIFAR-10: random ones), one epoch: it all runs
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import statistics
import time

import torch
import torch.nn.functional as F
from cifar import shared_cifar10
from torch.utils.flop_counter import FlopCounterMode

from slowlearn import DataLoaders, TensorLoader, default_device, fashion_mnist, resnet, set_seed, train_1cycle
from slowlearn.data.images import CIFAR10_CLASSES
from slowlearn.display import format_table
from slowlearn.recipes import CIFAR10, FASHION_MNIST, RecipeConfig, run_recipe

RECIPES = {"fashion_mnist": FASHION_MNIST, "cifar10": CIFAR10}
SMOKE = dict(n_train=256, n_valid=128)


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of repeated n x n matmuls in `dtype` on the CPU: the practical peak of this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def step_flops(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float]:
    """FLOPs of one training step (forward and backward) and of one evaluation forward pass on `xb`."""
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(xb), yb).backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as evaluate:
        model(xb)
    return train.get_total_flops(), evaluate.get_total_flops()


def loaders(name: str, bs: int, smoke: bool):
    """The recipe's data; for a smoke run a small subset (CIFAR-10: random images, not to decode 60 000 JPEGs)."""
    if name == "fashion_mnist":
        return fashion_mnist(bs, **(SMOKE if smoke else {}))
    if smoke:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 256, (384, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(384) % 10
        norm = dict(mean=0.5, std=0.25, device=default_device())
        return DataLoaders(TensorLoader(x[:256], y[:256], bs, shuffle=True, **norm),
                           TensorLoader(x[256:], y[256:], 2 * bs, **norm), classes=CIFAR10_CLASSES)
    return shared_cifar10(bs=bs, aug=None)


def run_flops(learn, epochs: int, eval_passes: int) -> float:
    """FLOPs of a whole run: `epochs` of training steps and `eval_passes` over the validation set."""
    xb, yb = next(iter(learn.dls.train))
    train, evaluate = step_flops(learn.model, xb.to(next(learn.model.parameters()).device), yb)
    return (train * learn.dls.train.n_items * epochs + evaluate * learn.dls.valid.n_items * eval_passes) / len(xb)


def speed_columns(n_train: int, epochs: int, seconds: float, flops: float, peaks: dict) -> dict:
    return {"samples/s": n_train * epochs / seconds, "GFLOP/s": flops / seconds / 1e9,
            "% bf16 peak": 100 * flops / seconds / peaks["bf16"], "% fp32 peak": 100 * flops / seconds / peaks["fp32"]}


def recipe_rows(name: str, config: RecipeConfig, seeds: int, smoke: bool, peaks: dict, precision: str) -> dict:
    results = []
    for seed in range(seeds):
        dls = loaders(name, config.bs, smoke)
        results.append(run_recipe(config, dls, seed=seed, precision=precision, quiet=True))
        print(f"  {name} seed {seed}: {results[-1].accuracy:.4f} in {results[-1].seconds:.1f} s", flush=True)
    epochs = config.epochs
    learn, seconds = results[-1].learn, statistics.mean(r.seconds for r in results)
    flops = run_flops(learn, epochs, eval_passes=2)  # flip TTA: two passes over the test set
    return {"run": f"{name} recipe", "seeds": seeds, "epochs": epochs, "seconds": seconds,
            "acc mean": statistics.mean(r.accuracy for r in results), "acc min": min(r.accuracy for r in results),
            **speed_columns(learn.dls.train.n_items, epochs, seconds, flops, peaks)}


def baseline_row(name: str, config: RecipeConfig, epochs: int, smoke: bool, peaks: dict) -> dict:
    """Today's default: train_1cycle(resnet()) in fp32, contiguous, batch 512, no augmentation."""
    dls = loaders(name, 512, smoke)
    dls.train.aug = None
    set_seed(0)
    model = resnet(in_channels=config.in_channels)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        learn = train_1cycle(model, n_epochs=epochs, dls=dls)
    seconds = time.perf_counter() - start
    flops = run_flops(learn, epochs, eval_passes=epochs)  # validated once per epoch
    return {"run": f"{name} train_1cycle(resnet()) fp32", "seeds": 1, "epochs": epochs, "seconds": seconds,
            "acc mean": learn.history[-1]["accuracy"], "acc min": learn.history[-1]["accuracy"],
            **speed_columns(dls.train.n_items, epochs, seconds, flops, peaks)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=(*RECIPES, "all"), default="fashion_mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baseline-epochs", type=int, default=3, help="0 skips the baseline")
    parser.add_argument("--smoke", action="store_true", help="256 training images, 1 epoch, narrow nets")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' number of epochs")
    args = parser.parse_args(argv)
    peaks = {"bf16": matmul_peak(torch.bfloat16, seconds=0.2 if args.smoke else 2.),
             "fp32": matmul_peak(torch.float32, seconds=0.2 if args.smoke else 2.)}
    print(f"matmul peak on this CPU: bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"{torch.get_num_threads()} threads", flush=True)
    rows = []
    for name in RECIPES if args.recipe == "all" else [args.recipe]:
        config = RECIPES[name]
        if args.smoke:
            config = dataclasses.replace(config, epochs=1, widths=(8, 16, 16), bs=64)
        if args.epochs:
            config = dataclasses.replace(config, epochs=args.epochs)
        rows.append(recipe_rows(name, config, args.seeds, args.smoke, peaks, args.precision))
        if args.baseline_epochs:
            rows.append(baseline_row(name, config, 1 if args.smoke else args.baseline_epochs, args.smoke, peaks))
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
