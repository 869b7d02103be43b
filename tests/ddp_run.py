"""A small distributed run for the tests, launched with torchrun (or plainly, as one process):
`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_run.py OUT [--fail-rank R]`.
Each rank saves its final weights and history under OUT/results/ (the test harness's files, not slowlearn's)."""
import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from slowlearn import (
    Callback,
    ChannelsLastCB,
    CheckpointCB,
    CSVLoggerCB,
    DataLoaders,
    EarlyStoppingCB,
    GradientAccumulationCB,
    Learner,
    TensorLoader,
    find_batch_size,
    seed_cnn,
    set_seed,
)
from slowlearn.distributed import rank, world_size
from slowlearn.train import default_cbs

GLOBAL_BS = 32


def synthetic_dls(bs: int, seed: int | None = 1, n_train: int = 256, n_valid: int = 64,
                  data_seed: int = 0) -> DataLoaders:
    """Learnable images: the class is the brightest of 4 quadrants (`data_seed` draws other images)."""
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randint(0, 128, (n_train + n_valid, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (n_train + n_valid,), generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * 14:(r + 1) * 14, c * 14:(c + 1) * 14] += 100
    norm = dict(mean=0.4, std=0.3, device="cpu")
    return DataLoaders(TensorLoader(x[:n_train], y[:n_train], bs, shuffle=True, seed=seed, **norm),
                       TensorLoader(x[n_train:], y[n_train:], 2 * bs, **norm))


def torch_loader_dls(bs: int, distributed_sampler: bool) -> DataLoaders:
    """The same data through torch DataLoaders; the training one with a DistributedSampler, or none."""
    dls = synthetic_dls(bs)
    train = TensorDataset(dls.train.x.float() / 255, dls.train.y)
    sampler = DistributedSampler(train, world_size(), rank(), seed=1) if distributed_sampler else None
    valid = TensorDataset(dls.valid.x.float() / 255, dls.valid.y)
    return DataLoaders(DataLoader(train, bs, sampler=sampler), DataLoader(valid, 2 * bs))


def model() -> nn.Module:
    set_seed(0)
    return seed_cnn(norm=None, n_classes=4)


class SeenItems(Callback):
    """The training items each epoch shows this rank, as weighted sums of their pixels (fingerprints)."""

    def __init__(self):
        self.sums = {}

    def after_batch(self, learn):
        if learn.training:
            x = learn.batch[0].flatten(1).double()
            fingerprints = x @ torch.linspace(1, 2, x.shape[1], dtype=torch.float64)
            self.sums.setdefault(learn.epoch, []).extend(fingerprints.tolist())


class CountAllReduces(Callback):
    """Counts the gradient all-reduces of DistributedDataParallel (one per bucket and synchronised backward),
    and with `every_batch` synchronises every micro-batch, as DDP does when nobody says otherwise."""

    order = -19  # right after DistributedCB has wrapped the model and set this batch's synchronisation

    def __init__(self, every_batch: bool):
        self.every_batch, self.count = every_batch, 0

    def before_fit(self, learn):
        def counting_hook(state, bucket):
            self.count += 1
            return allreduce_hook(state, bucket)
        learn.model.register_comm_hook(None, counting_hook)

    def before_batch(self, learn):
        if self.every_batch:
            learn.model.require_backward_grad_sync = True


class FailOn(Callback):
    def __init__(self, fail_rank):
        self.fail_rank = fail_rank

    def after_batch(self, learn):
        if rank() == self.fail_rank and learn.iter == 2:
            raise RuntimeError(f"deliberate failure on rank {rank()}")


def decisions(out: Path) -> None:
    """Each rank with its own data: lr_find, find_batch_size and an early-stopped fit, whose decisions
    (suggested lr, rows, stopping epoch) every rank must take alike; each rank saves what it decided."""
    dls = synthetic_dls(GLOBAL_BS // world_size(), data_seed=rank())
    stop = EarlyStoppingCB("valid_loss", patience=1, min_delta=10.)  # improves only on the first epoch: stops at 1
    learn = Learner(model(), dls, lr=0.1, cbs=[*default_cbs(), stop],
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    suggestion = learn.lr_find(num_it=30, show_plot=False)
    rows = find_batch_size(model(), dls, candidates=(16, 64, 1024), steps=1)
    learn.fit(4, lr=suggestion.valley)
    (out / "results").mkdir(parents=True, exist_ok=True)
    torch.save({"suggestion": list(suggestion), "losses": learn.lr_finder.losses, "rows": rows,
                "stopped": stop.stopped_epoch}, out / "results" / f"rank{rank()}.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--one-cycle", action="store_true", help="a one-cycle fit, and channels-last layout")
    parser.add_argument("--accumulate", type=int, default=None,
                        help="gradient accumulation over this many micro-batches; counts the all-reduces")
    parser.add_argument("--sync-every-batch", action="store_true", help="with --accumulate: all-reduce every micro-batch")
    parser.add_argument("--torch-loader", choices=("distributed-sampler", "plain"), default=None,
                        help="torch DataLoaders instead of TensorLoaders")
    parser.add_argument("--unseeded", action="store_true",
                        help="an unseeded training loader, and each rank's torch RNG seeded differently")
    parser.add_argument("--uneven", action="store_true",
                        help="rank r's training set has 64 * r more items than rank 0's (data that differs by rank)")
    parser.add_argument("--decisions", action="store_true",
                        help="each rank with its own data: lr_find, find_batch_size, early stopping (see decisions)")
    parser.add_argument("--checkpoint-on-rank0-only", action="store_true",
                        help="a CheckpointCB on rank 0 alone (a mistake: all ranks agree on when SIGTERM stops them)")
    args = parser.parse_args()
    out = Path(args.out)
    if args.decisions:
        decisions(out)
        sys.exit(0)
    checkpoints = [] if args.checkpoint_on_rank0_only and rank() != 0 else [CheckpointCB(out / "ckpt.pt")]
    cbs = [*default_cbs(), CSVLoggerCB(out / "log.csv"), *checkpoints]
    if args.fail_rank is not None:
        cbs.append(FailOn(args.fail_rank))
    bs = GLOBAL_BS // world_size()
    dls = synthetic_dls(bs) if args.torch_loader is None else torch_loader_dls(bs, args.torch_loader != "plain")
    if args.unseeded:
        dls = synthetic_dls(bs, seed=None)
        cbs.append(seen := SeenItems())
    if args.accumulate is not None:
        cbs += [GradientAccumulationCB(args.accumulate), all_reduces := CountAllReduces(args.sync_every_batch)]
    if args.uneven:
        dls = synthetic_dls(bs, n_train=256 + 64 * rank())
    learn = Learner(model(), dls, lr=0.1, cbs=cbs,
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9))
    if args.unseeded:
        torch.manual_seed(100 + rank())  # after model(), which seeds every rank alike
    if args.one_cycle:
        learn.fit_one_cycle(2, 0.1, cbs=[ChannelsLastCB()], resume=args.resume)
    else:
        learn.fit(2, resume=args.resume)
    assert not isinstance(learn.model, nn.parallel.DistributedDataParallel) and learn.device is None
    (out / "results").mkdir(parents=True, exist_ok=True)
    torch.save({"weights": [p.detach() for p in learn.model.parameters()], "history": learn.history,
                "all_reduces": all_reduces.count if args.accumulate else None,
                "seen": seen.sums if args.unseeded else None},
               out / "results" / f"rank{rank()}.pt")
    sys.exit(0)
