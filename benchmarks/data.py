"""Data loading throughput: slowlearn's in-memory Fashion-MNIST loader vs torchvision's per-sample pipeline.

torchvision: `FashionMNIST(transform=Compose([ToTensor(), Normalize(...)]))` + `DataLoader(bs=512,
shuffle=True)`, the usual tutorial pipeline (num_workers=0, and 2 = this machine's cores).
slowlearn: `fashion_mnist(bs=512)`'s training loader. Both yield normalised float batches of
512 x 1 x 28 x 28 for a full epoch; reported as samples/s and the ratio (target >= 10 x).

    python benchmarks/data.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from common import interleaved
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from slowlearn import fashion_mnist
from slowlearn.data import find_fashion_mnist


def torchvision_dataset(root: Path) -> datasets.FashionMNIST:
    """torchvision's FashionMNIST over the same files (it reads the raw IDX files, un-gzipped)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in find_fashion_mnist().glob("*-ubyte.gz"):
        with gzip.open(gz, "rb") as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tfm = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    return datasets.FashionMNIST(str(root), train=True, transform=tfm, download=False)


def epoch(loader) -> None:
    n = 0
    for xb, yb in loader:
        n += len(yb)
    assert n == 60_000 and xb.dtype == torch.float32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours = fashion_mnist(bs=512, device="cpu").train
    with tempfile.TemporaryDirectory() as tmp:
        ds = torchvision_dataset(Path(tmp))
        candidates = {
            "slowlearn fashion_mnist": lambda: lambda: epoch(ours),
            "torchvision, 0 workers": lambda: lambda: epoch(DataLoader(ds, 512, shuffle=True)),
            "torchvision, 2 workers": lambda: lambda: epoch(DataLoader(ds, 512, shuffle=True, num_workers=2)),
        }
        times = interleaved(candidates, args.repeats)
    base = statistics.median(times["slowlearn fashion_mnist"])
    print(f"One epoch of 60 000 training images, batch 512, CPU, {args.repeats} interleaved repeats (median):")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:26} {t:7.3f} s {60_000 / t:12,.0f} samples/s {t / base:8.1f} x the time of slowlearn")


if __name__ == "__main__":
    main()
