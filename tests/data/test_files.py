"""File-backed loading (slowlearn/data/files.py): the in-memory path's pixels and batches, from files decoded in
worker processes; the loader's position for mid-epoch checkpoints; the decoded size printed when data loads."""
import pickle

import numpy as np
import pytest
import torch
from images import data_folder, make_folder, save  # noqa: F401 (data_folder: an autouse fixture)
from PIL import Image

from slowlearn import FileLoader, TensorLoader
from slowlearn.data import LoaderPositionError, preprocessing_of
from slowlearn.data import images as images_module
from slowlearn.data.files import image_file_sets
from slowlearn.data.images import image_csv, image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """204 PNGs, 8 x 8 RGB, in train/ and valid/ (3 classes of 34)."""
    return make_folder(tmp_path_factory.mktemp("files") / "pets", n_per_class=34, size=8, splits=("train", "valid"))


def both(root, **kwargs):
    """The in-memory and the file-backed loaders of `root`, made alike."""
    common = dict(bs=16, seed=3, device="cpu", verbose=False, **kwargs)
    return image_folder(root, **common), image_folder(root, in_memory=False, num_workers=0, **common)


def epoch(loader, seed=0):
    torch.manual_seed(seed)  # the augmentation draws from torch's RNG
    return [(xb.clone(), yb.clone()) for xb, yb in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_file_backed_loaders_give_the_in_memory_pixels_and_batches(folder):
    memory, files = both(folder)
    assert isinstance(files.train, FileLoader) and isinstance(memory.train, TensorLoader)
    assert files.train.mean == memory.train.mean and files.train.std == memory.train.std  # all 102 images sampled
    assert same_batches(epoch(memory.valid), epoch(files.valid))  # the same pixels, normalised alike
    for _ in range(2):  # the same shuffled order and the same augmentation, epoch after epoch
        assert same_batches(epoch(memory.train), epoch(files.train))
    assert preprocessing_of(files) == preprocessing_of(memory)  # so exports and predict are the same too
    assert files.train.item_shape == (3, 8, 8) and len(files.train) == len(memory.train) == 7


def test_worker_processes_give_the_same_batches_as_the_training_process(folder):
    in_process = image_folder(folder, bs=16, seed=3, device="cpu", verbose=False, in_memory=False, num_workers=0)
    workers = image_folder(folder, bs=16, seed=3, device="cpu", verbose=False, in_memory=False, num_workers=2)
    assert workers.train.num_workers == 2
    assert same_batches(epoch(in_process.train), epoch(workers.train))


def test_with_workers_on_the_cpu_batches_are_normalised_to_the_same_bits(folder):
    files = image_folder(folder, bs=16, device="cpu", verbose=False, in_memory=False, num_workers=2).valid
    every_value = torch.arange(256, dtype=torch.uint8).repeat(2, 3, 4, 1)  # 2 x 3 x 4 x 256
    memory = TensorLoader(every_value, torch.zeros(2), mean=files.mean, std=files.std, device="cpu")
    normalised = files.normalise(every_value)
    assert normalised.dtype == torch.float32 and torch.equal(normalised, memory.normalise(every_value))


def test_mixed_colours_sizes_and_modes_decode_as_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    for i, (mode, w, h) in enumerate([("L", 10, 14), ("RGB", 16, 9), ("P", 12, 12), ("LA", 9, 9), ("RGBA", 20, 11),
                                      ("L", 8, 8)]):
        for split in ("train", "valid"):
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
            path = tmp_path / "mixed" / split / ("a", "b")[i % 2] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    for channels in (None, 1):  # any colour image makes the set RGB; channels=1 converts every one
        memory, files = both(tmp_path / "mixed", size=(6, 7), channels=channels, aug="none")
        shape = ((3,) if channels is None else (1,)) + (6, 7)
        assert files.valid.item_shape == tuple(memory.valid.x.shape[1:]) == shape
        assert same_batches(epoch(memory.valid), epoch(files.valid))
        assert same_batches(epoch(memory.train), epoch(files.train))


def test_images_of_other_sizes_without_size_are_an_error_before_any_batch(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, size=8)
    save(torch.zeros(3, 9, 8, dtype=torch.uint8), root / "train" / "dog" / "big.png")
    with pytest.raises(ValueError, match=r"different sizes: .* is 8x8 \(h x w\) but .*big.png is 9x8. Pass size="):
        image_folder(root, in_memory=False, num_workers=0, verbose=False)


def test_a_batch_is_fetched_whole_as_its_images_one_by_one(tmp_path):
    root = make_folder(tmp_path / "grey", n_per_class=2, size=8, channels=1, splits=("train",))
    save(torch.full((3, 8, 8), 200, dtype=torch.uint8), root / "train" / "dog" / "colour.png")
    files = sorted(str(f) for f in root.rglob("*.png"))
    images = image_file_sets(files, list(range(len(files))), ["train"] * len(files), None, None)["train"]
    xb, yb = images.__getitems__([6, 0, 3])  # a colour set: its grayscale images repeated to RGB
    assert xb.shape == (3, 3, 8, 8) and xb.is_contiguous() and yb.tolist() == [6, 0, 3]
    assert all(torch.equal(x, images[i][0]) for x, i in zip(xb, [6, 0, 3]))


def test_a_file_that_changed_since_the_loaders_were_made_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path / "grey", n_per_class=2, size=8, channels=1, splits=("train", "valid"))
    dls = image_folder(root, bs=4, device="cpu", verbose=False, in_memory=False, num_workers=0)
    changed = save(torch.zeros(3, 8, 8, dtype=torch.uint8), root / "valid" / "dog" / "0.png")
    with pytest.raises(ValueError, match=f"{changed} is now in colour, but .* grayscale .*: make them again"):
        list(dls.valid)
    save(torch.zeros(1, 9, 8, dtype=torch.uint8), changed)
    with pytest.raises(ValueError, match=f"{changed} is now 9x8 \\(h x w\\), but every image of the set was 8x8 when "
                                         f"the loaders were made: make them again, with size="):  # it read "the other
        list(dls.valid)  # images is 8x8 (h x w) but ... Pass size=", as if the loaders could still be used


def test_a_csv_of_labels_loads_file_backed_too(folder, tmp_path):
    files = sorted((folder / "train").rglob("*.png"))[::10]
    rows = [{"fname": str(f.relative_to(folder)), "label": f.parent.name, "is_valid": i % 3 == 0}
            for i, f in enumerate(files)]
    memory = image_csv(rows, folder, fn_col="fname", label_col="label", valid_col="is_valid", bs=4, seed=0,
                       device="cpu", verbose=False)
    file_backed = image_csv(rows, folder, fn_col="fname", label_col="label", valid_col="is_valid", bs=4, seed=0,
                            device="cpu", verbose=False, in_memory=False, num_workers=0)
    assert same_batches(epoch(memory.valid), epoch(file_backed.valid))


def test_the_loader_holds_file_names_not_pixels(folder):
    files = sorted(str(f) for f in folder.rglob("*.png"))
    small, big = (image_file_sets(files, [0] * len(files), ["train"] * len(files), None, size)["train"]
                  for size in (8, 256))
    sent = len(pickle.dumps(small))  # what each worker process gets: the file names, whatever the size
    assert abs(sent - len(pickle.dumps(big))) < 16 and sent < sum(map(len, files)) + 10 * len(files) + 1000
    loader = FileLoader(big, 64, shuffle=True, device="cpu")
    for _ in loader:
        pass
    held = [v for v in vars(loader).values() if isinstance(v, torch.Tensor) and v.numel() >= 64 * 3 * 256 * 256]
    assert held == []  # nothing decoded stays behind after an epoch


def test_the_decoded_size_is_printed_and_a_size_beyond_memory_is_a_warning(folder, capsys, monkeypatch):
    image_folder(folder, bs=16, device="cpu")
    assert "204 images held in memory: about 39.2 kB decoded" in capsys.readouterr().out
    image_folder(folder, bs=16, device="cpu", in_memory=False, num_workers=2)
    assert ("204 images, left in their files and decoded batch by batch by 2 worker processes per loader (held in "
            "memory they would take about 39.2 kB)") in capsys.readouterr().out
    monkeypatch.setattr(images_module, "available_memory", lambda: 50_000)
    with pytest.warns(UserWarning, match=r"take about 39.2 kB decoded, and up to about 78.3 kB while they are decoded "
                                         r"\(with the chunks being decoded\), more than the 50.0 kB of memory "
                                         r"available: leave them in their files with in_memory=False "
                                         r"\(--no-in-memory on the command line\)"):
        image_folder(folder, bs=16, device="cpu", verbose=False)


def test_workers_without_file_backed_loading_and_bad_worker_counts_are_refused(folder):
    with pytest.raises(ValueError, match="num_workers=2 decodes batches in worker processes, which in-memory loading "
                                         "does not use: pass in_memory=False"):
        image_folder(folder, num_workers=2)
    with pytest.raises(ValueError, match=r"num_workers=-1: give 0"):
        image_folder(folder, in_memory=False, num_workers=-1)


def test_shards_of_a_file_backed_loader_are_those_of_the_in_memory_one(folder):
    memory, files = both(folder, aug="none")
    for rank in (0, 1):
        memory.train.shard(rank, 2)
        files.train.shard(rank, 2)
        assert len(files.train) == len(memory.train) == 4  # 51 of the 102 images each, in batches of 16
        assert same_batches(epoch(memory.train), epoch(files.train))


def test_a_position_is_refused_with_another_number_of_workers_or_processes(folder):
    _, files = both(folder)
    batches = iter(files.train)
    next(batches), next(batches)
    position = files.train.position(2)
    assert position["batches"] == 2 and position["loader"]["_num_yielded"] == 2
    assert files.train.position(1)["loader"]["_num_yielded"] == 1  # a batch handed out but not trained on
    files.train.check_position(position, world_size=1)
    with pytest.raises(LoaderPositionError, match=r"num_workers=0, .* this loader has num_workers=2: resume with "
                                                  r"num_workers=0 \(--workers 0 on the command line\)"):
        FileLoader(files.train.dataset, 16, num_workers=2).check_position(position, world_size=1)
    with pytest.raises(LoaderPositionError, match=r"a run of 1 process, .* this run has 2: resume with 1 \(torchrun "
                                                  r"--nproc_per_node=1, or slowlearn train --nproc 1\)"):
        files.train.check_position(position, world_size=2)


def test_a_resumed_epoch_continues_with_the_batches_it_had_left(folder):
    for workers in (0, 2):
        _, files = both(folder)
        files.train.num_workers = workers
        files.train.seed = None  # unseeded: the order comes from torch's RNG at the epoch's start
        torch.manual_seed(5)
        whole = [yb for _, yb in files.train]
        torch.manual_seed(5)
        batches = iter(files.train)
        first = [next(batches)[1] for _ in range(3)]
        position, start = files.train.position(3), files.train.epoch_start_state
        files.train.generator.set_state(start)  # as a checkpoint restores it
        files.train.resume_from(position)
        rest = [yb for _, yb in files.train.iter_from(3)]
        assert [y.tolist() for y in first + rest] == [y.tolist() for y in whole]
