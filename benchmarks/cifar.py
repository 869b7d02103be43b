"""The CIFAR-10 notebook recipe on the whole JPEG set (../shared/data) on this machine: accuracy and time per epoch.

ResNet (16..256 channels) in channels-last layout, train_1cycle with AdamW, label smoothing 0.1, random
crop + flip, bf16, batch 256. Prints each epoch's validation accuracy and time, and the final accuracy with flip TTA.

    python benchmarks/cifar.py [--epochs 3] [--lr 1e-2]
"""
from __future__ import annotations

import argparse
import time
import zipfile
from functools import partial
from pathlib import Path

import torch.nn.functional as F
from common import EpochTimer

from slowlearn import ChannelsLastCB, DataLoaders, MixedPrecisionCB, resnet, set_seed, train_1cycle
from slowlearn.data import data_root as _data_root
from slowlearn.data.images import cifar10

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_cifar10(**kwargs) -> DataLoaders:
    """`cifar10(**kwargs)` from the JPEG zips in ../shared/data, unpacked into the data folder once."""
    root = _data_root(None)
    if not (root / "cifar10" / "train").is_dir():
        for name in ("cifar10-jpg-train.zip", "cifar10-jpg-test.zip"):
            zipfile.ZipFile(SHARED / name).extractall(root)
    return cifar10(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    start = time.perf_counter()
    dls = shared_cifar10(bs=256)
    print(f"data ready in {time.perf_counter() - start:.1f} s (decoded once, then cached)")
    set_seed(0)
    start = time.perf_counter()
    learn = train_1cycle(resnet(in_channels=3), lr=args.lr, n_epochs=args.epochs, dls=dls,
                         loss_func=partial(F.cross_entropy, label_smoothing=0.1),
                         cbs=[ChannelsLastCB(), MixedPrecisionCB("bf16"), EpochTimer()])
    total = time.perf_counter() - start
    p = learn.get_preds(tta=True)
    tta = (p.preds.argmax(-1) == p.targets).float().mean().item()
    print(f"{args.epochs} epochs in {total:.0f} s: valid accuracy {learn.history[-1]['accuracy']:.4f}, "
          f"{tta:.4f} with flip TTA")


if __name__ == "__main__":
    main()
