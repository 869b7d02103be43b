"""File-backed image loaders, for data bigger than memory: every batch is read, decoded and resized in worker
processes, by the in-memory path's own decode function (`decode._decode_file`), so a model sees the same pixels
either way. Workers hand uint8 batches to the main process; normalisation and batch augmentation run on the
loader's device, as in `TensorLoader`, with the same order of samples (`BatchLoader`).

The workers are torchdata's `StatefulDataLoader`, whose position (which samples it has handed out, and its
workers' states) goes into mid-epoch checkpoints (`FileLoader.position`), so a resumed run continues exactly
where it stopped, with workers and under DDP. Nothing here holds decoded images beyond the batches in flight:
memory does not grow with the number of images.
"""
from __future__ import annotations

import collections
import ctypes
import functools
import itertools
import os
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .decode import _decode_file, any_colour, check_same_size, image_size, read_headers
from .loaders import BatchLoader

__all__ = ["ImageFiles", "FileLoader", "image_file_sets", "sample_images", "default_workers", "decoded_bytes",
           "available_memory", "format_bytes", "LoaderPositionError"]

STATS_SAMPLE = 2048  # training images whose pixels give the normalisation statistics (all of them below this)
MMAP_THRESHOLD = 1 << 20  # bytes: blocks at least this big are mapped on their own, and unmapped when freed


def default_workers() -> int:
    """Worker processes per file-backed loader when none are asked for: the CPU count, at most 8."""
    return min(8, os.cpu_count() or 1)


class LoaderPositionError(ValueError):
    """A saved loader position that this loader cannot continue from (another number of workers or processes)."""


class ImageFiles(Dataset):
    """Image files with their labels as a map-style dataset of (uint8 C x H x W image, label) pairs, decoded
    by the in-memory path's function: converted to `mode` ("L", "RGB" or None: each image's own kind),
    resized to `size` (h, w) if given, and grayscale repeated to RGB when the set is `colour`."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], mode: str | None, size: tuple[int, int] | None,
                 colour: bool, item_shape: tuple[int, int, int]):
        self.files = np.array([os.fsencode(f) for f in files])  # one buffer of bytes: workers share it as it is
        self.labels = torch.tensor(list(labels), dtype=torch.int64)
        self.mode, self.size, self.colour, self.item_shape = mode, size, colour, tuple(item_shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = self._array(i)
        if self.colour and array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)  # as decode_images' _unify_channels
        elif not array.flags.writeable:  # a view of Pillow's buffer
            array = array.copy()
        return torch.from_numpy(array).permute(2, 0, 1), self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images `indices` as one uint8 N x C x H x W batch, with their labels: what the loader's workers
        fetch (each image copied once, into its place: no tensor per image, no stacking)."""
        batch = np.empty((len(indices), *self.item_shape[1:], self.item_shape[0]), np.uint8)
        for row, i in zip(batch, indices):
            row[...] = self._array(i)  # grayscale in a colour set: broadcast to RGB, as np.repeat
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(), self.labels[indices]

    def _array(self, i: int) -> np.ndarray:
        """Image `i` as an H x W x C uint8 array (C: 1, or 3 in colour; maybe a read-only view of Pillow's
        buffer), refused when its file no longer matches the header read for it."""
        path = os.fsdecode(self.files[i])
        array = _decode_file(path, self.mode, self.size)
        if array.shape[:2] != self.item_shape[1:]:  # the file changed since its header was read
            (h, w), (was_h, was_w) = array.shape[:2], self.item_shape[1:]
            raise ValueError(f"{path} is now {h}x{w} (h x w), but every image of the set was {was_h}x{was_w} when the "
                             f"loaders were made: make them again, with size= (e.g. size=64) if the sizes now differ")
        if array.shape[-1] > self.item_shape[0]:
            raise ValueError(f"{path} is now in colour, but it and every other image of the set were grayscale "
                             f"when the loaders were made: make them again (or pass channels=1, or 3)")
        return array


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate function of batches that `ImageFiles.__getitems__` has already put together."""
    return batch


def image_file_sets(files: Sequence[str], labels: Sequence[int], splits: Sequence[str], channels: int | None,
                    size) -> dict[str, ImageFiles]:
    """One `ImageFiles` per split, after reading every file's header: sizes checked to match when no `size` is
    given, and the set RGB as soon as any image is in colour (as the in-memory path decides), so an odd file is
    an error now, not in a worker in the middle of an epoch."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r}: give 1 (grayscale), 3 (RGB) or None (RGB if any image is colour)")
    hw = image_size(size)
    headers = read_headers(files, desc=f"reading the headers of {len(files)} images")
    if hw is None:
        check_same_size([(h, w) for _, h, w in headers], files)
    colour = channels == 3 or (channels is None and any_colour([mode for mode, _, _ in headers]))
    shape = (3 if colour else 1, *(hw or headers[0][1:]))
    mode = {None: None, 1: "L", 3: "RGB"}[channels]
    sets = {}
    for split in dict.fromkeys(splits):
        keep = [i for i, s in enumerate(splits) if s == split]
        sets[split] = ImageFiles([files[i] for i in keep], [labels[i] for i in keep], mode, hw, colour, shape)
    return sets


def sample_images(dataset: ImageFiles, n: int = STATS_SAMPLE, seed: int = 0) -> torch.Tensor:
    """A uint8 N x C x H x W tensor of `n` images of `dataset` picked at random (by `seed`), or all of them
    when it has no more than `n`, decoded in threads (for the normalisation statistics)."""
    picked = range(len(dataset)) if len(dataset) <= n else \
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return torch.stack(list(pool.map(lambda i: dataset[i][0], picked)))


class _Order(Sampler[int]):
    """The indices of the current epoch (`order`, or 0..n-1 when None), set by the loader before each, handing
    out how many it has yielded: torchdata's Stateful protocol, through which StatefulDataLoader saves and
    restores where an epoch stands (a restored sampler skips the indices already handed out, undecoded)."""

    def __init__(self, order: torch.Tensor | None, n: int):
        self.order, self.n = order, n
        self.yielded, self.next_yielded = 0, None

    def __len__(self) -> int:
        return self.n if self.order is None else len(self.order)

    def __iter__(self) -> Iterator[int]:
        self.yielded, self.next_yielded = self.next_yielded or 0, None
        indices = range(self.n) if self.order is None else self.order.tolist()
        for index in itertools.islice(indices, self.yielded, None):
            self.yielded += 1
            yield index

    def state_dict(self) -> dict:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.next_yielded = state["yielded"]


@functools.cache
def _fixed_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> None:
    """Keep glibc's malloc from fragmenting the heap with batches. glibc raises its mmap threshold to the largest
    block freed so far (up to 32 MB), so after the first batch each batch's float copies (normalised, padded,
    cropped: a few MB each) come from the heap, among the small blocks allocated between them. With worker
    processes that heap fragmented: its free space grew by ~300 MB over the 170 batches of a 50,000-image epoch
    (memory that grew with the images) while the memory in use stayed at ~115 MB. A fixed threshold maps such
    blocks on their own and hands them back when freed. Once per process; nothing on other C libraries."""
    if _glibc():
        M_MMAP_THRESHOLD = -3
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, nbytes)


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False


def _worker_init(worker_id: int) -> None:
    # A worker forked during a fit inherits CheckpointCB's SIGTERM handler; it should just end on SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class FileLoader(BatchLoader):
    """Batches of `dataset` (an `ImageFiles`) decoded by `num_workers` worker processes (0: in this process)
    through torchdata's `StatefulDataLoader`, moved to `device` as uint8, then normalised and augmented there.

    Order, shuffling, seeding, normalisation (`mean`, `std`), augmentation (`aug`) and sharding under DDP
    (`shard`) are `BatchLoader`'s, so the same seed gives the same batches as a `TensorLoader` of the same
    images. `position(batches)` is where an epoch stands after that many batches (StatefulDataLoader's
    state_dict and what it was saved with); `resume_from(position)` makes the next epoch continue from it.
    """

    dtype = torch.uint8  # how the images are handed over (and stored, were they in memory)

    def __init__(self, dataset: ImageFiles, bs: int = 512, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str | None = None, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None, seed: int | None = None,
                 aug: Callable[[torch.Tensor], torch.Tensor] | None = None, num_workers: int = 0,
                 prefetch_factor: int = 2):
        if not (isinstance(num_workers, int) and num_workers >= 0):
            raise ValueError(f"num_workers={num_workers!r}: give 0 (decode in this process) or more worker processes")
        super().__init__(len(dataset), bs, shuffle, drop_last, device, seed, aug)
        self.dataset, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.y = dataset.labels
        self._set_normalisation(mean, std, pixels=True, ndim=4)
        self._positions: collections.deque = collections.deque(maxlen=2)  # (batches, state) of the last two yields
        self._resume: dict | None = None
        if num_workers:
            _fixed_mmap_threshold()

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return self.dataset.item_shape

    def __repr__(self) -> str:
        return f"FileLoader({len(self.dataset)} images, bs={self.bs}, num_workers={self.num_workers})"

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """`BatchLoader.normalise`, to the same bits; on the CPU with workers, by numpy in this one thread: the
        workers have the cores, so torch's parallel ops here waited for one, their threads spinning meanwhile
        (a 256-image batch took ~8 ms to normalise instead of ~0.4, and the workers lost a core)."""
        if not (self.num_workers and xb.device.type == "cpu" and self.scale is not None):
            return super().normalise(xb)
        x = xb.numpy().astype(np.float32)
        np.multiply(x, self.scale.numpy(), out=x)
        return torch.from_numpy(np.subtract(x, self.shift.numpy(), out=x))

    def _workers(self, sampler: _Order):
        from torchdata.stateful_dataloader import StatefulDataLoader  # imported when images are loaded
        extra = dict(prefetch_factor=self.prefetch_factor, worker_init_fn=_worker_init) if self.num_workers else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'set_vital' is deprecated")  # torchdata 0.11 on torch >= 2.9
            return StatefulDataLoader(self.dataset, self.bs, sampler=sampler, drop_last=self.drop_last,
                                      collate_fn=_as_is, num_workers=self.num_workers,
                                      pin_memory=self.device.type == "cuda",
                                      generator=torch.Generator(),  # workers' seeds: never a draw from torch's RNG
                                      **extra)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch `start` on: from the position given to `resume_from`, or, without
        one (a checkpoint of an in-memory loader, whose order is the same), by skipping `start` batches'
        samples undecoded. A new epoch (start 0) forgets any position given."""
        resume, self._resume = self._resume, None
        sampler = _Order(self._order(new_epoch=start == 0), self.n)
        loader = self._workers(sampler)
        state = None
        if start and resume is not None and resume["loader"] is not None:
            if resume["batches"] != start:
                raise LoaderPositionError(f"The loader's saved position is after {resume['batches']} batches, but the "
                                          f"epoch resumes after {start}")
            state = resume["loader"]
            loader.load_state_dict(state)
        elif start:
            sampler.next_yielded = start * self.bs
        self._positions.clear()
        self._positions.append((start, state))
        for count, (xb, yb) in enumerate(loader, start + 1):
            self._positions.append((count, loader.state_dict()))
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            yield self.augmented(xb), yb

    def position(self, batches: int) -> dict:
        """Where the current epoch stands after `batches` batches, as plain data for a checkpoint: the
        StatefulDataLoader's state after the last batch handed out or the one before it (a batch handed out
        but not trained on when a fit was interrupted); further back (inside a window of gradient
        accumulation) just the count, which `iter_from` resumes by skipping as many samples."""
        return {"batches": batches, "num_workers": self.num_workers, "world_size": self.world_size, "bs": self.bs,
                "loader": dict(self._positions).get(batches)}

    def resume_from(self, position: dict) -> None:
        """Continue the next `iter_from(position["batches"])` from a saved `position` (see `check_position`)."""
        self.check_position(position, self.world_size)
        self._resume = position

    def check_position(self, position: dict, world_size: int) -> None:
        """Refuse (LoaderPositionError, saying what to pass) a position saved with another number of workers,
        whose StatefulDataLoader state is kept per worker, or by a run of another number of processes (`world_size`),
        whose shards of each epoch differ."""
        saved, now = position["num_workers"], self.num_workers
        if saved != now:
            raise LoaderPositionError(
                f"it was saved mid-epoch by a file-backed loader with num_workers={saved}, whose position is kept per "
                f"worker, and this loader has num_workers={now}: resume with num_workers={saved} (--workers {saved} "
                f"on the command line), or from a checkpoint saved at the end of an epoch")
        saved = position["world_size"]
        if saved != world_size:
            raise LoaderPositionError(
                f"it was saved mid-epoch by a run of {saved} process{'es' * (saved > 1)}, which shard every epoch "
                f"{saved} ways, and this run has {world_size}: resume with {saved} (torchrun --nproc_per_node={saved}, "
                f"or slowlearn train --nproc {saved}), or from a checkpoint saved at the end of an epoch")


def decoded_bytes(n: int, item_shape: Sequence[int]) -> int:
    """Bytes that `n` uint8 images of `item_shape` (C, H, W) take in memory."""
    return n * int(np.prod(item_shape))


def format_bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the system's available memory, or less under a
    container's (cgroup v2) limit; None where neither is known."""
    sizes = []
    try:
        with open("/proc/meminfo") as f:
            sizes += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f_max, open("/sys/fs/cgroup/memory.current") as f_now:
            limit = f_max.read().strip()
            if limit != "max":
                sizes.append(int(limit) - int(f_now.read()))
    except (OSError, ValueError):
        pass
    return min(sizes) if sizes else None
