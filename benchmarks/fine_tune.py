"""Transfer learning: does `learn.fine_tune` from pretrained weights beat training from scratch at equal epochs?

torchvision's resnet18(weights=None) (with a 1-channel first conv) is pretrained on Fashion-MNIST's
first five classes (T-shirt, trouser, pullover, dress, coat) and its weights saved to a local file. A new
model loads them, gets a new 5-class head, and is fine-tuned on a small training set of the other five
classes (sandal, shirt, sneaker, bag, ankle boot) with `fine_tune(epochs, freeze_epochs=1)`; the same
architecture from its random initialisation gets `fit_one_cycle(epochs + 1)` on the same images (the
same number of epochs, and batches in the same order). Both are scored on all test images of those
five classes (or the first `--valid-items`). Both arms are slowlearn recipes (what is compared is the
recipe, not the framework); the weights file is a plain `torch.save`, as any other trainer would write.

    python benchmarks/fine_tune.py [--pretrain-items 12000] [--items 1000] [--epochs 2] [--seeds 0 1] [--lr 1e-2] [--lr-mult 10]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from slowlearn import DataLoaders, Learner, MetricsCB, TensorLoader, fashion_mnist, set_seed
from torcheval.metrics import MulticlassAccuracy


def model_for_28x28(n_classes: int) -> nn.Module:
    model = resnet18(weights=None, num_classes=n_classes)
    model.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)  # grey images
    return model


def classes_subset(dl: TensorLoader, classes: range, n: int | None, shuffle: bool, bs: int) -> TensorLoader:
    keep = torch.isin(dl.y, torch.tensor(list(classes), device=dl.y.device)).nonzero().squeeze(1)[:n]
    new = TensorLoader(dl.x[keep], dl.y[keep] - classes.start, bs, shuffle=shuffle, device=dl.device)
    new.scale, new.shift = dl.scale, dl.shift
    return new


def task(base: DataLoaders, classes: range, n: int | None, bs: int, n_valid: int | None) -> DataLoaders:
    return DataLoaders(classes_subset(base.train, classes, n, True, bs),
                       classes_subset(base.valid, classes, n_valid, False, 512))


def learner(model: nn.Module, dls: DataLoaders) -> Learner:
    return Learner(model, dls, lr=2e-3, opt_func=torch.optim.AdamW, cbs=[MetricsCB(accuracy=MulticlassAccuracy())])


def pretrain(base: DataLoaders, args, path: Path) -> float:
    set_seed(0)
    learn = learner(model_for_28x28(5), task(base, range(0, 5), args.pretrain_items, 128, args.valid_items))
    learn.fit_one_cycle(args.pretrain_epochs, 4e-3)
    torch.save(learn.model.state_dict(), path)
    return learn.history[-1]["accuracy"]


def fine_tuned(base: DataLoaders, args, path: Path, seed: int) -> float:
    set_seed(seed)  # the new head's initial weights, and the batches
    model = model_for_28x28(5)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.fc = nn.Linear(512, 5)  # the new task's head
    set_seed(seed)
    learn = learner(model, task(base, range(5, 10), args.items, 64, args.valid_items))
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=1, lr_mult=args.lr_mult)
    return learn.history[-1]["accuracy"]


def from_scratch(base: DataLoaders, args, seed: int) -> float:
    set_seed(seed)
    model = model_for_28x28(5)
    set_seed(seed)  # the same batches as the fine-tuned run
    learn = learner(model, task(base, range(5, 10), args.items, 64, args.valid_items))
    learn.fit_one_cycle(args.epochs + 1, args.scratch_lr)
    return learn.history[-1]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-items", type=int, default=12000)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--items", type=int, default=1000, help="training images of the new task")
    parser.add_argument("--epochs", type=int, default=2, help="fine_tune's unfrozen epochs (scratch: one more)")
    parser.add_argument("--lr", type=float, default=1e-2, help="fine_tune's base_lr")
    parser.add_argument("--lr-mult", type=float, default=10, help="fine_tune's lr_mult (head lr / first group's)")
    parser.add_argument("--scratch-lr", type=float, default=2e-3)
    parser.add_argument("--valid-items", type=int, default=None, help="test images scored (default: all 5000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    base = fashion_mnist(bs=128)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pretrained.pt"
        start = time.perf_counter()
        print(f"pretrained on classes 0-4: accuracy {pretrain(base, args, path):.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        tuned, scratch = [], []
        for seed in args.seeds:
            tuned.append(fine_tuned(base, args, path, seed))
            scratch.append(from_scratch(base, args, seed))
            print(f"seed {seed}: fine-tuned {tuned[-1]:.4f}, from scratch {scratch[-1]:.4f}", flush=True)
    print(f"classes 5-9 from {args.items} training images, {args.epochs + 1} epochs each: fine-tuned "
          f"{statistics.mean(tuned):.4f}, from scratch {statistics.mean(scratch):.4f} "
          f"(mean of {len(args.seeds)} seeds)")


if __name__ == "__main__":
    main()
