"""Random states: `set_seed`, and the snapshots of every RNG a run draws from (torch, CUDA, Python, NumPy
and the loaders' own generators) that checkpoints and sweeps save and restore."""
from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch

from .arguments import MAX_SEED, check_range

__all__ = ["set_seed", "randomness", "restore_randomness", "random_states_kept", "peek_batch", "rng_states",
           "set_rng_states", "loader_generators"]


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's RNGs (all devices) with `seed`, an integer from 0 to 2**32 - 1 (what
    NumPy takes); `deterministic` also asks torch for deterministic kernels (slower on the GPU)."""
    check_range("seed", seed, 0, MAX_SEED, high_open=False, integer=True, owner="set_seed")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def loader_generators(dls) -> dict[str, torch.Generator]:
    """The generators that order the loaders' batches, by split: a TensorLoader's, or the one given to a
    torch DataLoader as `generator=`. A DataLoader without one draws its order from torch's global RNG."""
    generators = {}
    for split in ("train", "valid"):
        generator = getattr(getattr(dls, split, None), "generator", None)
        if isinstance(generator, torch.Generator):
            generators[split] = generator
    return generators


def rng_states() -> dict:
    """torch's, CUDA's, NumPy's and Python's random states, as plain data (see `set_rng_states`)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def randomness(dls) -> dict:
    """All a fit draws random numbers from: the global RNGs and the loaders' generators, and the generator states
    that the loaders' current epochs drew their order from (what a save after a fit interrupted mid-epoch holds)."""
    starts = {split: dl.epoch_start_state for split, dl in _loaders(dls) if hasattr(dl, "epoch_start_state")}
    return {"rng": rng_states(), "loaders": {split: g.get_state() for split, g in loader_generators(dls).items()},
            "epoch_starts": starts}


def restore_randomness(dls, saved: dict) -> None:
    """Put back what `randomness(dls)` returned (or a checkpoint's "rng" and "loaders")."""
    set_rng_states(saved["rng"])
    generators = loader_generators(dls)
    for split, state in saved["loaders"].items():
        if split in generators:
            generators[split].set_state(state)
    for split, dl in _loaders(dls):
        if split in saved.get("epoch_starts", {}):
            dl.epoch_start_state = saved["epoch_starts"][split]


@contextmanager
def random_states_kept(dls):
    """Within it, draw as you like: the global RNGs and the loaders' generators (`randomness(dls)`) are put back as
    they were afterwards, so that the next fit gets the batches it would have had."""
    saved = randomness(dls)
    try:
        yield
    finally:
        restore_randomness(dls, saved)


def peek_batch(dls, loader=None):
    """The first batch of `loader` (default: `dls.train`), drawing nothing that training would: its order and
    augmentation draw on the loaders' generators and the global RNGs, which are put back as they were."""
    with random_states_kept(dls):
        return next(iter(loader if loader is not None else dls.train))


def _loaders(dls) -> list[tuple[str, object]]:
    return [(split, getattr(dls, split)) for split in ("train", "valid") if getattr(dls, split, None) is not None]


def set_rng_states(rng: dict) -> None:
    """Put back the random states that `rng_states()` returned."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_as_tuples(rng["python"]))


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
