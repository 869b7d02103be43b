"""Tuners that try settings on the model before training: `lr_find` (an lr sweep that restores everything
afterwards) and `find_batch_size` (training throughput per batch size)."""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .arguments import check_range
from .callbacks import LRFinderCB, SuggestedLRs
from .device import copy_gradients, model_device, put_back_gradients, sync_time
from .distributed import all_reduce_mean
from .randomness import randomness, restore_randomness

__all__ = ["lr_find", "find_batch_size"]


def find_batch_size(model: torch.nn.Module, dls, candidates: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
                    steps: int = 5, opt_func=torch.optim.AdamW, loss_func=F.cross_entropy) -> list[dict]:
    """Training throughput (samples/s) for each batch size in `candidates`, on a copy of `model`, until
    the device runs out of memory. Uses the first samples of `dls.train` (an in-memory loader); a candidate
    larger than them gets a row saying so, and a ValueError when none fits. torch's random states are as
    they were afterwards (dropout in the trials draws from them). In a distributed run every rank gets the
    same rows: the mean throughput over the ranks, and out of memory when any rank ran out (so call it on every
    rank: they exchange their timings)."""
    check_range("steps", steps, 1, integer=True, owner="find_batch_size")
    for bs in candidates:
        check_range("batch size", bs, 1, integer=True, owner="find_batch_size")
    if not hasattr(dls.train, "x"):
        raise ValueError(f"find_batch_size times batches sliced from images held in memory, and the training loader "
                         f"is a {type(dls.train).__name__}: load a subset in memory to try the batch sizes (e.g. "
                         f"image_folder(path, n_train=4096)), then train with any loader.")
    n_samples = len(dls.train.x)
    if not any(bs <= n_samples for bs in candidates):
        raise ValueError(f"find_batch_size: every candidate batch size ({', '.join(map(str, candidates))}) is larger "
                         f"than the {n_samples} training samples, so none can be timed: give smaller candidates "
                         f"(at most {n_samples}), or more training data")
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _throughputs(model, dls, candidates, steps, opt_func, loss_func, device)


def _throughputs(model, dls, candidates, steps, opt_func, loss_func, device) -> list[dict]:
    x_all, y_all = dls.train.x, dls.train.y
    results = []
    for bs in candidates:
        if bs > len(x_all):
            results.append({"bs": bs, "samples_per_s": None, "note": f"larger than the {len(x_all)} training samples"})
            continue
        seconds = _time_steps(model, dls.train.normalise(x_all[:bs]).to(device), y_all[:bs].to(device), steps,
                              opt_func, loss_func, device)
        if seconds is None:
            results.append({"bs": bs, "samples_per_s": None, "note": "out of memory"})
            break
        results.append({"bs": bs, "samples_per_s": round(bs * steps / seconds, 1), "note": ""})
    return results


def _time_steps(model, xb, yb, steps, opt_func, loss_func, device) -> float | None:
    """Seconds for `steps` training steps on a copy of `model` (after one warm-up step), as the mean over
    the ranks of a distributed run; None when this rank or any other ran out of memory."""
    trial = copy.deepcopy(model).to(device).train()
    opt = opt_func(trial.parameters(), 1e-3)
    seconds = 0.
    try:
        for i in range(steps + 1):
            if i == 1:  # the first step warms up kernels and allocators
                start = sync_time(device)
            loss_func(trial(xb), yb).backward()
            opt.step()
            opt.zero_grad()
        seconds = sync_time(device) - start
    except torch.cuda.OutOfMemoryError:
        seconds = math.inf
    finally:
        del trial, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # every rank takes the same decision: out of memory anywhere stops all of them
    seconds = all_reduce_mean(torch.tensor([seconds], dtype=torch.float64, device=device)).item()
    return None if math.isinf(seconds) else seconds


def _snapshot(learn, sweepers) -> dict:
    """What a sweep changes: the weights and their gradients (a sweep may stop inside an accumulation window, and
    MomentumCB keeps decayed ones), the optimizer's state, the random states, the Learner's and the taking-part
    callbacks' attributes (position, history, dispatch, ...; restored as they were)."""
    return {
        "model": copy.deepcopy(learn.model.state_dict()),
        "grads": copy_gradients(learn.model),
        "opt": copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None,
        "random": randomness(learn.dls),
        "learner": dict(learn.__dict__),
        "callbacks": [(cb, dict(cb.__dict__)) for cb in sweepers],
    }


def _restore(learn, saved: dict) -> None:
    learn.model.load_state_dict(saved["model"])
    put_back_gradients(learn.model, saved["grads"])  # onto the device the sweep may have moved the model to
    if saved["opt"] is not None:
        learn.opt.load_state_dict(saved["opt"])
    restore_randomness(learn.dls, saved["random"])
    learn.__dict__.clear()
    learn.__dict__.update(saved["learner"])  # opt None again if the sweep created it
    for cb, attributes in saved["callbacks"]:
        cb.__dict__.clear()
        cb.__dict__.update(attributes)


def lr_find(learn, start_lr: float = 1e-7, end_lr: float = 10., num_it: int = 100, stop_div: bool = True,
            show_plot: bool = True) -> SuggestedLRs:
    """Sweep the lr over `num_it` training batches, then restore model (gradients included), optimizer, RNGs,
    loader order and history exactly, and the Learner's and its callbacks' attributes. Only the callbacks that take
    part in sweeps (`Callback.sweep`: device, precision, clipping, ...) run during it: nothing is recorded,
    scheduled, monitored or written to a file. Returns `SuggestedLRs(valley, steep)`; `learn.lr_finder`
    keeps the sweep and its `plot()`, drawn right away when `show_plot` (shown in a notebook, left open for
    `plt.show()` in a script)."""
    finder = LRFinderCB(start_lr, end_lr, num_it, stop_div)
    sweepers = [cb for cb in learn.cbs if cb.sweep]
    saved = _snapshot(learn, sweepers)
    learn.cbs = sweepers
    try:
        learn.fit(math.ceil(num_it / len(learn.dls.train)), cbs=[finder], valid=False)
    finally:
        _restore(learn, saved)
    learn.lr_finder = finder
    suggestion = finder.suggest()
    if show_plot:
        finder.plot(suggestion)
    return suggestion
