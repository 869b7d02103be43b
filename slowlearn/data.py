"""Data: an in-memory batch loader with no per-sample Python, DataLoaders, and Fashion-MNIST."""
from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from .device import default_device
from .preprocess import normalising_affine
from .distributed import rank0_first

__all__ = ["TensorLoader", "DataLoaders", "fashion_mnist", "find_fashion_mnist", "DataNotFoundError",
           "FASHION_MNIST_CLASSES", "DEBIAN_FASHION_MNIST"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class TensorLoader:
    """Batches sliced from a whole dataset held as one tensor, on the CPU or directly on the GPU.

    Each epoch draws one index permutation (when `shuffle`) from the loader's generator: seeded once
    by `seed`, or, with `seed=None`, re-seeded from torch's global RNG at the start of every epoch,
    as torch's DataLoader does, so a `set_seed` any time before training makes the order
    reproducible. A batch is one gather plus one normalisation of the whole batch. uint8 images are
    scaled to [0, 1] before `(x - mean) / std`; `mean`/`std` are scalars or one value per channel.
    `aug` (e.g. a `BatchAugment`) transforms each normalised batch; give it to the training loader only.

    For distributed training `shard(rank, world_size)` makes each rank take a disjoint slice of the
    same permutation (every `world_size`-th sample from `rank`). With `even=True` (training) the last
    `n % world_size` samples of each permutation are dropped so that every rank runs the same number
    of batches, which DistributedDataParallel needs; with `even=False` (evaluation) nothing is
    dropped and the first `n % world_size` ranks get one sample more.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int = 512, shuffle: bool = False,
                 drop_last: bool = False, device: torch.device | str | None = None,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 seed: int | None = None, aug: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} inputs and {len(y)} labels")
        if bs < 1:
            raise ValueError(f"batch size must be at least 1, got bs={bs}")
        device = torch.device(device) if device is not None else default_device()
        self.x, self.y = x.to(device), y.to(device)
        self.bs, self.shuffle, self.drop_last, self.device, self.aug = bs, shuffle, drop_last, device, aug
        self.mean, self.std = mean, std  # as given; exports record them
        self.scale, self.shift = self._affine(mean, std)
        self.seed, self.generator = seed, torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.epoch_start_state = self.generator.get_state()  # checkpoints taken mid-epoch need it
        self.rank, self.world_size, self.even = 0, 1, True

    def _affine(self, mean, std) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if mean is None and std is None and self.x.dtype != torch.uint8:
            return None, None
        return normalising_affine(mean, std, 255. if self.x.dtype == torch.uint8 else 1., self.x.ndim, self.device)

    def shard(self, rank: int, world_size: int, even: bool = True) -> TensorLoader:
        """Make this loader yield only rank `rank`'s share of every epoch (see the class docs)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.rank, self.world_size, self.even = rank, world_size, even
        return self

    @property
    def n_items(self) -> int:
        """Samples this loader (this rank's shard of it) yields per epoch."""
        n, world = len(self.x), self.world_size
        return n // world if self.even else n // world + (self.rank < n % world)

    def __len__(self) -> int:
        return self.n_items // self.bs if self.drop_last else math.ceil(self.n_items / self.bs)

    def _order(self, new_epoch: bool) -> torch.Tensor | None:
        n = len(self.x)
        if self.shuffle:
            if new_epoch and self.seed is None:
                self.generator.manual_seed(int(torch.randint(2**62, ())))
            self.epoch_start_state = self.generator.get_state()
            order = torch.randperm(n, generator=self.generator).to(self.device)
        elif self.world_size > 1:
            order = torch.arange(n, device=self.device)
        else:
            return None
        if self.world_size > 1:
            end = self.n_items * self.world_size if self.even else n
            order = order[self.rank:end:self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch `start` on; the skipped ones are never built or augmented
        (a mid-epoch resume must not spend random numbers on them)."""
        order = self._order(new_epoch=start == 0)  # a resumed epoch keeps the order it was restored with
        for i in range(start, len(self)):
            if order is None:
                xb, yb = self.x[i * self.bs:(i + 1) * self.bs], self.y[i * self.bs:(i + 1) * self.bs]
            else:
                idx = order[i * self.bs:(i + 1) * self.bs]
                xb, yb = self.x[idx], self.y[idx]
            xb = self.normalise(xb)
            yield (self.aug(xb) if self.aug is not None else xb), yb

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """A batch as stored (e.g. uint8 images) to what the model sees."""
        if self.scale is None:
            return xb
        return xb.to(torch.float32, copy=True).mul_(self.scale).sub_(self.shift)  # never in place on the data

    def decode(self, xb: torch.Tensor) -> torch.Tensor:
        """Undo `normalise` for display: images back in [0, 1] (or the stored units for non-images)."""
        if self.scale is None:
            return xb
        x = (xb.float() + self.shift.to(xb.device)) / self.scale.to(xb.device)
        return x / 255 if self.x.dtype == torch.uint8 else x


class DataLoaders:
    """The training and validation loaders (and optionally a test loader) of one dataset.

    `dls.train`, `dls.valid`, and `dls["train"]`, `dls["valid"]`, `dls["test"]` as in the seeds.
    `dls.resize` is how the loaders brought images of other sizes to theirs ({"method", "interpolation"}
    as in `Preprocessing`), or None when they did not resize: predictions on new images resize alike.
    """

    def __init__(self, train, valid, test=None, classes: Sequence[str] | None = None, resize: dict | None = None):
        self.train, self.valid, self.test = train, valid, test
        self.classes = list(classes) if classes is not None else None
        self.resize = resize

    def show_batch(self, n: int = 16, split: str = "train"):
        """The first `n` images of a batch from `dls[split]` with their class names (a matplotlib Figure)."""
        from .show import show_batch  # show.py draws with matplotlib, which the loaders alone do not need
        return show_batch(self, n, split)

    def __getitem__(self, split: str):
        loader = {"train": self.train, "valid": self.valid, "test": self.test}.get(split)
        if loader is None:
            raise KeyError(f"No '{split}' loader: this DataLoaders has "
                           f"{', '.join(k for k in ('train', 'valid', 'test') if getattr(self, k) is not None)}")
        return loader


def read_idx(path: Path) -> torch.Tensor:
    """Read a (gzipped) IDX file, the format of MNIST and Fashion-MNIST, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


class DataNotFoundError(FileNotFoundError):
    """A dataset that is not where slowlearn looked and could not be downloaded. `problem` (one line)
    says where it looked and why the download did not happen; the message adds how to get the data
    from Python, front ends such as the command line add their own."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem} {fix}")
        self.problem = problem


def _data_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("SLOWLEARN_DATA", Path.home() / ".cache" / "slowlearn"))


def _has_fashion_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in _FASHION_FILES.values() for name in pair)


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding Fashion-MNIST's four IDX .gz files, downloading them with torchvision if needed.

    Looks in `root` (default: `$SLOWLEARN_DATA`, else `~/.cache/slowlearn`), in its `fashion-mnist/`
    and `FashionMNIST/raw/` subfolders, then in the Debian package's folder.
    """
    base = _data_root(root)
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


def check_subset_size(n: int | None, n_total: int, what: str) -> None:
    """`n` images to keep of `n_total` (None: all), or an error naming `what`."""
    if n is not None and not 0 < n <= n_total:
        raise ValueError(f"{what}={n}: there are {n_total} images to choose from; give 1 to {n_total}, or leave it out")


def fashion_mnist(bs: int = 512, device: torch.device | str | None = None, root: str | os.PathLike | None = None,
                  download: bool = True, valid_bs: int | None = None, seed: int | None = None,
                  n_train: int | None = None, n_valid: int | None = None) -> DataLoaders:
    """Fashion-MNIST as in-memory loaders: 60 000 training and 10 000 validation (official test) images.

    Images are 1x28x28, normalised with the training set's mean and std; the training loader
    shuffles every epoch. Data is found as `find_fashion_mnist` says and kept on `device` (default:
    the GPU when there is one). `n_train`/`n_valid` keep only the first images (quick runs).
    `dls["test"]` is the validation loader: Fashion-MNIST has no separate validation split.
    """
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
