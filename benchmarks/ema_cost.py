"""What WeightAveragingCB costs per step: the CIFAR recipe's model (`resnet(in_channels=3)`, fp32, bs 256)
trained for a few steps on random 32x32 images with and without an EMA of its weights, interleaved and
repeated; reported as a ratio and as milliseconds per step.

    python benchmarks/ema_cost.py [--steps 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from common import interleaved

from slowlearn import DataLoaders, Learner, TensorLoader, WeightAveragingCB, resnet, set_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_seed(0)
    x, y = torch.randint(0, 256, (args.steps * 256, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (args.steps * 256,))
    dls = DataLoaders(TensorLoader(x, y, 256, device="cpu"), TensorLoader(x[:256], y[:256], 256, device="cpu"))

    def run(cbs):
        def setup():
            learn = Learner(resnet(in_channels=3), dls, lr=1e-3, opt_func=torch.optim.AdamW, cbs=cbs())
            return lambda: learn.fit(1, valid=False)
        return setup

    times = interleaved({"no averaging": run(lambda: []), "EMA": run(lambda: [WeightAveragingCB(decay=0.99)])},
                        args.repeats)
    plain, ema = statistics.median(times["no averaging"]), statistics.median(times["EMA"])
    print(f"{args.steps} steps, median of {args.repeats}: without {plain / args.steps * 1e3:.0f} ms/step, "
          f"with EMA {ema / args.steps * 1e3:.0f} ms/step: ratio {ema / plain:.3f} "
          f"({(ema - plain) / args.steps * 1e3:+.1f} ms/step)")


if __name__ == "__main__":
    main()
