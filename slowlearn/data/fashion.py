"""Fashion-MNIST: where its files are found (a `root`, `SLOWLEARN_DATA`, slowlearn's cache, the Debian package, or
torchvision's download) and the in-memory loaders over it."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch

from ..distributed import rank0_first
from .common import DataNotFoundError, check_subset_size, data_root
from .loaders import DataLoaders, TensorLoader, check_batching

__all__ = ["fashion_mnist", "find_fashion_mnist", "read_idx", "FASHION_MNIST_CLASSES", "DEBIAN_FASHION_MNIST"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> torch.Tensor:
    """Read a (gzipped) IDX file, the format of MNIST and Fashion-MNIST, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


def _has_fashion_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in _FASHION_FILES.values() for name in pair)


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding Fashion-MNIST's four IDX .gz files, downloading them with torchvision if needed.

    Looks in `root` (default: `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`), in its `fashion-mnist/`
    and `FashionMNIST/raw/` subfolders, then in the Debian package's folder.
    """
    base = data_root(root)
    candidates = [base, base / "fashion-mnist", base / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    for folder in candidates:
        if _has_fashion_files(folder):
            return folder
    if download:
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(str(base), train=True, download=True)
            FashionMNIST(str(base), train=False, download=True)
        except Exception as e:
            raise _missing(candidates, f"The torchvision download failed: {e!r}.") from e
        if _has_fashion_files(base / "FashionMNIST" / "raw"):
            return base / "FashionMNIST" / "raw"
    raise _missing(candidates, "Downloading was not allowed (download=False).")


def _missing(candidates: list[Path], why: str) -> DataNotFoundError:
    return DataNotFoundError(
        "Fashion-MNIST was not found in " + ", ".join(map(str, candidates)) + f". {why}",
        "Get it either way:\n  - the Debian package: sudo apt-get install dataset-fashion-mnist (files in "
        f"{DEBIAN_FASHION_MNIST}), or\n  - torchvision's download, with network: fashion_mnist(download=True) "
        "(saved under root, $SLOWLEARN_DATA or ~/.cache/slowlearn).")


def _load_fashion_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = (read_idx(folder / name) for name in _FASHION_FILES[split])
    return images.unsqueeze(1), labels.long()


def fashion_mnist(bs: int = 512, device: torch.device | str | None = None, root: str | os.PathLike | None = None,
                  download: bool = True, valid_bs: int | None = None, seed: int | None = None,
                  n_train: int | None = None, n_valid: int | None = None) -> DataLoaders:
    """Fashion-MNIST as in-memory loaders: 60 000 training and 10 000 validation (official test) images.

    Images are 1x28x28, normalised with the training set's mean and std; the training loader
    shuffles every epoch. Data is found as `find_fashion_mnist` says and kept on `device` (default:
    the GPU when there is one). `n_train`/`n_valid` keep only the first images (quick runs).
    `dls["test"]` is the validation loader: Fashion-MNIST has no separate validation split.
    """
    check_batching(bs, seed)
    with rank0_first():  # in a distributed run, rank 0 downloads while the others wait
        folder = find_fashion_mnist(root, download)
    x_train, y_train = _load_fashion_split(folder, "train")
    x_valid, y_valid = _load_fashion_split(folder, "test")
    check_subset_size(n_train, len(y_train), "n_train")
    check_subset_size(n_valid, len(y_valid), "n_valid")
    x_train, y_train, x_valid, y_valid = x_train[:n_train], y_train[:n_train], x_valid[:n_valid], y_valid[:n_valid]
    std, mean = torch.std_mean(x_train.float() / 255)
    norm = dict(mean=mean.item(), std=std.item(), device=device)
    train = TensorLoader(x_train, y_train, bs, shuffle=True, seed=seed, **norm)
    valid = TensorLoader(x_valid, y_valid, valid_bs or 2 * bs, **norm)
    return DataLoaders(train, valid, test=valid, classes=FASHION_MNIST_CLASSES)
