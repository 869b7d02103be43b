"""Which files, labels and splits an image folder or CSV gives, and the errors before any decoding."""
import csv

import pytest
import torch
from images import CLASSES, data_folder, make_folder, pixels  # noqa: F401 (data_folder: an autouse fixture)

from slowlearn.data.images import image_csv, image_folder
from slowlearn.data.labels import csv_files, folder_files, random_split


def test_an_empty_class_folder_is_an_error_not_a_class(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "train" / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"Class folder .*train/zebra has no images.*add some or remove the folder"):
        folder_files(root, None, None)


def test_a_class_only_in_test_is_an_error_not_dropped(tmp_path):
    root = make_folder(tmp_path / "pets")
    make_folder(tmp_path / "extra", n_per_class=1, splits=("test",))
    (tmp_path / "extra" / "test" / "dog").rename(root / "test" / "wolf")
    with pytest.raises(ValueError, match=r"test/wolf is a class with no training images"):
        image_folder(root, device="cpu")


def test_one_class_is_an_error(tmp_path):
    root = make_folder(tmp_path / "pets", splits=("",))
    for name in CLASSES[1:]:
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    with pytest.raises(ValueError, match=r"has 1 class \(cat\): a classifier needs at least two"):
        image_folder(root, valid_pct=0.25, device="cpu")


def test_valid_pct_splits_each_class_reproducibly(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=10, splits=("",))
    items = folder_files(root, None, 0.2)
    splits = random_split(items, 0.2, seed=0)
    labels = torch.tensor(items.labels)
    valid = torch.tensor([s == "valid" for s in splits])
    assert torch.bincount(labels[valid]).tolist() == [2, 2, 2]  # stratified: 20 % of every class
    assert random_split(items, 0.2, seed=0) == splits and random_split(items, 0.2, seed=1) != splits
    dls = image_folder(root, valid_pct=0.2, device="cpu")
    assert len(dls.train.x) == 24 and len(dls.valid.x) == 6
    assert torch.equal(dls.train.x[:, 0, 0, 0], dls.train.y) and torch.equal(dls.valid.x[:, 0, 0, 0], dls.valid.y)
    train_images = {tuple(x.flatten().tolist()) for x in dls.train.x}
    assert not any(tuple(x.flatten().tolist()) in train_images for x in dls.valid.x)  # no image in both


def test_a_flat_layouts_test_folder_is_the_test_split_not_a_class(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("", "test"))
    items = folder_files(root, None, 0.5)
    assert items.classes == CLASSES
    assert sum(s == "test" for s in items.splits) == 6 and sum(s == "train" for s in items.splits) == 6
    make_folder(root / "valid", n_per_class=1, splits=("",))
    with pytest.raises(ValueError, match="valid_pct=0.5 would ignore the validation folder .*valid"):
        folder_files(root, None, 0.5)


def test_train_valid_and_test_folders_give_three_splits(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("train", "valid", "test"))
    (root / "test" / "cat" / "0.png").unlink()  # a test set of another size than the validation set
    items = folder_files(root, None, None)
    assert [items.splits.count(s) for s in ("train", "valid", "test")] == [6, 6, 5]
    dls = image_folder(root, bs=4, device="cpu", verbose=False)
    assert len(dls.test.x) == 5 and dls.test is not dls.valid
    assert [folder_files(root, "test", None).splits.count(s) for s in ("valid", "test")] == [5, 0]


def test_an_unlabelled_test_folder_is_left_out_with_a_warning(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("train", "valid"))
    (root / "test").mkdir()
    (root / "train" / "cat" / "0.png").rename(root / "test" / "0.png")  # Kaggle style: test/*.jpg, no labels
    with pytest.warns(UserWarning, match="not labelled by the training classes' folders"):
        dls = image_folder(root, bs=4, device="cpu", verbose=False)
    assert dls.test is dls.valid and len(dls.valid.x) == 6  # as with no test/ folder


def test_valid_pct_with_train_and_test_folders(tmp_path):
    root = make_folder(tmp_path / "pets")
    dls = image_folder(root, valid_pct=0.25, device="cpu")  # train/ split at random; test/ is the test set
    assert (len(dls.train.x), len(dls.valid.x), len(dls.test.x)) == (9, 3, 12)
    (root / "test").rename(root / "valid")
    with pytest.raises(ValueError, match="valid_pct=0.25 would ignore the validation folder .*valid"):
        image_folder(root, valid_pct=0.25)
    with pytest.raises(ValueError, match="valid_pct=1.5: give a fraction between 0 and 1"):
        image_folder(make_folder(tmp_path / "flat", splits=("",)), valid_pct=1.5)
    with pytest.raises(ValueError, match="no train/ folder.*valid_pct="):
        image_folder(tmp_path / "flat")


def test_a_wrapper_folder_gets_did_you_mean_the_folder_inside(tmp_path):
    """A folder around the dataset (data/pets/train/...) used to get the generic layout message."""
    make_folder(tmp_path / "data" / "pets")  # data/pets/train/<class>/, data/pets/test/<class>/
    inside = tmp_path / "data" / "pets"
    for valid_pct in (None, 0.2):
        with pytest.raises(ValueError, match=f"Did you mean the folder {inside}, which holds train/\\?"):
            folder_files(tmp_path / "data", None, valid_pct)
    make_folder(tmp_path / "flat" / "pets", splits=("",))  # flat/pets/<class>/
    with pytest.raises(ValueError, match=f"no train/ folder.*Did you mean the folder {tmp_path / 'flat' / 'pets'}, "
                                         f"whose folders look like classes\\?"):
        folder_files(tmp_path / "flat", None, None)
    with pytest.raises(ValueError, match="has 1 class \\(pets\\).*whose folders look like classes"):
        folder_files(tmp_path / "flat", None, 0.2)


def test_images_without_class_folders_are_told_how_classes_are_given(tmp_path):
    make_folder(tmp_path / "loose", splits=("",))
    for name in CLASSES:  # every image directly in loose/, none in a class folder
        for image in (tmp_path / "loose" / name).iterdir():
            image.rename(tmp_path / "loose" / f"{name}_{image.name}")
        (tmp_path / "loose" / name).rmdir()
    for valid_pct in (None, 0.2):
        with pytest.raises(ValueError, match="loose holds images but no class folders: the class of an image is the "
                                             "name of its folder .*in a CSV file \\(image_csv\\)"):
            folder_files(tmp_path / "loose", None, valid_pct)


def write_csv(path, rows, header=("fname", "label", "is_valid")):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_image_csv_with_a_valid_column_and_with_valid_pct(tmp_path):
    root = make_folder(tmp_path / "pets", splits=("",))
    # labels from the CSV, not from the folders: every file of the folder "dog" is labelled "2" here
    rows = [(f"{c}/{i}.png", str({"cat": 10, "dog": 2, "frog": 9}[c]), int(i == 0)) for c in CLASSES for i in range(4)]
    labels_csv = write_csv(tmp_path / "labels.csv", rows)
    dls = image_csv(labels_csv, root, fn_col="fname", label_col="label", valid_col="is_valid", device="cpu")
    assert dls.classes == ["2", "9", "10"]  # numbers in numeric order
    assert len(dls.valid.x) == 3 and len(dls.train.x) == 9
    assert torch.equal(dls.valid.x[:, 0, 0, 0], torch.tensor([0, 1, 2])) and dls.valid.y.tolist() == [2, 0, 1]
    assert torch.equal(dls.train.x[3], pixels(root / "dog" / "1.png")) and dls.train.y[3] == 0

    split = image_csv(labels_csv, root, valid_pct=0.25, device="cpu")  # columns by number
    assert len(split.valid.x) == 3 and split.classes == ["2", "9", "10"]
    as_rows = image_csv([{"fname": f, "label": c} for f, c, _ in rows], root, fn_col="fname", label_col="label",
                        valid_pct=0.25, device="cpu")  # a list of rows instead of a file
    assert torch.equal(as_rows.valid.x, split.valid.x)


@pytest.mark.parametrize("rows, kwargs, message", [
    ([("cat/0.png", "cat", 0), ("cat/9.png", "dog", 1)], {}, r"labels.csv line 3: image file .*cat/9.png does not exist"),
    ([("cat/0.png", "cat", 0), ("cat/1.png", " ", 1)], {}, r"labels.csv line 3: the label \('label'\) is empty"),
    ([("cat/0.png", "cat", 0)], {"label_col": "class"}, r"label_col='class' is not a column: the columns are \['fname'"),
    ([("cat/0.png", "cat", "maybe")], {}, r"line 2: validation flag 'maybe' is neither true"),
    ([("cat/0.png", "cat", 0), ("cat/1.png", "dog", 1)], {}, r"class 'dog' has no training rows"),
    ([("cat/0.png", "cat", 0), ("cat/1.png", "cat", 1)], {}, r"the CSV has 1 class \(cat\)"),
    ([("cat/0.png", "cat", 0), ("cat/1.png", "dog", "no")], {}, r"valid_col='is_valid' marks no row as valid"),
])
def test_image_csv_errors_name_the_row_or_column(tmp_path, rows, kwargs, message):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    labels_csv = write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        csv_files(labels_csv, root, kwargs.get("fn_col", "fname"), kwargs.get("label_col", "label"), "is_valid", None)


def test_image_csv_needs_one_way_to_validate(tmp_path):
    labels_csv = write_csv(tmp_path / "labels.csv", [("a.png", "cat", 0)])
    with pytest.raises(ValueError, match="either valid_col= .* or valid_pct=.*not neither"):
        image_csv(labels_csv)


def test_the_validation_folder_can_be_named(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "test").rename(root / "holdout")
    with pytest.raises(FileNotFoundError, match="has no valid/ or test/ folder next to train/"):
        image_folder(root)
    assert len(image_folder(root, valid="holdout", device="cpu", verbose=False).valid.x) == 12
    with pytest.raises(FileNotFoundError, match="valid='nope': .*nope is not a folder"):
        image_folder(root, valid="nope")
