"""Complete checkpoints: everything needed to continue a run exactly, written atomically, loaded safely.

A checkpoint is a dict of tensors and plain Python values (so `torch.load(weights_only=True)` reads
it): model and optimizer state, the state of every callback that has `state_dict()`, the RNG states
(torch, CUDA, NumPy, Python, and each loader's generator), the history, and the position: `epoch`
(epochs completed) and `iter` (training batches completed in the epoch after those) with `train_done` (that
epoch's training phase is over: a resume goes on with its validation), plus the fit's
`n_epochs`, why it stopped early (`stop_reason`, None when it did not: such a run is over, and resuming it is
refused), `learn.lr`, the frozen layers, the optimizer's type, what the model takes (`inputs`: class names and
preprocessing, for image loaders, so that an export made later needs no guess) and a checksum of all of it.
Mid-epoch, a training loader that keeps its own position (a file-backed loader's workers: torchdata's
StatefulDataLoader state) adds it under `positions`. Reading, writing and the checks that a
checkpoint fits the Learner are in `checkpoint_io.py`; `resume_state` finds what a fit resumes from,
`resume="auto"` included.
"""
from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from .checkpoint_io import (
    FORMAT,
    CheckpointError,
    check_model_fits,
    check_optimizer_fits,
    checksum,
    non_finite_entries,
    read_verified,
    type_name,
    write_atomically,
)
from .device import bare_model, copy_gradients, drop_gradients, put_back_gradients
from .distributed import check_ranks_agree, init_distributed, is_rank0, rank0_print, world_size
from .randomness import loader_generators, restore_randomness, rng_states

__all__ = ["save", "load", "CheckpointError", "save_checkpoint", "read_checkpoint", "check_resume",
           "check_mid_epoch_resumable", "restore_weights", "restore_setup", "undo_point", "restore_callbacks",
           "restore_run_state", "resume_point", "batches_from", "callback_key", "resume_state", "auto_resume_path",
           "fine_tune_resumes"]


def save(learn, path: str | os.PathLike) -> None:
    """Checkpoint everything (model, optimizer, callbacks, RNGs, history) at the position training
    reached: the end of the last epoch, or, after an interrupted fit, its last optimizer step (so
    `fit(n_epochs, resume=path)` trains the rest of that epoch; the batch that was cut short had already
    moved BatchNorm statistics and random numbers, so that resume is close, not bitwise: CheckpointCB's
    saves, at steps, are exact)."""
    epoch, iter = learn._position
    if _mid_epoch(learn, iter, learn._train_done):
        check_mid_epoch_resumable(learn.dls.train, "learn.save after a fit interrupted mid-epoch")
    save_checkpoint(learn, path, epoch=epoch, iter=iter, train_done=learn._train_done)


def load(learn, path: str | os.PathLike):
    """Restore the model, optimizer, history and random states of a checkpoint written by `save` or
    CheckpointCB (safely: plain data only). To continue an interrupted run where it stopped, with
    its callbacks' state and position, use `fit(n_epochs, resume=path)` instead."""
    state = read_checkpoint(path)
    restore_weights(learn, state)
    restore_randomness(learn.dls, state)
    return learn


def callback_key(cbs, cb) -> str:
    """A callback's key in a checkpoint: its class name, numbered when the class appears more than once."""
    same = [other for other in cbs if type(other) is type(cb)]
    return type(cb).__name__ if len(same) == 1 else f"{type(cb).__name__}_{same.index(cb)}"


def _mid_epoch(learn, iter: int, train_done: bool = False) -> bool:
    """Whether `iter` training batches done leave some of the epoch's to train. After its last one, or once its
    training phase is over (`train_done`: a cancel may have cut it short), a checkpoint is taken during validation,
    and the next epoch draws a new order from the loader's generator as it is now."""
    train = getattr(learn.dls, "train", None)
    return train is not None and 0 < iter < len(train) and not train_done


def _loader_states(learn, mid_epoch: bool) -> dict:
    states = {}
    for split, generator in loader_generators(learn.dls).items():
        # mid-epoch, the permutation being used was drawn from the state at the epoch's start
        epoch_start = getattr(getattr(learn.dls, split), "epoch_start_state", None)
        use_start = mid_epoch and split == "train" and epoch_start is not None
        states[split] = epoch_start if use_start else generator.get_state()
    return states




def save_checkpoint(learn, path: str | os.PathLike, epoch: int, iter: int = 0, train_done: bool = False) -> Path:
    """Write `learn`'s complete state at position (`epoch`, `iter`) to `path` (`train_done`: epoch `epoch`'s
    training phase is over, its `after_epoch` handlers have run, and a resume goes on with its validation),
    atomically: the file is written next to its destination and renamed over it, so a crash leaves the previous
    checkpoint.
    Weights holding NaN or infinity are refused (CheckpointError), which keeps the previous file.
    In a distributed run only rank 0 writes; the model is saved without its DDP or compile wrapper."""
    path = Path(path)
    model_state = bare_model(learn.model).state_dict()
    _refuse_non_finite(model_state, path, epoch, iter)  # on every rank, so that all stop together
    if not is_rank0():
        return path
    state = {
        "format": FORMAT,
        "model": model_state,
        "opt": _opt_state_as_data(learn.opt) if learn.opt is not None else None,
        "opt_type": type_name(learn.opt) if learn.opt is not None else None,
        "callbacks": {callback_key(learn.cbs, cb): cb.state_dict() for cb in learn.cbs if hasattr(cb, "state_dict")},
        "rng": rng_states(),
        "loaders": _loader_states(learn, mid_epoch=_mid_epoch(learn, iter, train_done)),
        "positions": _loader_positions(learn, iter, train_done),
        "history": list(learn.history),
        "lr": _lr_as_data(learn.lr),
        "frozen": learn.frozen_state(),
        "fine_tune_stage": learn.fine_tune_stage,
        "epoch": epoch,
        "iter": iter,
        "train_done": train_done,
        "n_epochs": getattr(learn, "n_epochs", None),
        "stop_reason": learn.stop_reason,
        "train_batches": len(learn.dls.train) if getattr(learn.dls, "train", None) is not None else None,
        "inputs": _inputs(learn.dls),
    }
    state["checksum"] = checksum(state)
    write_atomically(state, path)
    return path


def _loader_positions(learn, iter: int, train_done: bool) -> dict:
    """Mid-epoch, where a training loader that keeps its own position stands (`position(batches)`: a
    file-backed loader's StatefulDataLoader state); nothing at an epoch's end. Every rank of a distributed
    run is at the same position of its own shard, so rank 0's resumes them all."""
    train = getattr(learn.dls, "train", None)
    return {"train": train.position(iter)} if _mid_epoch(learn, iter, train_done) and hasattr(train, "position") else {}


def _inputs(dls) -> dict | None:
    """What the model was trained on, for exporting it later: class names and preprocessing, for
    slowlearn's image loaders (None for other data)."""
    from .data import preprocessing_of
    valid = getattr(dls, "valid", None)
    if getattr(valid, "dtype", None) != torch.uint8 or len(getattr(valid, "item_shape", ())) != 3:
        return None
    return {"classes": list(getattr(dls, "classes", None) or []), "preprocessing": preprocessing_of(dls).to_dict()}


def _refuse_non_finite(model_state: dict, path: Path, epoch: int, iter: int) -> None:
    bad = non_finite_entries(model_state)
    if bad:
        kept = f"{path} still holds the last good checkpoint" if path.exists() else f"nothing was written to {path}"
        position = f"after epoch {epoch - 1}" if iter == 0 else f"at batch {iter} of epoch {epoch}"
        raise CheckpointError(
            f"Not saving a checkpoint {position}: the model's weights hold NaN or infinite "
            f"values ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}), so training has diverged; {kept}. "
            f"Lower the learning rate, clip gradients (GradientClipCB), or stop at the first non-finite loss "
            f"(TerminateOnNaNCB).")


def read_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)` (plain data only, never code) and verify
    its checksum. A file that is missing, damaged, unsafe or not a slowlearn checkpoint raises an error
    (FileNotFoundError or CheckpointError) that names it. The returned dict's "source" is `path`."""
    state = read_verified(path, map_location)
    state["source"] = str(path)
    return state


def check_mid_epoch_resumable(dl, saver: str) -> None:
    """A torch DataLoader that shuffles draws a new order when iterated again, so a mid-epoch checkpoint
    would resume on another permutation (some samples seen twice, others never): refuse it up front."""
    sampler = getattr(getattr(dl, "batch_sampler", None), "sampler", None) or getattr(dl, "sampler", None)
    if isinstance(dl, DataLoader) and isinstance(sampler, RandomSampler):
        raise CheckpointError(f"{saver} saves mid-epoch, but the training loader is a torch DataLoader that "
                              f"shuffles: resumed mid-epoch it would draw a new order, showing some samples twice "
                              f"and others never. Save at epoch ends (CheckpointCB(path)), or use slowlearn's "
                              f"TensorLoader, which resumes mid-epoch exactly; to keep just the weights, "
                              f"torch.save(learn.model.state_dict(), path).")


def check_resume(learn, state: dict, n_epochs: int, lr: float | None) -> None:
    """Before a resumed fit touches anything: it has epochs left to train (and did not stop early) and does not
    ask for an lr (the run continues with its saved lrs and schedule)."""
    source, done = state.get("source", "the checkpoint"), state["epoch"]
    if state.get("stop_reason"):
        raise CheckpointError(f"{source} is the end of a run that stopped early after {done} epochs "
                              f"({state['stop_reason']}), so fit({n_epochs}, resume=...) would train nothing: take "
                              f"its weights with learn.load(path), or start a new run without resume= (or with "
                              f"another checkpoint path).")
    if done >= n_epochs:
        raise CheckpointError(f"{source} has already trained {done} epochs, so fit({n_epochs}, resume=...) would "
                              f"train nothing: ask for more epochs than {done}, or take its weights with "
                              f"learn.load(path).")
    if lr is not None:
        raise CheckpointError(f"fit(lr={lr}, resume={source}): a resumed run continues with the learning rates and "
                              f"schedule it saved, so lr would be ignored: leave lr out, or start a new run from its "
                              f"weights with learn.load(path) and then fit(n_epochs, lr={lr}).")
    _check_loader_position(learn, state, world_size())


def _check_loader_position(learn, state: dict, n_processes: int) -> None:
    """A mid-epoch loader position fits the training loader: the same number of workers and processes."""
    position, train = state.get("positions", {}).get("train"), getattr(learn.dls, "train", None)
    if state["iter"] and position is not None and hasattr(train, "check_position"):
        try:
            train.check_position(position, n_processes)
        except ValueError as e:
            raise CheckpointError(f"{state.get('source', 'the checkpoint')}: {e}.") from None


def _check_same_batches(learn, state: dict) -> None:
    """A mid-epoch position means the same batches: checked after `before_fit`, which shards the loaders
    of a distributed run as they were when the checkpoint was saved."""
    source, saved, now = state.get("source", "the checkpoint"), state.get("train_batches"), len(learn.dls.train)
    if state["iter"] and saved is not None and saved != now:
        raise CheckpointError(f"{source} was saved after batch {state['iter']} of an epoch of {saved} batches, but "
                              f"the training loader now has {now}: resume mid-epoch with the batch size and data "
                              f"of the saved run (another batch size would skip the wrong samples), or resume from "
                              f"a checkpoint taken at the end of an epoch.")


def restore_weights(learn, state: dict) -> None:
    """Model, optimizer and history: what must be in place before the fit starts. Everything is checked
    to fit (the model's keys and shapes, the optimizer's type and groups) before anything is overwritten.
    The model's gradients are dropped: a checkpoint is taken after a step, where none wait (those of a batch
    interrupted between its backward pass and its step would go into the next step)."""
    opt = learn.opt
    if state["opt"] is not None and opt is None:  # kept only once the checkpoint fits (a refusal changes nothing)
        opt = learn.make_optimizer()
    source = state.get("source", "the checkpoint")
    check_model_fits(bare_model(learn.model), state["model"], source)
    if state["opt"] is not None:
        check_optimizer_fits(opt, state["opt"], state.get("opt_type"), source)
    bare_model(learn.model).load_state_dict(state["model"])
    drop_gradients(learn.model)
    if state["opt"] is not None:
        opt.load_state_dict(state["opt"])
    learn.opt = opt
    learn.history[:] = [current_row(row) for row in state["history"]]


def undo_point(learn) -> Callable[[], None]:
    """A function that puts back what resuming changes before the checkpoint is accepted: the weights, optimizer,
    history, lr and frozen layers (`restore_weights`, `restore_setup`). A resume can still be refused after them,
    once `before_fit` has run (`resume_point`), and a refusal must leave the Learner as it was. Until then this
    holds a copy of the weights and their gradients, and of the optimizer's state when the Learner had one, on the
    CPU (so that it takes no accelerator memory)."""
    model, opt, history, lr, frozen = bare_model(learn.model), learn.opt, list(learn.history), learn.lr, \
        learn.frozen_state()
    weights = _cpu_copy(model.state_dict())
    grads = copy_gradients(model, "cpu")
    opt_state = _cpu_copy(opt.state_dict()) if opt is not None else None

    def undo() -> None:
        model.load_state_dict(weights)  # copied onto the devices the model is on now
        learn.opt = opt
        if opt is not None:
            opt.load_state_dict(opt_state)  # torch moves the state onto its parameters' devices
        learn.history[:] = history
        learn.lr = lr
        learn.load_frozen_state(frozen)  # before the gradients: freezing drops the frozen layers'
        put_back_gradients(model, grads)
    return undo


def _cpu_copy(obj):
    """A copy of `obj` (tensors in dicts, lists and tuples) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(value) for value in obj)
    return copy.deepcopy(obj)


def _opt_state_as_data(opt) -> dict:
    """The optimizer's state dict with the numpy numbers of its param groups (say a weight decay taken from a numpy
    array) as Python numbers, which `torch.load(weights_only=True)` reads."""
    state = opt.state_dict()  # new dicts for the groups: the optimizer's own are left as they are
    state["param_groups"] = [{key: _plain_numbers(value) for key, value in group.items()}
                             for group in state["param_groups"]]
    return state


def _plain_numbers(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if type(value) in (list, tuple):
        return type(value)(_plain_numbers(v) for v in value)
    return value


def _lr_as_data(lr):
    """`learn.lr` as plain data that `torch.load(weights_only=True)` reads (a slice is not)."""
    if isinstance(lr, slice):
        return {"slice": [None if v is None else float(v) for v in (lr.start, lr.stop)]}  # numpy floats too
    return [float(v) for v in lr] if isinstance(lr, (list, tuple)) else float(lr)


def restore_setup(learn, state: dict) -> None:
    """A resumed run's `learn.lr` (a slice or one lr per group gives each group its share of a schedule)
    and frozen layers (`freeze`: parameters and BatchNorm statistics); checkpoints written before these
    were saved leave the Learner's as they are."""
    if "lr" in state:
        lr = state["lr"]
        learn.lr = slice(*lr["slice"]) if isinstance(lr, dict) else lr
    if "frozen" in state:
        learn.load_frozen_state(state["frozen"])


def current_row(row: dict) -> dict:
    """A history row as MetricsCB writes it now: checkpoints written before the phases were named
    "train"/"valid" hold `"train": "train" | "eval"` instead of `"phase"`."""
    if "phase" in row or "train" not in row:
        return row
    phase = "valid" if row["train"] == "eval" else "train"
    return {**{k: v for k, v in row.items() if k != "train"}, "phase": phase}


def restore_run_state(learn, state: dict) -> None:
    """Callbacks, RNGs and loader order: applied after `before_fit`, which (re)creates schedulers."""
    restore_callbacks(learn.cbs, state)
    restore_randomness(learn.dls, state)
    position, train = state.get("positions", {}).get("train"), learn.dls.train
    if state["iter"] and position is not None and hasattr(train, "resume_from"):
        _check_loader_position(learn, state, getattr(train, "world_size", 1))
        train.resume_from(position)


def restore_callbacks(cbs, state: dict, new_fit: bool = False) -> None:
    """Load each callback's saved state into it (the callbacks of the fit, as `cbs` lists them at a save). With
    `new_fit`, into a fit after the one that saved them: a callback whose state belongs to its fit
    (`Callback.state_per_fit`, such as a schedule) starts afresh."""
    saved = state["callbacks"]
    for cb in cbs:
        key = callback_key(cbs, cb)
        if hasattr(cb, "load_state_dict") and key in saved and not (new_fit and getattr(cb, "state_per_fit", False)):
            cb.load_state_dict(saved[key])


def resume_point(learn, state: dict | None) -> tuple[int, int]:
    """The (epoch, training batch) a fit starts from: (0, 0), or a resumed run's position, once its
    callbacks, RNGs and loader order are put back (after `before_fit`, which creates schedulers)."""
    if state is None:
        return 0, 0
    _check_same_batches(learn, state)
    restore_run_state(learn, state)
    return state["epoch"], state["iter"]


def batches_from(dl, start: int) -> Iterator[tuple[int, object]]:
    """`(index, batch)` pairs of `dl` from batch `start` on: a TensorLoader jumps there, any other
    loader is run through the skipped batches (which draws their random numbers, as the run did)."""
    if start >= len(dl):  # saved after the epoch's training batches (during validation): none left
        return iter(())
    if start and hasattr(dl, "iter_from"):
        return enumerate(dl.iter_from(start), start)
    return itertools.islice(enumerate(dl), start, None)


def auto_resume_path(cbs) -> Path:
    """The file `resume="auto"` resumes from: the last checkpoint of the fit's CheckpointCB (`resume_path`)."""
    savers = [cb for cb in cbs if hasattr(cb, "resume_path")]
    paths = [cb.resume_path for cb in savers if cb.resume_path is not None]
    if len(paths) != 1:
        why = ("none of its CheckpointCBs writes one (keep='best' keeps only the best epoch: use keep='both')"
               if savers else "this fit has no CheckpointCB") if not paths else \
            f"{len(paths)} CheckpointCBs write one ({', '.join(map(str, paths))})"
        raise CheckpointError(f"resume='auto' resumes from the last checkpoint that the run's CheckpointCB writes, but "
                              f"{why}: add one CheckpointCB(path) (with every=N to save every N batches), or pass "
                              f"resume=path.")
    return Path(paths[0])


def _of_frozen_stage(state: dict) -> bool:
    """Whether a checkpoint of `fine_tune` comes from its frozen stage: as it records, or for checkpoints of
    slowlearn before it recorded the stage, from the frozen layers it holds (a model that freezing leaves as it
    is, with one param group, then passes for the unfrozen stage)."""
    stage = state.get("fine_tune_stage")
    return stage == "frozen" if stage is not None else bool(state.get("frozen", {}).get("params"))


def _agreed_found(path: Path) -> bool:
    """Whether `path` exists, checked to be the same answer on every process of a distributed run (one that
    resumed while another started afresh would wait for the other forever)."""
    found = path.is_file()
    if world_size() > 1 and init_distributed():
        check_ranks_agree({f"finds the checkpoint {path}": int(found)},
                          fix="put the CheckpointCB's path on a file system that every machine of the run sees.")
    return found


def resume_state(learn, resume: str | os.PathLike | None) -> dict | None:
    """The checkpoint a fit continues (read and verified), or None for a new run. `resume` is None, a path, or
    "auto": the file the fit's CheckpointCB writes when there is one (a new run when there is none), saying
    which on rank 0. A file that is there but damaged is an error, never silently replaced by a new run."""
    if resume is None:
        return None
    if str(resume) != "auto":
        return read_checkpoint(resume)
    path = auto_resume_path(learn.cbs)
    if not _agreed_found(path):
        rank0_print(f"resume='auto': no checkpoint at {path} yet, so this is a new run")
        return None
    state = read_checkpoint(path)
    where = f"epoch {state['epoch']}" + (f", batch {state['iter']}" if state["iter"] else "")
    rank0_print(f"resume='auto': resuming from {path} at {where}")
    return state


def fine_tune_resumes(learn, resume, freeze_epochs: int, cbs=()) -> tuple[object, object]:
    """What each fit of `fine_tune` resumes from: (the frozen stage's, the unfrozen stage's); "skip" skips the
    frozen stage. Only resume="auto" is told apart, by the stage its checkpoint records (`learn.fine_tune_stage`): a
    checkpoint of the unfrozen stage skips the frozen one; one of the frozen stage resumes it, or, when that stage is
    complete (or stopped early), is loaded and the unfrozen stage starts."""
    if str(resume) != "auto":
        return resume, resume
    path = auto_resume_path([*learn.cbs, *cbs])
    if not _agreed_found(path):
        rank0_print(f"resume='auto': no checkpoint at {path} yet, so this is a new run")
        return None, None
    state = read_checkpoint(path)
    if not _of_frozen_stage(state):
        return "skip", "auto"
    if state["epoch"] < freeze_epochs and not state.get("stop_reason"):
        return "auto", None
    rank0_print(f"resume='auto': {path} holds the end of the frozen stage; continuing from it with the unfrozen one")
    restore_weights(learn, state)
    restore_randomness(learn.dls, state)
    restore_callbacks([*learn.cbs, *cbs], state, new_fit=True)  # what they carry into the next fit (best, steps)
    return "skip", None
