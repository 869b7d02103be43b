"""Image-folder loading speed: slowlearn's `image_folder` (first decode, then from its cache) against
torchvision's `ImageFolder` + `DataLoader(num_workers=2)` iterating once over the same files.

The files: CIFAR-10 as 60 000 JPEGs (../shared/data/cifar10-jpg-{train,test}.zip, unpacked into a
temporary folder first, untimed), at their own 32 x 32 and resized with `size=` (torchvision:
`Resize(size) + CenterCrop(size)`, the same "shorter side, then centre" method). Both produce uint8
tensors. The three run one after the other in one process, `--repeats` rounds; reported as images/s
and as ratios to torchvision measured side by side (the machine is shared: absolute figures are noisy).

    nice -n 15 python benchmarks/image_data.py [--size 24] [--repeats 1] [--limit N]

Measured 2026-11-24 on the shared 2-core machine (load average about 20, niced; one round):
                 candidate                 seconds   images/s  x torchvision
own size (32)    torchvision                 51.33      1,169           1.00
own size (32)    slowlearn first decode      37.55      1,598           1.37
own size (32)    slowlearn cached             3.94     15,243          13.04
size=24          torchvision                 69.77        860           1.00
size=24          slowlearn first decode      47.20      1,271           1.48
size=24          slowlearn cached             2.85     21,071          24.50
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader
from torchvision import datasets, transforms

from slowlearn.data.images import image_folder

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def unpack(folder: Path, limit: int | None) -> Path:
    """The JPEG zips unpacked into `folder/cifar10/{train,test}/<class>/`; `limit` keeps that many files."""
    for name in ("cifar10-jpg-train.zip", "cifar10-jpg-test.zip"):
        with zipfile.ZipFile(SHARED / name) as z:
            members = [m for m in z.namelist() if m.endswith(".jpg")]
            z.extractall(folder, members[::max(1, len(members) // (limit // 2))] if limit else members)
    return folder / "cifar10"


def torchvision_pass(root: Path, size: int | None) -> int:
    tfm = [transforms.Resize(size), transforms.CenterCrop(size)] if size else []
    tfm = transforms.Compose([*tfm, transforms.PILToTensor()])
    ds = ConcatDataset([datasets.ImageFolder(str(root / split), transform=tfm) for split in ("train", "test")])
    n = 0
    for xb, yb in DataLoader(ds, batch_size=512, num_workers=2):
        n += len(yb)
    assert xb.dtype == torch.uint8
    return n


def one_round(root: Path, size: int | None, cache: Path) -> dict[str, float]:
    """Seconds for: torchvision's pass, slowlearn's first decode (into the empty `cache`), its cached load."""
    def ours():
        return image_folder(root, size=size, device="cpu", verbose=False, cache_dir=cache)
    times = {}
    for name, run in (("torchvision", lambda: torchvision_pass(root, size)), ("slowlearn first decode", ours),
                      ("slowlearn cached", ours)):
        start = time.perf_counter()
        run()
        times[name] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=24, help="the resized case's size (default: 24)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="use only this many files (a quick check)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(Path(tmp), args.limit)  # also brings the files into the page cache for both
        n = sum(1 for _ in root.rglob("*.jpg"))
        for size in (None, args.size):
            rounds = [one_round(root, size, Path(tmp) / f"cache-{size}-{r}") for r in range(args.repeats)]
            results[f"size={size}" if size else "own size (32)"] = {
                name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    print(f"{n} CIFAR-10 JPEGs, median of {args.repeats} round(s), each running the three one after the other; "
          f"torchvision: ImageFolder + DataLoader(batch_size=512, num_workers=2), one pass")
    print(f"{'':16} {'candidate':24} {'seconds':>8} {'images/s':>10} {'x torchvision':>14}")
    for label, times in results.items():
        for name, t in times.items():
            print(f"{label:16} {name:24} {t:8.2f} {n / t:10,.0f} {times['torchvision'] / t:14.2f}")


if __name__ == "__main__":
    main()
