"""Transfer learning through `vision_learner`: fine-tuning a pretrained body against the same architecture from
scratch, with each head ("linear", "concat"), and the time `vision_learner(...)` itself takes.

A torchvision ResNet-18 (`--arch`) is pretrained from random weights on CIFAR-10's classes 0-4 (airplane, automobile,
bird, cat, deer; `--pretrain-items` images, `--pretrain-epochs`) with `vision_learner(..., pretrained=False)` and its
weights saved as a plain state dict. Then, on a few hundred training images of the other classes (dog, frog, horse,
ship, truck; `--items`), for each seed and head:
- fine-tuned: `vision_learner(dls, arch, weights=file, head=head, stats=<the pretraining data's>)` then
  `fine_tune(epochs, freeze_epochs=1, base_lr=--lr, lr_mult=--lr-mult)`;
- from scratch: `vision_learner(dls, arch, pretrained=False, head=head)` then `fit_one_cycle(epochs + 1, --scratch-lr)`:
  the same number of epochs, batches in the same order.
Both are scored on the test images of classes 5-9 (all 5,000, or `--valid-items` of them). The images are the
CIFAR-10 JPEG set of ../shared/data, resized to `--size` (ImageNet ResNets shrink 32x32 images to 1x1 by layer 4).
It ends with the mean and spread of each arm's accuracy, and the median time of `vision_learner(dls, arch,
weights=file)` (building the model and reading its weights).

    python benchmarks/fine_tune.py [--size 64] [--items 500] [--epochs 5] [--seeds 0 1 2] [--heads linear concat]
    python benchmarks/fine_tune.py --smoke   # a tiny setting that only shows that every part runs
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from cifar import shared_cifar10
from torcheval.metrics import MulticlassAccuracy

from slowlearn import DataLoaders, TensorLoader, set_seed, vision_learner
from slowlearn.data import augment_from_spec

SMOKE = dict(size=32, pretrain_items=200, pretrain_epochs=1, items=100, epochs=1, valid_items=100, seeds=[0],
             timing_repeats=1)


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255).byte()


def classes_subset(dl: TensorLoader, classes: range, n: int | None, size: int, train: bool, bs: int) -> TensorLoader:
    """`n` items of `classes` (a random choice, the same in every run; the folders list them class by class),
    relabelled from 0, resized, normalised as `dl` was."""
    keep = torch.isin(dl.y, torch.tensor(list(classes), device=dl.y.device)).nonzero().squeeze(1)
    keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0)).to(keep.device)[:n]]
    x = resized(dl.x[keep], size)
    return TensorLoader(x, dl.y[keep] - classes.start, bs, shuffle=train, device=dl.device, mean=dl.mean, std=dl.std,
                        aug=augment_from_spec("crop,flip", (size, size)) if train else None)


def task(base: DataLoaders, classes: range, n: int | None, n_valid: int | None, size: int, bs: int) -> DataLoaders:
    names = base.classes[classes.start:classes.stop]
    return DataLoaders(classes_subset(base.train, classes, n, size, True, bs),
                       classes_subset(base.valid, classes, n_valid, size, False, 512), classes=names)


def learner(dls: DataLoaders, arch: str, **kwargs):
    return vision_learner(dls, arch, metrics={"accuracy": MulticlassAccuracy()}, verbose=0, **kwargs)


def pretrain(base: DataLoaders, args, path: Path) -> tuple[float, tuple]:
    set_seed(0)
    dls = task(base, range(0, 5), args.pretrain_items, args.valid_items, args.size, 128)
    learn = learner(dls, args.arch, pretrained=False)
    learn.fit_one_cycle(args.pretrain_epochs, 4e-3)
    torch.save(learn.model.state_dict(), path)
    return learn.history[-1]["accuracy"], (dls.train.mean, dls.train.std)


def fine_tuned(base: DataLoaders, args, path: Path, stats: tuple, head: str, seed: int) -> float:
    set_seed(seed)  # the new head's initial weights, and the batches
    dls = task(base, range(5, 10), args.items, args.valid_items, args.size, args.bs)
    learn = learner(dls, args.arch, weights=path, head=head, stats=stats)
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=1, lr_mult=args.lr_mult)
    return learn.history[-1]["accuracy"]


def from_scratch(base: DataLoaders, args, head: str, seed: int) -> float:
    set_seed(seed)
    dls = task(base, range(5, 10), args.items, args.valid_items, args.size, args.bs)
    learn = learner(dls, args.arch, pretrained=False, head=head)
    learn.fit_one_cycle(args.epochs + 1, args.scratch_lr)
    return learn.history[-1]["accuracy"]


def construction_seconds(base: DataLoaders, args, path: Path, stats: tuple) -> float:
    """Median time of vision_learner(dls, arch, weights=file): the model built and its weights read and loaded."""
    dls = task(base, range(5, 10), 16, 16, args.size, args.bs)
    times = []
    for _ in range(args.timing_repeats):
        start = time.perf_counter()
        learner(dls, args.arch, weights=path, stats=stats)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summary(name: str, accs: list[float]) -> str:
    spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
    return f"{name:26} {statistics.mean(accs):.4f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", help="a torchvision architecture (default: resnet18)")
    parser.add_argument("--size", type=int, default=64, help="image side the 32x32 images are resized to")
    parser.add_argument("--pretrain-items", type=int, default=None, help="pretraining images (default: all 25,000)")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--items", type=int, default=500, help="training images of the new task")
    parser.add_argument("--bs", type=int, default=32, help="batch size of the new task")
    parser.add_argument("--epochs", type=int, default=5, help="fine_tune's unfrozen epochs (scratch: one more)")
    parser.add_argument("--lr", type=float, default=1e-2, help="fine_tune's base_lr")
    parser.add_argument("--lr-mult", type=float, default=10, help="fine_tune's lr_mult (head lr / first group's)")
    parser.add_argument("--scratch-lr", type=float, default=1e-2)
    parser.add_argument("--heads", nargs="+", default=["linear", "concat"], choices=["linear", "concat"])
    parser.add_argument("--valid-items", type=int, default=None, help="test images scored (default: all 5,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tiny setting: shows that every part runs")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    base = shared_cifar10(bs=128, aug=None, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pretrained.pth"
        start = time.perf_counter()
        accuracy, stats = pretrain(base, args, path)
        print(f"{args.arch} pretrained on classes 0-4 at {args.size}x{args.size}: accuracy {accuracy:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        results = {f"{arm}, {head} head": [] for head in args.heads for arm in ("fine-tuned", "from scratch")}
        for seed in args.seeds:
            for head in args.heads:
                results[f"fine-tuned, {head} head"].append(fine_tuned(base, args, path, stats, head, seed))
                results[f"from scratch, {head} head"].append(from_scratch(base, args, head, seed))
                print(f"seed {seed}, {head} head: fine-tuned {results[f'fine-tuned, {head} head'][-1]:.4f}, "
                      f"from scratch {results[f'from scratch, {head} head'][-1]:.4f}", flush=True)
        seconds = construction_seconds(base, args, path, stats)
    print(f"\nclasses 5-9 from {args.items} training images, {args.epochs + 1} epochs each, accuracy on "
          f"{args.valid_items or 'all'} test images (mean ± stdev over {len(args.seeds)} seeds):")
    for name, accs in results.items():
        print(summary(name, accs))
    print(f"vision_learner(dls, {args.arch!r}, weights=file): {seconds:.3f} s (median of {args.timing_repeats})")


if __name__ == "__main__":
    main()
