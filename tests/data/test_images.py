import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from images import CLASSES, data_folder, make_folder, pixels  # noqa: F401 (data_folder: an autouse fixture)
from PIL import Image

from slowlearn.checkpoint import read_checkpoint
from slowlearn.data import decode as decode_module
from slowlearn.data import images as images_module
from slowlearn.data.augment import BatchAugment
from slowlearn.data.images import cifar10, image_csv, image_folder

SHARED_DATA = Path(__file__).parents[3] / "shared" / "data"  # tests/data/ -> the folder beside the checkout


def test_image_folder_loads_labels_classes_and_caches(tmp_path, data_folder):
    root = make_folder(tmp_path / "pets")
    dls = image_folder(root, bs=4, device="cpu")
    assert dls.classes == CLASSES and dls.train.x.shape == (12, 3, 12, 12) and dls.valid.x.shape == (12, 3, 12, 12)
    assert torch.equal(dls.train.x[:, 0, 0, 0], dls.train.y)  # every image carries its class marker
    caches = list((data_folder / "image-cache").glob("*.pt"))
    assert len(caches) == 1 and not list(root.glob(".*"))  # cached in slowlearn's folder, nothing in the user's
    xb, _ = next(iter(dls.valid))
    assert abs(xb.mean().item()) < 0.3  # normalised with the training statistics
    assert torch.equal(dls.train.x[4 + 2], pixels(root / "train" / "dog" / "2.png"))  # cat 0-3, then dog 0-3

    cache_time = caches[0].stat().st_mtime_ns
    again = image_folder(root, bs=4, device="cpu")  # unchanged folder: from the cache
    assert torch.equal(again.train.x, dls.train.x)
    assert caches[0].stat().st_mtime_ns == cache_time

    Image.new("RGB", (12, 12), (7, 7, 7)).save(root / "train" / "frog" / "new.png")  # the folder changes
    changed = image_folder(root, bs=4, device="cpu")
    assert len(changed.train.x) == 13 and changed.train.x[-1].eq(7).all()


def test_a_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "test" / "dog" / "1.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot decode image file .*dog/1.png"):
        image_folder(root, device="cpu")


def test_image_folder_grayscale_and_errors(tmp_path):
    dls = image_folder(make_folder(tmp_path / "gray", channels=1), bs=4, device="cpu")
    assert dls.train.x.shape[1] == 1
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder"):
        image_folder(tmp_path / "nowhere")


def test_cifar10_from_an_image_folder_root(tmp_path):
    make_folder(tmp_path / "cifar10")
    dls = cifar10(bs=4, root=tmp_path, device="cpu", download=False)
    assert dls.classes == CLASSES and isinstance(dls.train.aug, BatchAugment) and dls.valid.aug is None
    with pytest.raises(FileNotFoundError, match="download=False"):
        cifar10(root=tmp_path / "empty", download=False)


def test_cifar10_offline_says_where_it_looked_and_why_the_download_failed(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(FileNotFoundError, match=r"not found under .*empty.*download failed.*Name or service"):
        cifar10(root=tmp_path / "empty")




def test_training_loader_augments_and_validation_does_not(tmp_path):
    dls = image_folder(make_folder(tmp_path / "pets"), bs=12, device="cpu", aug=BatchAugment(pad=2, cutout=4))
    torch.manual_seed(0)
    first, second = next(iter(dls.train))[0], next(iter(dls.train))[0]
    assert not torch.equal(first.sort(0).values, second.sort(0).values)
    assert torch.equal(next(iter(dls.valid))[0], next(iter(dls.valid))[0])


def test_cli_on_an_image_folder(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=8)
    promised = ["metrics.csv", "checkpoint.pt", "model.pt2", "schedule.png", "loss.png", "metrics.png",
                "confusion_matrix.png"]
    for command, outputs in (("train", promised), ("lr-find", ["lr_find.png"])):
        out = tmp_path / command
        result = subprocess.run([sys.executable, "-m", "slowlearn", command, "--data", str(root), "--bs", "8",
                                 "--model", "resnet", "--out", str(out),
                                 *(["--epochs", "1"] if command == "train" else [])],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert all((out / name).exists() for name in outputs)
    assert "Suggested learning rate" in result.stdout
    weights = read_checkpoint(tmp_path / "train" / "checkpoint.pt")["model"]
    convs = [w for w in weights.values() if w.ndim == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)  # the ResNet's layout


def test_cli_names_an_image_that_does_not_decode_in_one_line(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "train" / CLASSES[0] / "broken.jpg").write_bytes(b"not an image")
    result = subprocess.run([sys.executable, "-m", "slowlearn", "train", "--data", str(root), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    last_line = result.stderr.strip().splitlines()[-1]  # after the decoding progress bar
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert last_line.startswith("slowlearn: error: --data") and "Cannot decode image file" in last_line
    assert "broken.jpg" in last_line


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpg-test.zip").exists(),
                    reason="the CIFAR-10 JPEG zips are not in ../shared/data on this machine")
def test_real_cifar10_jpeg_test_split(tmp_path):
    import zipfile
    with zipfile.ZipFile(SHARED_DATA / "cifar10-jpg-test.zip") as z:
        z.extractall(tmp_path)
    dls = image_folder(tmp_path / "cifar10" / "test", valid_pct=0.2, device="cpu")  # its 10 000 images, split
    assert dls.classes[:3] == ["airplane", "automobile", "bird"] and dls.train.x.shape[1:] == (3, 32, 32)
    assert len(dls.train.x) + len(dls.valid.x) == 10_000 and 1_500 < len(dls.valid.x) < 2_500


def test_public_names_and_show_batch_and_the_count_table(tmp_path, capsys):
    import slowlearn
    namespace = {}
    exec("from slowlearn import *", namespace)
    assert {"image_folder", "image_csv", "cifar10", "BatchAugment", "from_hf"} <= set(namespace)
    assert namespace["image_folder"] is slowlearn.data.images.image_folder
    root = make_folder(tmp_path / "pets")
    (root / "test" / "frog" / "0.png").unlink()
    dls = image_folder(root, bs=4, device="cpu")
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["images", "per", "class", "train", "valid"]
    assert table[3].split() == ["frog", "4", "3"] and table[4].split() == ["total", "12", "11"]
    fig = dls.show_batch(n=4)
    assert {ax.get_title() for ax in fig.axes[:4]} <= set(CLASSES)
    assert len([ax for ax in fig.axes if ax.images]) == 4


@pytest.mark.parametrize("kwargs, message", [({"seed": "1"}, r"seed='1': give a whole number"),
                                             ({"bs": 0}, r"bs=0: give the batch size as a whole number, at least 1"),
                                             ({"bs": 8.5}, r"bs=8.5: give the batch size")])
def test_a_bad_seed_or_batch_size_is_refused_before_the_images_are_listed(tmp_path, monkeypatch, kwargs, message):
    root = make_folder(tmp_path / "pets", n_per_class=1, splits=("",))
    rows = [(f"{name}/0.png", name) for name in CLASSES]
    def listed(*args):
        raise AssertionError("the images were listed (then decoded) before the arguments were checked")
    monkeypatch.setattr("slowlearn.data.images.folder_files", listed)
    monkeypatch.setattr("slowlearn.data.images.csv_files", listed)
    with pytest.raises(ValueError, match=message):
        image_folder(root, valid_pct=0.5, **kwargs)
    with pytest.raises(ValueError, match=message):
        image_csv(rows, root, valid_pct=0.5, **kwargs)


def test_a_subset_that_leaves_a_class_untrained_is_a_warning(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=3, splits=("train", "valid"))
    with pytest.warns(UserWarning, match=r"n_train=2 leaves 1 of the 3 classes with no training image \('\w+'\): "
                                         r"the model never learns it; give a larger n_train"):
        dls = image_folder(root, n_train=2, device="cpu", verbose=False)
    assert len(dls.train.y.unique()) == 2


def test_the_memory_warning_counts_the_decoded_images_once_plus_the_chunks_being_decoded(tmp_path, monkeypatch):
    """Decoding fills one tensor as the chunks come: it needs the decoded size plus the chunks that the threads
    are decoding and the one being copied in (here 2 threads and chunks of 3: 9 images), not twice the size."""
    root = make_folder(tmp_path / "pets", n_per_class=4)  # 24 images of 3 x 12 x 12
    monkeypatch.setattr(decode_module, "CHUNK", 3)
    monkeypatch.setattr(decode_module, "DECODE_THREADS", 2)
    needed = (24 + 9) * 3 * 12 * 12

    def memory_warnings(free: int) -> list[str]:
        monkeypatch.setattr(images_module, "available_memory", lambda: free)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image_folder(root, device="cpu", verbose=False)
        return [str(w.message) for w in caught if "of memory available" in str(w.message)]
    short, enough = memory_warnings(needed - 1), memory_warnings(needed)
    assert enough == [] and len(short) == 1
    assert short[0].startswith("The 24 images take about 10.4 kB decoded, and up to about 14.3 kB while they are "
                               "decoded (with the chunks being decoded), more than the 14.3 kB of memory available")
