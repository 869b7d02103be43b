"""CIFAR-10's python batches are read without running code from the file."""
import os
import pickle

import numpy as np
import pytest
import torch
from images import data_folder  # noqa: F401 (an autouse fixture)

from slowlearn.data.images import cifar10
from slowlearn.data.safe_pickle import read_cifar_batch


def write_batches(folder, n=4, protocol=2):
    """A cifar-10-batches-py folder in the official format (dicts with bytes keys, a uint8 data array)."""
    folder.mkdir(parents=True)
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        data = np.full((n, 3072), i, dtype=np.uint8)
        batch = {b"batch_label": b"batch", b"labels": [j % 10 for j in range(n)], b"data": data,
                 b"filenames": [b"f.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_official_format_batches_load(tmp_path, protocol):
    write_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    dls = cifar10(bs=4, root=tmp_path, device="cpu", download=False, verbose=False)
    assert dls.train.x.shape == (20, 3, 32, 32) and dls.valid.x.shape == (4, 3, 32, 32)
    assert dls.train.x[:, 0, 0, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert torch.equal(dls.valid.y, torch.tensor([0, 1, 2, 3]))


def test_a_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    write_batches(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": RunsCode(marker), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match=r"Refused to load .*data_batch_3: it names posix.system.*may run code"):
        cifar10(root=tmp_path, download=False)
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", [
    ({b"data": np.zeros((2, 3072), dtype=object), b"labels": [0, 1]}, "Refused .*array of Python objects"),
    ({b"data": np.zeros((2, 3072), dtype=np.float32), b"labels": [0, 1]}, "is not a CIFAR-10 batch"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 11]}, "is not a CIFAR-10 batch"),
    ([1, 2], "is not a readable CIFAR-10 batch"),
])
def test_other_contents_are_refused(tmp_path, payload, message):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=message):
        read_cifar_batch(path)
