"""Fashion-MNIST: where its files are found, and its loaders."""
import gzip
import struct

import pytest
import torch

from slowlearn import fashion_mnist
from slowlearn.data import fashion as data_module
from slowlearn.data import read_idx


def write_idx(path, tensor):
    header = struct.pack(">4B", 0, 0, 8, tensor.ndim) + struct.pack(f">{tensor.ndim}I", *tensor.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + tensor.numpy().tobytes())


def fake_fashion(folder, n_train=6, n_test=4):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n, dtype=torch.uint8) % 10)


def test_read_idx_round_trip(tmp_path):
    t = torch.randint(0, 256, (5, 3, 2), dtype=torch.uint8)
    write_idx(tmp_path / "x.gz", t)
    assert torch.equal(read_idx(tmp_path / "x.gz"), t)


def test_fashion_mnist_from_root_and_env(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    fake_fashion(tmp_path / "root" / "fashion-mnist")
    dls = fashion_mnist(bs=4, root=tmp_path / "root", download=False, device="cpu")
    xb, yb = next(iter(dls.valid))
    assert xb.shape == (4, 1, 28, 28) and yb.tolist() == [0, 1, 2, 3] and len(dls.train) == 2
    assert dls.classes[9] == "Ankle boot" and dls["test"] is dls.valid
    fake_fashion(tmp_path / "env" / "FashionMNIST" / "raw")
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "env"))
    assert data_module.find_fashion_mnist(download=False) == tmp_path / "env" / "FashionMNIST" / "raw"


def test_fashion_mnist_keeps_the_first_n_images_and_refuses_more_than_it_has(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    fake_fashion(tmp_path / "fashion-mnist")
    dls = fashion_mnist(bs=4, root=tmp_path, download=False, device="cpu", n_train=5, n_valid=3)
    assert len(dls.train.y) == 5 and dls.valid.y.tolist() == [0, 1, 2]  # the first ones, in order
    with pytest.raises(ValueError, match="n_train=7: there are 6 images to choose from; give 1 to 6"):
        fashion_mnist(root=tmp_path, download=False, n_train=7)
    with pytest.raises(ValueError, match="n_valid=0: there are 4 images"):
        fashion_mnist(root=tmp_path, download=False, n_valid=0)


def test_missing_fashion_mnist_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(root=tmp_path, download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "torchvision" in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError, match="download failed.*no network"):
        fashion_mnist(root=tmp_path, download=True)


def test_real_fashion_mnist(fashion_folder):
    dls = fashion_mnist(bs=512, device="cpu")
    assert dls.train.n_items == 60_000 and dls.valid.n_items == 10_000 and len(dls.train) == 118
    xb, yb = next(iter(dls.train))
    assert xb.shape == (512, 1, 28, 28) and yb.dtype == torch.int64
    assert abs(xb.mean().item()) < 0.1 and abs(xb.std().item() - 1) < 0.1
