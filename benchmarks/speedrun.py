"""Speedrun: each recipe of slowlearn.recipes for N seeds against the same recipe as a plain PyTorch loop, next
to today's default, in one process.

For every seed the recipe runs twice on the same loaders, interleaved (the order alternates between seeds):
`run_recipe` (Learner and callbacks) and `plain_recipe.plain_recipe` (the same model, batches, optimizer
param groups, per-batch lr, precision, layout and flip-TTA evaluation by hand). Before the first timed run,
untimed runs of two batches both ways warm up kernels, allocators and code paths. Per recipe and per way of running it:
epochs, the precision the step runs in, wall time (median over seeds, from the first batch to the final
flip-TTA test accuracy), accuracy mean and min over the seeds, the framework ratio (median framework seconds /
median plain seconds; printed above the table also paired by seed, each seed's ratio, with a bootstrap 95 %
interval: a machine whose speed drifts moves both runs of a seed alike), how many seeds ended with the same
accuracy and bitwise the same weights both ways,
training samples per second, and the achieved FLOP/s (FLOPs of one training step and one evaluation batch
counted by torch.utils.flop_counter, times the steps taken) as a percentage of the device's bf16 and fp32
matmul peaks, measured here first; "% prec peak" is against the peak of the precision the step runs in
(column "prec": fp32, or bf16 autocast). Next to it, on the same data: today's default `train_1cycle(resnet())`
in fp32 (one seed).

`--curve` validates after every epoch (both ways; no TTA there, the last line is with it) and prints each
epoch's test accuracy; `--epochs N` and `--n-train N` cut the recipe short, as far as the machine allows.

    python benchmarks/speedrun.py [--recipe fashion_mnist|cifar10|all] [--seeds 3] [--baseline-epochs 3]
                                  [--precision auto|fp32|bf16] [--epochs N] [--n-train N] [--curve]
    python benchmarks/speedrun.py --smoke     # 256 images (CIFAR-10: random ones), one epoch: it all runs
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import statistics
import time
import warnings

import torch
from cifar import shared_cifar10
from common import matmul_peak, paired_ratio, step_flops
from plain_recipe import plain_recipe

from slowlearn import (
    DataLoaders,
    MixedPrecisionCB,
    TensorLoader,
    default_device,
    fashion_mnist,
    resnet,
    set_seed,
    train_1cycle,
)
from slowlearn.data.images import CIFAR10_CLASSES
from slowlearn.display import format_table
from slowlearn.recipes import CIFAR10, FASHION_MNIST, RecipeConfig, run_recipe

RECIPES = {"fashion_mnist": FASHION_MNIST, "cifar10": CIFAR10}
SMOKE = {"n_train": 256, "n_valid": 128}
WAYS = ("framework", "plain")


def loaders(name: str, bs: int, smoke: bool, n_train: int | None = None) -> DataLoaders:
    """The recipe's data (`n_train`: a subset of the training images); for a smoke run a small subset
    (CIFAR-10: random images, not to decode 60 000 JPEGs)."""
    if name == "fashion_mnist":
        sizes = SMOKE | ({"n_train": n_train} if n_train else {}) if smoke else {"n_train": n_train}
        return fashion_mnist(bs, **sizes)
    if smoke:
        n = n_train or SMOKE["n_train"]
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 256, (n + 128, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n + 128) % 10
        norm = {"mean": 0.5, "std": 0.25, "device": default_device()}
        return DataLoaders(TensorLoader(x[:n], y[:n], bs, shuffle=True, **norm),
                           TensorLoader(x[n:], y[n:], 2 * bs, **norm), classes=CIFAR10_CLASSES)
    return shared_cifar10(bs=bs, aug=None, n_train=n_train)


def warm_up(config: RecipeConfig, dls: DataLoaders, precision: str) -> None:
    """Untimed runs of the recipe both ways on two training batches and one test batch (same shapes, same
    kernels, same code paths), so that no timed run pays for first calls."""
    def part(dl: TensorLoader, n: int, shuffle: bool) -> TensorLoader:
        small = TensorLoader(dl.x[:n], dl.y[:n], dl.bs, shuffle=shuffle, device=dl.device)
        small.scale, small.shift = dl.scale, dl.shift
        return small
    small = DataLoaders(part(dls.train, 2 * config.bs, True), part(dls.valid, dls.valid.bs, False), classes=dls.classes)
    config = dataclasses.replace(config, epochs=1)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 2 optimizer steps an epoch"
        run_recipe(config, small, seed=0, precision=precision, quiet=True)
        plain_recipe(config, small, seed=0, precision=precision)


def run_flops(model: torch.nn.Module, dls: DataLoaders, epochs: int, eval_passes: int) -> float:
    """FLOPs of a whole run: `epochs` of training steps and `eval_passes` over the validation set."""
    xb, yb = dls.train.normalise(dls.train.x[:dls.train.bs]), dls.train.y[:dls.train.bs]
    device = next(model.parameters()).device
    train, evaluate = step_flops(model, xb.to(device), yb.to(device))  # per batch of len(xb)
    return (train * dls.train.n_items * epochs + evaluate * dls.valid.n_items * eval_passes) / len(xb)


def speed_columns(n_train: int, epochs: int, seconds: float, flops: float, peaks: dict, precision: str) -> dict:
    flop_s = flops / seconds
    return {"samples/s": n_train * epochs / seconds, "GFLOP/s": flop_s / 1e9, "% bf16 peak": 100 * flop_s / peaks["bf16"],
            "% fp32 peak": 100 * flop_s / peaks["fp32"], "% prec peak": 100 * flop_s / peaks[precision]}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> tuple[bool, float]:
    """Whether two models' parameters and buffers are bitwise equal, and their largest difference."""
    sa, sb = a.state_dict(), b.state_dict()
    diff = max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)
    return all(torch.equal(sa[k], sb[k]) for k in sa), diff


def one_seed(name: str, config: RecipeConfig, dls: DataLoaders, seed: int, precision: str, curve: bool) -> dict:
    """The recipe from `seed` both ways (framework first for even seeds, plain first for odd ones)."""
    runs = {}
    for way in WAYS[::1 if seed % 2 == 0 else -1]:
        if way == "framework":
            result = run_recipe(config, dls, seed=seed, precision=precision, quiet=True, valid=curve)
            bf16 = any(isinstance(cb, MixedPrecisionCB) for cb in result.learn.cbs)
            runs[way] = {"model": result.learn.model, "accuracy": result.accuracy, "seconds": result.seconds,
                         "precision": "bf16" if bf16 else "fp32",
                         "curve": [row["accuracy"] for row in result.learn.history if row["phase"] == "valid"]}
        else:
            result = plain_recipe(config, dls, seed=seed, precision=precision, valid=curve)
            runs[way] = {"model": result.model, "accuracy": result.accuracy, "seconds": result.seconds,
                         "precision": result.precision, "curve": result.curve}
    bitwise, diff = same_weights(runs["framework"]["model"], runs["plain"]["model"])
    same_acc = runs["framework"]["accuracy"] == runs["plain"]["accuracy"]
    print(f"  {name} seed {seed}: " + ", ".join(f"{way} {runs[way]['accuracy']:.4f} in {runs[way]['seconds']:.1f} s"
                                                for way in WAYS)
          + f"; {'same' if same_acc else 'DIFFERENT'} accuracy, weights "
          + ("bitwise equal" if bitwise else f"differ by up to {diff:.2e}"), flush=True)
    if curve:
        for way in WAYS:
            print(f"    {way:9} test accuracy per epoch (no TTA): "
                  + " ".join(f"{a:.4f}" for a in runs[way]["curve"]), flush=True)
    return {**runs, "same_acc": same_acc, "bitwise": bitwise, "diff": diff}


def recipe_rows(name: str, config: RecipeConfig, seeds: int, smoke: bool, peaks: dict, precision: str,
                curve: bool = False, n_train: int | None = None) -> list[dict]:
    dls = loaders(name, config.bs, smoke, n_train)
    warm_up(config, dls, precision)
    results = [one_seed(name, config, dls, seed, precision, curve) for seed in range(seeds)]
    epochs = config.epochs
    model = results[-1]["framework"]["model"]
    flops = run_flops(model, dls, epochs, eval_passes=2 + (epochs if curve else 0))  # flip TTA: two passes
    if curve:
        print(f"  {name}: mean test accuracy over {seeds} seeds after each epoch (no TTA), and at the end with flip TTA")
        for epoch in range(epochs):
            print(f"    epoch {epoch + 1:3}: " + ", ".join(
                f"{way} {statistics.mean(r[way]['curve'][epoch] for r in results):.4f}" for way in WAYS))
        print("    flip TTA:  " + ", ".join(
            f"{way} {statistics.mean(r[way]['accuracy'] for r in results):.4f}" for way in WAYS), flush=True)
    medians = {way: statistics.median(r[way]["seconds"] for r in results) for way in WAYS}
    ratio, low, high = paired_ratio(*([r[way]["seconds"] for r in results] for way in WAYS))
    print(f"  {name}: framework paired by seed (each seed's ratio, so a machine whose speed drifts moves both alike): "
          f"{1 + ratio:.3f} x plain, 95 % interval {1 + low:.3f} to {1 + high:.3f}", flush=True)
    rows = []
    for way, label in zip(WAYS, ("recipe", "plain loop")):
        accs = [r[way]["accuracy"] for r in results]
        prec = results[-1][way]["precision"]
        rows.append({"run": f"{name} {label}", "prec": prec, "seeds": seeds, "epochs": epochs, "seconds": medians[way],
                     "acc mean": statistics.mean(accs), "acc min": min(accs),
                     "x plain": medians[way] / medians["plain"],
                     "same acc": f"{sum(r['same_acc'] for r in results)}/{seeds}",
                     "same weights": f"{sum(r['bitwise'] for r in results)}/{seeds}",
                     **speed_columns(dls.train.n_items, epochs, medians[way], flops, peaks, prec)})
    return rows


def baseline_row(name: str, config: RecipeConfig, epochs: int, smoke: bool, peaks: dict,
                 n_train: int | None = None) -> dict:
    """Today's default: train_1cycle(resnet()) in fp32, contiguous, batch 512, no augmentation."""
    dls = loaders(name, 512, smoke, n_train)
    dls.train.aug = None
    set_seed(0)
    model = resnet(in_channels=config.in_channels)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        learn = train_1cycle(model, n_epochs=epochs, dls=dls, precision="fp32")
    seconds = time.perf_counter() - start
    flops = run_flops(learn.model, dls, epochs, eval_passes=epochs)  # validated once per epoch
    acc = learn.history[-1]["accuracy"]
    return {"run": f"{name} train_1cycle(resnet()) fp32", "prec": "fp32", "seeds": 1, "epochs": epochs,
            "seconds": seconds, "acc mean": acc, "acc min": acc, "x plain": "", "same acc": "", "same weights": "",
            **speed_columns(dls.train.n_items, epochs, seconds, flops, peaks, "fp32")}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=(*RECIPES, "all"), default="fashion_mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baseline-epochs", type=int, default=3, help="0 skips the baseline")
    parser.add_argument("--smoke", action="store_true", help="256 training images, 1 epoch, narrow nets")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' number of epochs")
    parser.add_argument("--n-train", type=int, default=None, help="train on this many images (Fashion-MNIST: the first ones, CIFAR-10: a random subset)")
    parser.add_argument("--curve", action="store_true",
                        help="validate after every epoch and print each epoch's test accuracy (no TTA)")
    args = parser.parse_args(argv)
    # the default callbacks' metrics: imported once here, not in a timed run (after slowlearn, which keeps
    # torcheval's import-time deprecation warning quiet)
    import torcheval.metrics  # noqa: F401
    device = default_device()
    seconds = 0.2 if args.smoke else 2.
    peaks = {"bf16": matmul_peak(torch.bfloat16, device, seconds), "fp32": matmul_peak(torch.float32, device, seconds)}
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"this CPU, {torch.get_num_threads()} threads"
    print(f"matmul peak on {where}: bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s",
          flush=True)
    rows = []
    for name in RECIPES if args.recipe == "all" else [args.recipe]:
        config = RECIPES[name]
        if args.smoke:
            config = dataclasses.replace(config, epochs=1, widths=(8, 16, 16), bs=64)
        if args.epochs:
            config = dataclasses.replace(config, epochs=args.epochs)
        rows += recipe_rows(name, config, args.seeds, args.smoke, peaks, args.precision, args.curve, args.n_train)
        if args.baseline_epochs:
            rows.append(baseline_row(name, config, 1 if args.smoke else args.baseline_epochs, args.smoke, peaks,
                                     args.n_train))
    print(format_table(rows))
    print("seconds: median over the seeds; x plain: framework ratio (median / the plain loop's median); same acc / "
          "same weights: seeds that ended with the same accuracy / bitwise the same weights both ways; "
          "% prec peak: against the matmul peak of the precision in column prec")
    return rows


if __name__ == "__main__":
    main()
