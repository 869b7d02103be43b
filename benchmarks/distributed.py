"""Time per epoch of the seed CNN on Fashion-MNIST with 1 and 2 gloo processes (torchrun, CPU).

The global batch is 512 in both (256 per process with 2). On a 2-core machine expect no speed-up:
the point is that DDP's correctness costs little. Launch: `python benchmarks/distributed.py`
(it runs torchrun itself; `--worker` is the per-process entry point).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch


def worker(epochs: int) -> None:
    from common import EpochTimer

    from slowlearn import get_kaiming_initialized_model, set_seed, train
    from slowlearn.distributed import world_size

    set_seed(0)
    train(get_kaiming_initialized_model(), lr=0.2, n_epochs=epochs, bs=512 // world_size(), cbs=[EpochTimer()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        worker(args.epochs)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; torchrun gives each of 2 processes 1 thread, "
          f"a single process keeps torch's default ({torch.get_num_threads()})")
    for nproc in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               __file__, "--worker", "--epochs", str(args.epochs)]
        lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
        epochs = [line for line in lines if line.startswith("EPOCH")]
        times = [float(line.split()[2]) for line in epochs[1:]]  # the first epoch includes warm-up
        print(f"{nproc} process(es): " + "; ".join(e[6:] for e in epochs)
              + f"  -> median of epochs 2+: {sorted(times)[len(times) // 2]:.3f} s")


if __name__ == "__main__":
    main()
