"""Where pretrained weights come from, offline first: torchvision's cache, the Hugging Face cache (timm models),
or a file the user names. Nothing here runs code from a weights file: state dicts are read with
`torch.load(weights_only=True)` or safetensors.

A file that is not there is downloaded only when no offline switch is set (`HF_HUB_OFFLINE=1` or
`SLOWLEARN_OFFLINE=1`, read when the weights are asked for, not when a library was imported) and the server
answers within a few seconds; otherwise `WeightsNotFoundError` says at once which file to put where, or how
to pass `weights=`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch

__all__ = ["WeightsNotFoundError", "offline", "read_state_dict", "torchvision_weights_file", "timm_weights_file"]

OFFLINE_VARIABLES = ("SLOWLEARN_OFFLINE", "HF_HUB_OFFLINE")
PROBE_SECONDS = 3.
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a Hugging Face repository
_HASH = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: the file name's hash prefix, checked after a download
_ZIP, _PICKLE = b"PK", b"\x80"  # how torch.save's files start: a zip archive (torch>=1.6), a pickle before
_REFUSED = re.compile(r"Unsupported global: GLOBAL (\S+)")  # torch.load(weights_only=True) refusing to run code


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are neither on this machine nor downloadable now: `problem` says which and why,
    `url` where they come from, `where` the file they are looked for at (the command line words its own advice)."""

    def __init__(self, problem: str, url: str, where: Path, extra: str = ""):
        self.problem, self.url, self.where = problem, url, where
        super().__init__(f"{problem}. Download {url} and put it at {where}{extra}, or pass weights='path/to/file' (a "
                         f".pth state dict or .safetensors), or pretrained=False to start from random weights.")


def offline() -> bool:
    """Whether an offline switch is set in the environment now: SLOWLEARN_OFFLINE or HF_HUB_OFFLINE (1/true/yes/on)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_VARIABLES)


def _reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether `url`'s host accepts a connection within `timeout` seconds, name lookup included (which has no
    timeout of its own, hence the thread)."""
    parsed = urlparse(url)
    answered = []

    def probe():
        try:
            socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def _may_download(url: str) -> bool:
    return not offline() and _reachable(url)


def read_state_dict(path: str | os.PathLike, url: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: `.safetensors`, or a `.pth`/`.pt`/`.bin` state dict read with
    `weights_only=True` (a training checkpoint's "state_dict" or "model" entry is taken; a DDP "module." prefix
    is dropped). Anything that would need code run to load is refused; a file that is cut short or is no weights
    file is said to be damaged (`url`: where it was downloaded from, named in the advice)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path} is a .safetensors file: pip install safetensors (or slowlearn[timm])") from None
    try:
        state = load_file(path, device="cpu") if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _unreadable(path, e, url) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (names to tensors): save it with "
                         f"torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unreadable(path: Path, error: Exception, url: str | None) -> ValueError:
    """The error for a weights file that did not load: a pickle that would run code, or a damaged file."""
    refused = _REFUSED.search(str(error))
    if refused:
        return ValueError(f"{path} is not a plain state dict that loads without running code (torch.load("
                          f"weights_only=True) refused it: it would import {refused.group(1)}). Save the model's "
                          f"weights with torch.save(model.state_dict(), path), or as .safetensors")
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return _damaged(path, _damage(path) or f"it does not read as weights ({first_line})", url)


def _damage(path: Path) -> str | None:
    """What is wrong with a weights file that was cut short or is no weights file at all, as its structure shows
    (cheaply: its first bytes, and a zip archive's directory at its end); None when it looks whole."""
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    if path.suffix == ".safetensors":
        return _safetensors_damage(path, size)
    with open(path, "rb") as f:
        head = f.read(len(_ZIP))
    if head == _ZIP:
        return None if zipfile.is_zipfile(path) else \
            "it is cut short (a zip archive, as torch.save writes, without the directory at its end)"
    if not head.startswith(_PICKLE):
        return "it is neither a zip archive nor a pickle, which torch.save writes (a web page saved in its place?)"
    return None


def _safetensors_damage(path: Path, size: int) -> str | None:
    """A .safetensors file: an 8-byte header length, a JSON header of the tensors' byte ranges, then the bytes."""
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(header_size)) if 8 + header_size <= size else None
            end = 8 + header_size + max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"),
                                        default=0)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return "it is cut short or is no .safetensors file (its header does not read)"
    return f"it is cut short ({size:,} bytes of the {end:,} its header describes)" if end > size else None


def _damaged(path: Path, why: str, url: str | None = None) -> ValueError:
    if url:
        advice = (f"It is in torch.hub's cache: delete it, and download {url} to that place again (slowlearn "
                  f"downloads it itself when it is missing and the network can be reached)")
    elif any(part.startswith("models--") for part in path.parts) and path.is_symlink():
        # the Hugging Face cache: the file is kept once under blobs/, linked from snapshots/; a download finds the
        # blob by its hash and links it again, so the blob itself must go
        advice = (f"It is in the Hugging Face cache, as a link to {path.resolve()}: delete both, then build the "
                  f"model again with the network reachable (slowlearn downloads the file), or copy that cache "
                  f"folder whole from a machine where the file reads")
    else:
        advice = "Copy it again from where it came from, or save it again with torch.save(model.state_dict(), path)"
    return ValueError(f"{path} is damaged: {why}. {advice}")


def _not_found(what: str, where: Path, url: str, extra: str = "") -> WeightsNotFoundError:
    why = "offline mode is on (HF_HUB_OFFLINE or SLOWLEARN_OFFLINE)" if offline() else \
        f"{urlparse(url).hostname} cannot be reached"
    return WeightsNotFoundError(f"The {what} are not on this machine ({where} is missing) and {why}", url, where, extra)


def _torch_hub_file(url: str, what: str) -> Path:
    """torch.hub's cache file of `url` ($TORCH_HOME/hub/checkpoints/<name>), downloaded if missing and possible;
    a cached file that is cut short is an error that says to download it again."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if path.is_file():
        why = _damage(path)  # an interrupted copy, caught before any model is built
        if why:
            raise _damaged(path, why, url)
        return path
    if not _may_download(url):
        raise _not_found(what, path, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH.search(path.name)
    torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None)
    return path


def torchvision_weights_file(weights) -> Path:
    """The file of a torchvision weights enum member (`ResNet18_Weights.IMAGENET1K_V1`), where torchvision itself
    keeps it: $TORCH_HOME/hub/checkpoints/<the url's file name>."""
    return _torch_hub_file(weights.url, f"weights {type(weights).__name__}.{weights.name}")


def timm_weights_file(cfg: dict, name: str) -> Path:
    """The weights file of a timm model's pretrained config: from the Hugging Face cache (`hf_hub_id`), or
    torch.hub's cache for weights that timm downloads from a URL; downloaded if missing and possible."""
    repo = cfg.get("hf_hub_id")
    if not repo:
        if not cfg.get("url"):
            raise ValueError(f"timm has no pretrained weights for {name!r}: pass weights='path/to/file' or "
                             f"pretrained=False")
        return _torch_hub_file(cfg["url"], f"weights of timm:{name}")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    files = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HF_FILES)
    for filename in files:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    url = f"{constants.ENDPOINT}/{repo}/resolve/main/{files[0]}"
    where = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>" / files[0]
    missing = _not_found(f"weights of timm:{name}", where, url,
                         f" (as `hf download {repo} {files[0]}` does, run on a machine with network, then copy its "
                         f"cache folder {constants.HF_HUB_CACHE} here)")
    if not _may_download(url):
        raise missing
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled
    for filename in files:
        try:
            return Path(hf_hub_download(repo, filename))
        except EntryNotFoundError:
            continue
        except (OfflineModeIsEnabled, LocalEntryNotFoundError) as e:  # HF_HUB_OFFLINE as it was at import, a drop
            raise missing from e
    raise FileNotFoundError(f"{repo} on the Hugging Face hub has none of {', '.join(files)}: pass "
                            f"weights='path/to/file'")
