"""Checkpoint files: atomic writes, a checksum over the contents, safe reads that say what is wrong with
a file, and checks that a checkpoint fits a model and optimizer before anything is overwritten.

Every error here names the file and how to go on; nothing is damaged before it is raised: a failed
write keeps the previous file, a failed check leaves the model and optimizer as they were.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pickle
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["CheckpointError", "FORMAT", "checksum", "write_atomically", "read_verified", "check_model_fits",
           "check_optimizer_fits", "check_checkpoint_file", "non_finite_entries", "type_name"]

FORMAT = 3  # 2 adds the checksum, the optimizer's type and n_epochs (format-1 files still load, unverified);
# 3 adds learn.lr, the frozen layers and the log's size, which an older slowlearn would silently ignore
_RETRY = ("Use another checkpoint (CheckpointCB writes atomically, so the last complete one is still at its "
          "path unless this is it), or start the run again without resume.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, trusted or applied; the message names the file and the fix."""


def checksum(state: dict) -> str:
    """SHA-256 of a checkpoint's contents (tensors' bytes, dtypes and shapes; plain values by repr)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k not in ("checksum", "source")})
    return digest.hexdigest()


def _feed(digest, obj) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(b"{%d" % len(obj))
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):  # a tuple may come back as a list: the same contents
        digest.update(b"[%d" % len(obj))
        for value in obj:
            _feed(digest, value)
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def write_atomically(state: dict, path: Path) -> None:
    """torch.save to a temporary file next to `path`, flushed to disk, then renamed over `path`.

    Ctrl-C (SIGINT) while writing lets the write finish (a message says so), then stops the process with
    KeyboardInterrupt: the checkpoint is complete, and nothing partial is left beside it. (Python runs the
    KeyboardInterrupt wherever the signal lands; in a destructor it is printed and lost, and the process goes
    on.) A second Ctrl-C stops at once, removing the temporary file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with _InterruptAfter(path) as interrupt:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            code = getattr(e, "errno", None) or (errno.ENOSPC if "unexpected pos" in str(e) else errno.EIO)
            raise OSError(code, _write_failure(path, e)) from e
        finally:
            interrupt.writing = False
            with contextlib.suppress(OSError):  # e.g. no folder to hold it: the error above is the one to tell
                tmp.unlink(missing_ok=True)


class _InterruptAfter:
    """Holds back SIGINT while a file is written (main thread only; elsewhere nothing changes): the first one
    is delivered to the previous handler once the block has ended, a second one raises KeyboardInterrupt at
    once while `writing` is still true."""

    def __init__(self, path: Path):
        self.path, self.received, self.writing, self.previous = path, 0, True, None

    def __enter__(self) -> _InterruptAfter:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous not in (signal.SIG_IGN, None):
                self.previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received += 1
        if self.received == 1:
            try:
                print(f"\nslowlearn: finishing the checkpoint {self.path}, then stopping (Ctrl-C again to stop now "
                      f"without it)", file=sys.stderr, flush=True)
            except (RuntimeError, ValueError, OSError):  # stderr busy (a reentrant write) or closed: say nothing
                pass
        elif self.writing:
            raise KeyboardInterrupt

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.received and not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
            if callable(self.previous):
                self.previous(signal.SIGINT, None)  # Python's default raises KeyboardInterrupt here
            else:  # SIG_DFL: die of the signal, as without this handler
                signal.raise_signal(signal.SIGINT)


def _write_failure(path: Path, e: Exception) -> str:
    kept = f"{path} was not replaced and still holds the previous checkpoint" if path.is_file() else \
        f"no checkpoint was written at {path}"
    existing = next((p for p in [path.parent, *path.parents] if p.exists()), None)
    free = shutil.disk_usage(existing).free if existing is not None else None
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        cause = "the disk is full" if code == errno.ENOSPC else "the disk quota is used up"
    elif "unexpected pos" in str(e):  # torch's zip writer, when a write comes up short
        cause = f"the write was cut short, as when the disk is full ({free / 2**20:.1f} MiB free there now)"
    else:
        return f"Could not write the checkpoint {path}: {e}; {kept}. Give the checkpoint a path that can be written."
    return (f"Could not write the checkpoint {path}: {cause}; {kept}. Free some space or give the checkpoint "
            f"another path (details: {e})")


def check_checkpoint_file(file: Path, owner: str) -> None:
    """Refuse, before any training, a checkpoint file that could never be written: a folder in its place, or a
    file where one of its folders should be. `owner` names who writes it (e.g. "CheckpointCB(keep='both')")."""
    if file.is_dir():
        raise CheckpointError(f"{owner} writes the checkpoint file {file}, but that is a folder: give the path of a "
                              f"file (such as {file / 'last.pt'}), or remove the folder.")
    blocking = next((folder for folder in file.parents if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise CheckpointError(f"{owner} writes the checkpoint file {file}, but {blocking} is a file, so it cannot "
                              f"hold {file.relative_to(blocking)}: give another path, or move {blocking} away.")


def read_verified(path: str | os.PathLike, map_location=None) -> dict:
    """torch.load(weights_only=True), then the format and checksum checks."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"No checkpoint at {path}: {what}. Give the path of a checkpoint file.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_not_plain_data(path, e)) from None
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as e:  # torch's reader fails on damaged files with RuntimeError, EOFError, KeyError, ...
        raise CheckpointError(_unreadable(path, e)) from None
    _check_format(state, path)
    if "checksum" in state and state["checksum"] != checksum(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum written with them "
                              f"(a byte changed on the disk or in a copy). {_RETRY}")
    return state


def _not_plain_data(path: Path, e: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if found:
        return (f"Refusing to load {path}: it holds a Python object ({found.group(1)}) that loading would create "
                f"by running code from the file, which a slowlearn checkpoint never does. If you trust the file, "
                f"read it yourself with torch.load(weights_only=False).")
    return (f"Refusing to load {path}: it is not a torch checkpoint of plain data ({_first_bytes(path)}). Give the "
            f"file that CheckpointCB or learn.save wrote.")


def _unreadable(path: Path, e: Exception) -> str:
    size = path.stat().st_size
    if size == 0:
        what = "is empty (0 bytes)"
    elif _first_bytes(path, raw=True).startswith(b"PK\x03\x04"):
        what = f"is truncated or damaged ({size} bytes that torch cannot read: {type(e).__name__}: {e})"
    else:
        what = f"is not a torch checkpoint ({_first_bytes(path)})"
    return f"Cannot load the checkpoint {path}: it {what}. {_RETRY}"


def _first_bytes(path: Path, raw: bool = False):
    with open(path, "rb") as f:
        head = f.read(16)
    return head if raw else f"it starts with {head!r}"


def _check_format(state, path: Path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a slowlearn checkpoint: it holds a {type(state).__name__}, saved "
                              f"with torch.save. Give the file that CheckpointCB or learn.save wrote.")
    if "format" not in state:
        if state and all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{path} holds only a model's weights (a state_dict), not a slowlearn checkpoint: "
                                  f"load them with learn.model.load_state_dict(torch.load(path, weights_only=True)).")
        keys = ", ".join(map(repr, list(state)[:5]))
        raise CheckpointError(f"{path} is not a slowlearn checkpoint: a dict with keys {keys}, without 'format'.")
    if not isinstance(state["format"], int) or state["format"] > FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']!r}, and this slowlearn reads formats "
                              f"up to {FORMAT}: it was written by a newer slowlearn, so upgrade slowlearn.")
    missing = [k for k in ("model", "opt", "callbacks", "rng", "loaders", "history", "epoch", "iter")
               if k not in state]
    if missing:
        raise CheckpointError(f"{path} is damaged: it has no {', '.join(missing)}. {_RETRY}")


def check_model_fits(model: nn.Module, saved: dict, source: str) -> None:
    """Every key of the model is in `saved` with the same shape, and nothing else is: else nothing is loaded."""
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k} is {tuple(saved[k].shape)} there but {tuple(own[k].shape)} here" for k in own
              if k in saved and hasattr(saved[k], "shape") and saved[k].shape != own[k].shape]
    problems = [f"{len(missing)} of the model's entries are missing ({_some(missing)})" if missing else "",
                f"{len(unexpected)} are not in the model ({_some(unexpected)})" if unexpected else "",
                f"{len(shapes)} have another shape ({_some(shapes)})" if shapes else ""]
    if any(problems):
        raise CheckpointError(f"{source} was saved from another model, so nothing was loaded: "
                              f"{'; '.join(p for p in problems if p)}. Load it into the model it was saved from "
                              f"(the same architecture, input channels and number of classes).")


def check_optimizer_fits(opt: torch.optim.Optimizer, saved: dict, saved_type: str | None, source: str) -> None:
    """The saved optimizer state is of this optimizer's type and has the same parameter groups."""
    own_type = type_name(opt)
    own_keys = set(opt.param_groups[0]) - {"params"}
    saved_keys = set(saved["param_groups"][0]) - {"params"} if saved["param_groups"] else set()
    # the type when the checkpoint names it; else (format 1) the hyper-parameters that this optimizer needs
    if saved_type != own_type if saved_type is not None else not own_keys <= saved_keys:
        saved_name = saved_type or f"an optimizer with hyper-parameters {sorted(saved_keys)}"
        raise CheckpointError(f"{source} was saved with {saved_name}, but this Learner's optimizer is {own_type}, "
                              f"so nothing was loaded: resume with the opt_func of the saved run, or take only "
                              f"the weights: learn.model.load_state_dict(read_checkpoint(path)['model']).")
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    own_sizes = [len(g["params"]) for g in opt.param_groups]
    if sizes != own_sizes:
        raise CheckpointError(f"{source} has optimizer parameter groups of sizes {sizes}, but this Learner's "
                              f"are {own_sizes}, so nothing was loaded: create the Learner with the splitter "
                              f"and frozen layers of the saved run.")


def type_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def non_finite_entries(state: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or infinity (one host sync per device)."""
    names, flags = [], {}
    for name, t in state.items():
        if isinstance(t, Tensor) and t.is_floating_point():
            names.append((t.device, name))
            flags.setdefault(t.device, []).append(torch.isfinite(t).all())
    finite = {device: iter(torch.stack(fs).tolist()) for device, fs in flags.items()}
    return [name for device, name in names if not next(finite[device])]


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
