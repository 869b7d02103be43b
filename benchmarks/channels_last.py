"""ChannelsLastCB: the CIFAR-10 recipe with and without channels-last memory layout, side by side.

The recipe of benchmarks/cifar.py (ResNet 16..256, train_1cycle with AdamW, label smoothing, crop +
flip, bf16, batch 256) on a `--n-train` image subset for one epoch; each repeat trains both layouts
from the same weights on the same batches, interleaved. Reports the time ratio and both accuracies.

    python benchmarks/channels_last.py [--repeats 3] [--n-train 10000]
"""
from __future__ import annotations

import argparse
import contextlib
import io
from functools import partial

import torch.nn.functional as F
from cifar import shared_cifar10
from common import interleaved, report

from slowlearn import ChannelsLastCB, MixedPrecisionCB, resnet, set_seed, train_1cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=10_000)
    args = parser.parse_args()
    accuracy: dict[str, list[float]] = {"contiguous": [], "channels last": []}

    def candidate(name, extra_cbs):
        def setup():
            dls = shared_cifar10(bs=256, n_train=args.n_train, seed=0)
            set_seed(0)
            model = resnet(in_channels=3)

            def run():
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    learn = train_1cycle(model, lr=1e-2, n_epochs=1, dls=dls,
                                         loss_func=partial(F.cross_entropy, label_smoothing=0.1),
                                         cbs=[MixedPrecisionCB("bf16"), *extra_cbs])
                accuracy[name].append(learn.history[-1]["accuracy"])
            return run
        return setup

    times = interleaved({"contiguous": candidate("contiguous", []),
                         "channels last": candidate("channels last", [ChannelsLastCB()])}, args.repeats)
    print(f"CIFAR-10 recipe, {args.n_train} training images, 1 epoch, {args.repeats} interleaved repeats:")
    report(times, "contiguous")
    for name, accs in accuracy.items():
        print(f"{name}: validation accuracy per run (the untimed warm-up first) {', '.join(f'{a:.4f}' for a in accs)}")


if __name__ == "__main__":
    main()
