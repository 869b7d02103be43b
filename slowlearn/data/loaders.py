"""The in-memory batch loader (no per-sample Python in the hot path) and DataLoaders, the splits of one dataset."""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterator, Sequence

import torch

from ..device import default_device
from .preprocess import normalising_affine

__all__ = ["BatchLoader", "TensorLoader", "DataLoaders", "check_batching"]


def check_batching(bs, seed) -> None:
    """The batch size and seed of a loader, checked; the dataset functions check them first, before any decoding."""
    if not (isinstance(bs, numbers.Integral) and not isinstance(bs, bool) and bs >= 1):
        raise ValueError(f"bs={bs!r}: give the batch size as a whole number, at least 1 (e.g. 64)")
    if seed is not None and not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        raise ValueError(f"seed={seed!r}: give a whole number (e.g. 0), or None to draw from torch's global RNG")


class BatchLoader:
    """What the in-memory and the file-backed loaders share: each epoch's order, its shards under DDP, the
    number of batches, and normalising (then augmenting) whole batches on the loader's device.

    Each epoch draws one index permutation (when `shuffle`) from the loader's generator: seeded once
    by `seed`, or, with `seed=None`, re-seeded from torch's global RNG at the start of every epoch,
    as torch's DataLoader does, so a `set_seed` any time before training makes the order
    reproducible. uint8 images (`pixels`) are scaled to [0, 1] before `(x - mean) / std`; `mean`/`std`
    are scalars or one value per channel. `aug` (e.g. a `BatchAugment`) transforms each normalised batch;
    give it to the training loader only.

    For distributed training `shard(rank, world_size)` makes each rank take a disjoint slice of the
    same permutation (every `world_size`-th sample from `rank`). With `even=True` (training) the last
    `n % world_size` samples of each permutation are dropped so that every rank runs the same number
    of batches, which DistributedDataParallel needs; with `even=False` (evaluation) nothing is
    dropped and the first `n % world_size` ranks get one sample more.
    """

    def __init__(self, n: int, bs: int, shuffle: bool, drop_last: bool, device, seed: int | None,
                 aug: Callable[[torch.Tensor], torch.Tensor] | None):
        check_batching(bs, seed)
        self.n, self.bs, self.shuffle, self.drop_last, self.aug = n, bs, shuffle, drop_last, aug
        self.device = torch.device(device) if device is not None else default_device()
        self.seed, self.generator = seed, torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.epoch_start_state = self.generator.get_state()  # checkpoints taken mid-epoch need it
        self.rank, self.world_size, self.even = 0, 1, True
        self.scale = self.shift = None

    def _set_normalisation(self, mean, std, pixels: bool, ndim: int) -> None:
        self.mean, self.std = mean, std  # as given; exports record them
        self.pixels, self._ndim = pixels, ndim
        self.scale = self.shift = None
        if mean is None and std is None and not pixels:
            return
        self.scale, self.shift = normalising_affine(mean, std, 255. if pixels else 1., ndim, self.device)

    def normalise_with(self, mean: float | Sequence[float] | None, std: float | Sequence[float] | None) -> BatchLoader:
        """Normalise with these statistics from now on (e.g. a pretrained body's, in place of the dataset's);
        exports record them."""
        self._set_normalisation(mean, std, self.pixels, self._ndim)
        return self

    def shard(self, rank: int, world_size: int, even: bool = True):
        """Make this loader yield only rank `rank`'s share of every epoch (see the class docs)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.rank, self.world_size, self.even = rank, world_size, even
        return self

    @property
    def n_items(self) -> int:
        """Samples this loader (this rank's shard of it) yields per epoch."""
        n, world = self.n, self.world_size
        return n // world if self.even else n // world + (self.rank < n % world)

    def __len__(self) -> int:
        return self.n_items // self.bs if self.drop_last else math.ceil(self.n_items / self.bs)

    def _order(self, new_epoch: bool) -> torch.Tensor | None:
        """This epoch's indices for this rank (None: all, in order). A new epoch of an unseeded loader
        re-seeds the generator from torch's RNG; a resumed one keeps the state it was restored with."""
        n = self.n
        if self.shuffle:
            if new_epoch and self.seed is None:
                self.generator.manual_seed(int(torch.randint(2**62, ())))
            self.epoch_start_state = self.generator.get_state()
            order = torch.randperm(n, generator=self.generator)
        elif self.world_size > 1:
            order = torch.arange(n)
        else:
            return None
        if self.world_size > 1:
            end = self.n_items * self.world_size if self.even else n
            order = order[self.rank:end:self.world_size]
        return order

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """A batch as stored (e.g. uint8 images) to what the model sees."""
        if self.scale is None:
            return xb
        return xb.to(torch.float32, copy=True).mul_(self.scale).sub_(self.shift)  # never in place on the data

    def augmented(self, xb: torch.Tensor) -> torch.Tensor:
        """A stored batch normalised, then augmented (training loaders)."""
        xb = self.normalise(xb)
        return self.aug(xb) if self.aug is not None else xb

    def decode(self, xb: torch.Tensor) -> torch.Tensor:
        """Undo `normalise` for display: images back in [0, 1] (or the stored units for non-images)."""
        if self.scale is None:
            return xb
        x = (xb.float() + self.shift.to(xb.device)) / self.scale.to(xb.device)
        return x / 255 if self.pixels else x


class TensorLoader(BatchLoader):
    """Batches sliced from a whole dataset held as one tensor, on the CPU or directly on the GPU.

    A batch is one gather plus one normalisation of the whole batch. Order, shuffling, seeding,
    normalisation (`mean`, `std`; uint8 images are scaled to [0, 1] first), augmentation (`aug`) and
    sharding for distributed training (`shard`) are as described in `BatchLoader`.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int = 512, shuffle: bool = False,
                 drop_last: bool = False, device: torch.device | str | None = None,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 seed: int | None = None, aug: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} inputs and {len(y)} labels")
        super().__init__(len(x), bs, shuffle, drop_last, device, seed, aug)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self._set_normalisation(mean, std, pixels=self.x.dtype == torch.uint8, ndim=self.x.ndim)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The shape of one stored item (C, H, W for images)."""
        return tuple(self.x.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        """How items are stored (uint8 for images)."""
        return self.x.dtype

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch `start` on; the skipped ones are never built or augmented
        (a mid-epoch resume must not spend random numbers on them)."""
        order = self._order(new_epoch=start == 0)  # a resumed epoch keeps the order it was restored with
        if order is not None:
            order = order.to(self.device)
        for i in range(start, len(self)):
            if order is None:
                xb, yb = self.x[i * self.bs:(i + 1) * self.bs], self.y[i * self.bs:(i + 1) * self.bs]
            else:
                idx = order[i * self.bs:(i + 1) * self.bs]
                xb, yb = self.x[idx], self.y[idx]
            yield self.augmented(xb), yb


class DataLoaders:
    """The training and validation loaders (and optionally a test loader) of one dataset.

    `dls.train`, `dls.valid`, and `dls["train"]`, `dls["valid"]`, `dls["test"]` as in the seeds.
    `dls.resize` is how the loaders brought images of other sizes to theirs ({"method", "interpolation"}
    as in `Preprocessing`), or None when they did not resize: predictions on new images resize alike.
    `dls.split` is how a `valid_pct` split was drawn ({"rule", "valid_pct", "seed", "keys"}, see
    `labels.stable_split`), or None when the data came split: exports record it.
    """

    def __init__(self, train, valid, test=None, classes: Sequence[str] | None = None, resize: dict | None = None,
                 split: dict | None = None):
        self.train, self.valid, self.test = train, valid, test
        self.classes = list(classes) if classes is not None else None
        self.resize = resize
        self.split = split

    def show_batch(self, n: int = 16, split: str = "train", path: str | os.PathLike | None = None):
        """The first `n` images of a batch from `dls[split]` with their class names (a matplotlib Figure;
        with `path`, saved there and closed)."""
        from .show import show_batch  # show.py draws with matplotlib, which the loaders alone do not need
        return show_batch(self, n, split, path)

    def __getitem__(self, split: str):
        loader = {"train": self.train, "valid": self.valid, "test": self.test}.get(split)
        if loader is None:
            raise KeyError(f"No '{split}' loader: this DataLoaders has "
                           f"{', '.join(k for k in ('train', 'valid', 'test') if getattr(self, k) is not None)}")
        return loader
