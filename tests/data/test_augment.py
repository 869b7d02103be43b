"""Batch augmentation: crop, flip, cutout."""

import torch
from images import CLASSES, data_folder, make_folder, pixels  # noqa: F401 (data_folder: an autouse fixture)

from slowlearn.data.augment import cutout, random_crop, random_flip


def test_augmentations_keep_shapes_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.manual_seed(0)
    cropped = random_crop(x, 2)
    assert cropped.shape == x.shape
    for image, original in zip(cropped, x):  # a translated (reflect-padded) window of the original
        padded = torch.nn.functional.pad(original[None], (2,) * 4, mode="reflect")[0]
        assert any(torch.equal(image, padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    assert cropped.min() >= x.min() and cropped.max() <= x.max()  # values kept
    flipped = random_flip(torch.cat([x] * 8))
    mirrored = [torch.equal(f, o.flip(2)) for f, o in zip(flipped, torch.cat([x] * 8))]
    assert all(m or torch.equal(f, o) for m, f, o in zip(mirrored, flipped, torch.cat([x] * 8)))
    assert 0 < sum(mirrored) < 16  # an exact mirror, for some of the images
    holes = cutout(torch.ones(4, 1, 8, 8), 3)
    assert ((holes == 0).sum((1, 2, 3)) <= 9).all() and (holes == 0).any() and set(holes.unique().tolist()) <= {0, 1}
