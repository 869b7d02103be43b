"""Image folders for the image-data tests: small synthetic PNGs whose pixel (0, 0) marks their class."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASSES = ["cat", "dog", "frog"]


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    """slowlearn's data folder (where the image cache goes) inside the test's temporary folder."""
    folder = tmp_path / "slowlearn-data"
    monkeypatch.setenv("SLOWLEARN_DATA", str(folder))
    return folder


def save(image: torch.Tensor, path: Path) -> Path:
    """A C x H x W uint8 tensor as a PNG (1 channel: grayscale)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy()).save(path)
    return path


def make_folder(root: Path, n_per_class=4, size=12, channels=3, splits=("train", "test")) -> Path:
    """`root/<split>/<class>/<i>.png` (or `root/<class>/<i>.png` with splits=("",)), random pixels,
    pixel (0, 0) of every channel equal to the class index."""
    g = torch.Generator().manual_seed(0)
    for split in splits:
        for label, name in enumerate(CLASSES):
            for i in range(n_per_class):
                image = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8, generator=g)
                image[:, 0, 0] = label
                save(image, root / split / name / f"{i}.png")
    return root


def pixels(path: Path) -> torch.Tensor:
    """A saved image as its C x H x W uint8 tensor."""
    array = np.array(Image.open(path))
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)
