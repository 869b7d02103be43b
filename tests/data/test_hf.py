"""Hugging Face datasets as in-memory loaders (datasets built locally: no download)."""
import numpy as np
import pytest
import torch
from PIL import Image

from slowlearn import from_hf

datasets = pytest.importorskip("datasets", reason="the optional extra slowlearn[hf] (Hugging Face datasets)")

NAMES = ["T-shirt", "Trouser", "Pullover"]


def fashion_like(n=12, offset=0):
    """Grayscale 6x6 images whose pixel (0, 0) is their label, with a ClassLabel feature, as HF stores Fashion-MNIST."""
    images = []
    for i in range(n):
        pixels = np.full((6, 6), 100 + offset + i, dtype=np.uint8)
        pixels[0, 0] = i % 3
        images.append(Image.fromarray(pixels))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)


def test_a_train_and_a_test_dataset(capsys):
    dls = from_hf(fashion_like(12), fashion_like(6, offset=50), bs=4, device="cpu")
    assert dls.classes == NAMES and dls.train.x.shape == (12, 1, 6, 6) and dls.valid.x.shape == (6, 1, 6, 6)
    assert torch.equal(dls.train.x[:, 0, 0, 0], dls.train.y) and torch.equal(dls.valid.x[:, 0, 0, 0], dls.valid.y)
    assert dls.valid.x[5, 0, 1, 1] == 155 and dls.train.x.dtype == torch.uint8
    assert "T-shirt" in capsys.readouterr().out  # the table of images per class
    dls.show_batch(n=4)


def test_a_dataset_dict_and_valid_pct():
    both = datasets.DatasetDict({"train": fashion_like(12), "test": fashion_like(6)})
    assert len(from_hf(both, device="cpu", verbose=False).valid.x) == 6
    split = from_hf(fashion_like(30), valid_pct=0.2, device="cpu", verbose=False, size=4)
    with_test = datasets.DatasetDict({"train": fashion_like(30), "test": fashion_like(6, offset=50)})
    from_train = from_hf(with_test, valid_pct=0.2, device="cpu", verbose=False).valid.x
    assert len(from_train) == len(split.valid.x) and (from_train[:, 0, 1, 1] < 150).all()  # of train's 30, not test
    assert len(split.train.x) + len(split.valid.x) == 30 and 2 <= len(split.valid.x) <= 12
    assert split.train.x.shape[-2:] == (4, 4) and split.split["keys"] == "content"


def test_valid_pct_puts_each_image_by_its_content_so_added_rows_move_no_other():
    """The rule of image folders (issue 23, rule 1) for datasets, whose rows have no path: a digest of the image."""
    def valid_images(ds):
        dls = from_hf(ds, valid_pct=0.25, device="cpu", verbose=False)
        return {int(v) for v in dls.valid.x[:, 0, 1, 1]}, {int(v) for v in dls.train.x[:, 0, 1, 1]}
    valid, train = valid_images(fashion_like(40))
    grown_valid, grown_train = valid_images(datasets.concatenate_datasets([fashion_like(3, offset=100),
                                                                            fashion_like(40)]))
    assert valid <= grown_valid and train <= grown_train  # rows added in front: no image changed sides


def test_string_labels_that_name_one_class_two_ways_are_refused():
    ds = datasets.Dataset.from_dict({"image": [np.full((2, 2), i, dtype=np.uint8) for i in range(4)],
                                     "label": ["1", "01", "2", "2"]})
    with pytest.raises(ValueError, match=r"the label column 'label': the classes '01' and '1' differ only by leading"):
        from_hf(ds, valid_pct=0.5)


def test_string_labels_and_array_images():
    ds = datasets.Dataset.from_dict({"img": [np.full((5, 5, 3), i, dtype=np.uint8) for i in range(6)],
                                     "breed": ["pug", "corgi"] * 3})
    dls = from_hf(ds, x="img", y="breed", valid_pct=1 / 3, device="cpu", verbose=False)
    assert dls.classes == ["corgi", "pug"] and dls.train.x.shape[1:] == (3, 5, 5)
    assert all(int(x[0, 0, 0]) % 2 == 1 - int(y) for x, y in zip(dls.train.x, dls.train.y))  # pug: even images


def test_errors_name_the_column_or_row():
    with pytest.raises(ValueError, match=r"y='labels' is not a column of the train dataset: its columns are "):
        from_hf(fashion_like(), valid_pct=0.2, y="labels")
    with pytest.raises(ValueError, match="either a validation dataset or valid_pct=.*not neither"):
        from_hf(fashion_like())
    only_two = fashion_like(6).filter(lambda row: row["label"] != 2)
    with pytest.raises(ValueError, match="class 'Pullover' has no training images"):
        from_hf(only_two, fashion_like(6))
    reordered = fashion_like(6).cast_column("label", datasets.ClassLabel(names=NAMES[::-1]))
    with pytest.raises(ValueError, match="names other classes in the valid dataset"):
        from_hf(fashion_like(), reordered)
    floats = datasets.Dataset.from_dict({"image": [np.full((2, 2), 0.5, dtype=np.float32)] * 4,
                                         "label": ["a", "b"] * 2})
    with pytest.raises(ValueError, match=r"holds float\w* values in \[0.5, 0.5\]: give pixels as uint8"):
        from_hf(floats, valid_pct=0.5, verbose=False)
    ds = datasets.Dataset.from_dict({"image": [np.zeros((2, 2), dtype=np.uint8)] * 3, "label": ["a", "", "b"]})
    with pytest.raises(ValueError, match="train row 1: the label is empty"):
        from_hf(ds, valid_pct=0.5)


def test_class_names_are_compared_only_when_both_datasets_have_them():
    from slowlearn.data.hf import _check_same_class_names
    plain = datasets.Dataset.from_dict({"image": [np.zeros((2, 2), dtype=np.uint8)], "label": [0]})
    _check_same_class_names({"train": plain, "valid": fashion_like(3)}, "label")  # train has no ClassLabel
    with pytest.raises(ValueError, match="names other classes"):
        _check_same_class_names({"train": fashion_like(3),
                                 "valid": fashion_like(3).cast_column("label", datasets.ClassLabel(names=NAMES[::-1]))},
                                "label")
