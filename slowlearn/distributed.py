"""torch.distributed helpers: who am I, only-rank-0 output, and collectives that are no-ops in one process.

Launch any slowlearn script with `torchrun --nproc_per_node=N script.py`: torchrun sets RANK,
LOCAL_RANK and WORLD_SIZE, DistributedCB does the rest. In a single process every helper here does
what a single process needs (rank 0 of 1).
"""
from __future__ import annotations

import atexit
import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "local_rank", "is_rank0", "rank0_print", "init_distributed", "rank0_first",
           "all_reduce_sum", "all_reduce_mean", "broadcast_", "check_ranks_agree"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_rank0() -> bool:
    return rank() == 0


def rank0_print(*args, **kwargs) -> None:
    if is_rank0():
        print(*args, **kwargs)


def init_distributed(backend: str | None = None, timeout_s: float = 300.) -> bool:
    """Start the process group from torchrun's environment if WORLD_SIZE > 1 and none is running:
    `nccl` with CUDA, `gloo` on the CPU; it is destroyed when the program exits. Returns whether the run
    is distributed."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    atexit.register(_destroy_process_group)
    return True


def _destroy_process_group() -> None:
    """At exit, as torch asks (else it warns, and NCCL may leak resources); a group already gone is fine."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def rank0_first():
    """Run the body on rank 0 first (download, decode, cache), then on the other ranks."""
    distributed = init_distributed()
    if distributed and not is_rank0():
        dist.barrier()
    try:
        yield
    finally:
        if distributed and is_rank0():
            dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (nothing to do in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, in place (nothing to do in one process, nor where torchrun's WORLD_SIZE is set but no
    process group was started: then there is nothing to average over)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
        x.div_(dist.get_world_size())
    return x


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `x` on every rank with rank `src`'s value (nothing to do in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(x, src)
    return x


def check_ranks_agree(values: dict[str, int | None], fix: str) -> None:
    """Stop every rank with one message when the ranks differ in any of `values` (numbers of batches,
    epochs...): a run whose ranks differ there would wait in a collective until its timeout and then
    die without naming the cause. `fix` says what to change. Nothing to do in one process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    mine = torch.tensor([-1 if v is None else int(v) for v in values.values()], dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    table = torch.stack(gathered).cpu().T.tolist()  # one row per value, one column per rank
    differ = [f"{name}: " + ", ".join(f"rank {r} has {v}" for r, v in enumerate(row))
              for name, row in zip(values, table) if len(set(row)) > 1]
    if differ:
        raise RuntimeError(f"The processes of this distributed run disagree on what must be the same on all of "
                           f"them ({'; '.join(differ)}), so they would wait for each other forever: {fix}")
