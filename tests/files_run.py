"""A small run on file-backed image loaders for the fault tests, in one process or under torchrun:
`python tests/files_run.py IMAGES OUT [--workers W] [--kill E.I [--rank R]] [--sigterm E.I [--rank R]]`.

It trains a tiny CNN with one-cycle and crop+flip augmentation, checkpointing every 2 batches
(CheckpointCB(OUT/ckpt.pt, every=2)), and always asks for resume="auto": the first start trains afresh, a
restart continues from the checkpoint. `--kill E.I` SIGKILLs rank R after batch I of epoch E, `--sigterm E.I`
sends it SIGTERM there; either happens once per OUT (a marker file: torchrun's restart count is per agent).
Each rank saves its final weights under OUT/results/ (the test harness's files, not slowlearn's)."""
import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from slowlearn import Callback, CheckpointCB, DistributedCB, Learner, image_folder, set_seed
from slowlearn.distributed import rank, world_size

GLOBAL_BS = 16
EPOCHS = 2


class Fault(Callback):
    """Sends `sig` to this process after batch `at` = (epoch, iter) on rank `on_rank`, once (`marker`)."""

    def __init__(self, sig, at, on_rank, marker: Path):
        self.sig, self.at, self.on_rank, self.marker = sig, at, on_rank, marker

    def after_batch(self, learn):
        if learn.training and (learn.epoch, learn.iter) == self.at and rank() == self.on_rank \
                and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.sig)


def model() -> nn.Module:
    set_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def learner(images, out: Path, workers: int, cbs=()) -> Learner:
    dls = image_folder(images, bs=GLOBAL_BS // world_size(), in_memory=False, num_workers=workers, device="cpu",
                       verbose=False)
    cbs = [*([DistributedCB()] if world_size() > 1 else []), CheckpointCB(out / "ckpt.pt", every=2), *cbs]
    return Learner(model(), dls, lr=0.05, cbs=cbs, opt_func=torch.optim.AdamW)


def position(text: str) -> tuple[int, int]:
    epoch, batch = text.split(".")
    return int(epoch), int(batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--kill", type=position, default=None)
    parser.add_argument("--sigterm", type=position, default=None)
    parser.add_argument("--rank", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    faults = [Fault(sig, at, args.rank, out / f"{name}.done") for sig, at, name in
              ((signal.SIGKILL, args.kill, "kill"), (signal.SIGTERM, args.sigterm, "sigterm")) if at is not None]
    learn = learner(args.images, out, args.workers, faults)
    torch.manual_seed(1000)  # every rank alike, as set_seed does; a resumed run's randomness comes from the checkpoint
    learn.fit_one_cycle(EPOCHS, resume="auto")
    (out / "results").mkdir(parents=True, exist_ok=True)
    torch.save({"weights": [p.detach() for p in learn.model.parameters()], "history": learn.history},
               out / "results" / f"rank{rank()}.pt")
    sys.exit(0)
