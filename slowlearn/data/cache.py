"""The decoded-image cache: pixels of a list of files, keyed by exactly those files and the decode options.

A cache file lives in slowlearn's data folder (`$SLOWLEARN_DATA`, else `~/.cache/slowlearn`, under
`image-cache/`), never in the user's image folder, so a read-only folder loads too. Its name comes
from the dataset's identity (its folder or CSV) and the decode options; inside it, the cached pixels
are stored with the signature they were decoded under: every file's path, byte size, mtime and ctime
(a file restored with its old mtime still gets a new ctime). Any difference means a fresh decode.
Labels are never cached: they are read from the folder or CSV on every load, so they cannot be stale.
A cache file that cannot be read is decoded again and replaced, never an error; a cache folder that
cannot be written is a warning.

A cache is written to `partial-<name>-*.tmp` in the cache folder, locked (flock) while it is written, then
renamed. A process killed while writing (SIGKILL, a crash, a power cut) leaves that file behind: the next
load that uses the cache folder removes every such file that no live process holds locked and that is
older than that load's process (or a minute old), so no dataset-sized leftovers pile up.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..distributed import is_rank0
from .common import data_root

try:
    import fcntl
except ImportError:  # Windows: a file open for writing cannot be removed, which protects it as well
    fcntl = None

__all__ = ["cached_decode", "cache_folder", "file_signature", "remove_stale_partials"]

CACHE_FORMAT = 1
_STARTED = time.time()  # about when this process started: a partial file older than that is no write of ours
_PARTIAL = "partial-"
_OLD_PARTIAL = re.compile(r"[0-9a-f]{24}\w{8}\.tmp")  # what older slowlearns wrote (never locked)


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded images are cached: `cache_dir`, else `image-cache/` in slowlearn's data folder."""
    return Path(cache_dir) if cache_dir is not None else data_root(None) / "image-cache"


def file_signature(files: Sequence[str]) -> list[list]:
    """What a decode depends on, per file (absolute paths): path, size in bytes, mtime and ctime in ns."""
    signature = []
    for f in files:
        st = os.stat(f)
        signature.append([f, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return signature


def _cache_path(folder: Path, identity: str, options: dict) -> Path:
    name = json.dumps([identity, options], sort_keys=True)
    return folder / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.pt"


def _read(path: Path, signature_digest: str) -> torch.Tensor | None:
    """The cached pixels if `path` holds a readable cache for exactly this signature, else None."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        if cached["format"] == CACHE_FORMAT and cached["signature"] == signature_digest:
            return cached["x"]
    except Exception as e:  # damaged, truncated, foreign: decode again and overwrite it
        warnings.warn(f"The image cache {path} could not be read ({type(e).__name__}: {e}); decoding again.",
                      stacklevel=3)
    return None


def _write(path: Path, x: torch.Tensor, signature_digest: str, identity: str) -> None:
    """Atomically (temporary file + rename); a cache that cannot be written is only a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_PARTIAL}{path.stem}-", suffix=".tmp")
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: released by the kernel if this process dies
            else:  # Windows renames no open file
                os.close(fd)
                fd = None
            torch.save({"format": CACHE_FORMAT, "signature": signature_digest, "identity": identity, "x": x}, tmp)
            os.replace(tmp, path)
        finally:
            if fd is not None:
                os.close(fd)
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        warnings.warn(f"Could not write the image cache {path} ({e}): the images will be decoded again next "
                      f"time. Set SLOWLEARN_DATA (or cache_dir=) to a writable folder to cache them.", stacklevel=3)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial cache files that killed processes left in `folder` (unlocked, and older than this
    process or a minute old; an unlocked file of an older slowlearn after an hour). Returns those removed."""
    removed = []
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        ours = tmp.name.startswith(_PARTIAL)
        if not ours and not _OLD_PARTIAL.fullmatch(tmp.name):
            continue
        try:
            mtime = tmp.stat().st_mtime
            stale = (mtime < _STARTED or now - mtime > 60) if ours else now - mtime > 3600
            if stale and not _locked(tmp):
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile, or in use (Windows): leave it
            continue
    return removed


def _locked(path: Path) -> bool:
    """Whether a live process holds `path` locked (as `_write` does while writing)."""
    if fcntl is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock just taken


def cached_decode(files: Sequence[str], identity: str, options: dict, decode: Callable[[], torch.Tensor],
                  cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """`decode()`'s result for `files`, from the cache when the files and `options` are unchanged.

    `identity` names the dataset (e.g. its folder), so that one cache file per dataset and options is
    kept up to date rather than a new one piling up for every change."""
    digest = hashlib.sha256(json.dumps([file_signature(files), options], sort_keys=True).encode()).hexdigest()
    named_by = {k: v for k, v in options.items() if k != "decoder"}  # a new decoder replaces the file, not adds one
    path = _cache_path(cache_folder(cache_dir), identity, named_by)
    x = _read(path, digest)
    if x is None:
        x = decode()
        if is_rank0():
            _write(path, x, digest, identity)
    return x
