"""DistributedCB: data-parallel training on torch.distributed (DistributedDataParallel), launched by torchrun."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..callback import Callback
from ..distributed import broadcast_, check_ranks_agree, init_distributed, local_rank, rank, world_size
from .gradients import steps_after_this_batch

__all__ = ["DistributedCB"]


def _check_torch_train_loader(dl) -> None:
    if isinstance(dl, DataLoader) and not isinstance(dl.sampler, DistributedSampler):
        raise ValueError("The training loader is a torch DataLoader without a DistributedSampler, so every process "
                         "would train on the same batches: create it with "
                         "`DataLoader(dataset, batch_size, sampler=DistributedSampler(dataset))` (no `shuffle=`; "
                         "the sampler shuffles), or use slowlearn's TensorLoader, which DistributedCB shards.")


class DistributedCB(Callback):
    """Trains on every process of a torchrun launch: one model replica per process, gradients averaged.

    At `before_fit`: starts the process group if needed (`nccl` on CUDA, `gloo` on the CPU), puts the
    model on this process's device (`cuda:LOCAL_RANK`, or the CPU), converts BatchNorm to SyncBatchNorm
    when `sync_bn` (CUDA only: refused on the CPU), wraps it in DistributedDataParallel, and shards the
    loaders: every rank walks the same permutation (rank 0's loader generator is broadcast) and takes every
    `world_size`-th sample (an unseeded loader gets one seed, the same on every rank), so the batch size is per
    process. During the fit `learn.device` is this process's device (DeviceCB moves batches there);
    after it `learn.model` is the model it wrapped and `learn.device` what it was before. With gradient
    accumulation (`learn.accumulate` > 1) gradients are averaged over processes only in the backward
    pass before each optimizer step, not after every micro-batch.
    `default_cbs()` (so `train`, `train_1cycle` and the CLI) adds it when `WORLD_SIZE` > 1.

    A torch DataLoader cannot be sharded from outside: give the training one a
    `DistributedSampler(dataset)` (its `set_epoch` is called every epoch here); without one every
    process would train on the same batches, which is an error.
    """

    order = -20  # before DeviceCB, which moves batches to the device set here
    sweep = True

    def __init__(self, sync_bn: bool = False, backend: str | None = None):
        self.sync_bn, self.backend = sync_bn, backend
        self._wrapped = None

    def before_fit(self, learn) -> None:
        if not init_distributed(self.backend):
            return
        _check_torch_train_loader(learn.dls.train)  # before anything is wrapped or sharded
        device = torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
        if self.sync_bn and device.type != "cuda":  # DDP refuses it, after the layers were converted in place
            raise ValueError("DistributedCB(sync_bn=True) needs CUDA GPUs (torch's SyncBatchNorm runs only there), and "
                             "this process trains on the CPU: use DistributedCB() without sync_bn (each process "
                             "normalises its own batch)")
        self._device_before, learn.device = learn.device, device
        model = learn.model.to(device)
        if self.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self._wrapped = model
        learn.model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        collective_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        for dl, even in ((learn.dls.train, True), (learn.dls.valid, False)):
            if hasattr(dl, "shard"):
                if dl.seed is None:  # each process's global RNG would pick its own order: share one seed
                    dl.seed = int(broadcast_(torch.randint(2**62, (), device=collective_device)))
                    dl.generator.manual_seed(dl.seed)
                dl.generator.set_state(broadcast_(dl.generator.get_state().to(collective_device)).cpu())
                dl.shard(rank(), world_size(), even=even)
        check_ranks_agree({"training batches": len(learn.dls.train), "epochs": learn.n_epochs,
                           "micro-batches per step": learn.accumulate,
                           "CheckpointCBs": sum(getattr(cb, "on_sigterm", False) for cb in learn.cbs)},
                          fix="give every process the same data, options and callbacks (with a torch DataLoader, a "
                              "DistributedSampler gives every process the same number of batches; CheckpointCB "
                              "goes to every process: only rank 0 writes, and on SIGTERM all agree when to stop).")

    def before_batch(self, learn) -> None:
        if learn.training and isinstance(learn.model, DistributedDataParallel):
            learn.model.require_backward_grad_sync = steps_after_this_batch(learn)  # what `no_sync()` sets

    def before_epoch(self, learn) -> None:
        sampler = getattr(learn.dl, "sampler", None)
        if learn.training and isinstance(sampler, DistributedSampler):
            sampler.set_epoch(learn.epoch)  # a new shuffle each epoch, the same on every process

    def cleanup_fit(self, learn) -> None:
        if self._wrapped is not None:
            learn.model, learn.device, self._wrapped = self._wrapped, self._device_before, None
        for dl in (learn.dls.train, learn.dls.valid):
            if hasattr(dl, "shard"):
                dl.shard(0, 1)  # whole datasets again for get_preds, validate, pictures
