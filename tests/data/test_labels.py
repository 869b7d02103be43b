"""Which files, labels and splits an image folder or CSV gives, and the errors before any decoding."""
import csv
import os
import shutil

import pytest
import torch
from images import CLASSES, data_folder, make_folder, pixels, save  # noqa: F401 (data_folder: an autouse fixture)

from slowlearn.data.images import image_csv, image_folder
from slowlearn.data.labels import (
    SPLIT_RULE,
    csv_files,
    folder_files,
    image_files,
    images_in,
    split_fraction,
    stable_split,
)


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


def test_valid_pct_splits_each_image_by_a_hash_of_its_path_and_the_seed(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=10, splits=("",))
    items = folder_files(root, None, 0.2)
    splits, moved = stable_split(items, 0.2, seed=0)
    assert items.keys[:2] == ["cat/0.png", "cat/1.png"] and items.key_kind == "class-folder"
    assert splits == ["valid" if split_fraction(k, 0) < 0.2 else "train" for k in items.keys]
    assert moved == {"to_train": [], "to_valid": []}
    assert 2 <= splits.count("valid") <= 12  # about 20 %: each image decides alone
    assert stable_split(items, 0.2, seed=0)[0] == splits and stable_split(items, 0.2, seed=1)[0] != splits
    dls = image_folder(root, valid_pct=0.2, device="cpu")
    assert (len(dls.train.x), len(dls.valid.x)) == (splits.count("train"), splits.count("valid"))
    assert torch.equal(dls.train.x[:, 0, 0, 0], dls.train.y) and torch.equal(dls.valid.x[:, 0, 0, 0], dls.valid.y)
    train_images = {tuple(x.flatten().tolist()) for x in dls.train.x}
    assert not any(tuple(x.flatten().tolist()) in train_images for x in dls.valid.x)  # no image in both
    assert dls.split == {"rule": SPLIT_RULE, "valid_pct": 0.2, "seed": 0, "keys": "class-folder"}


def splits_by_key(root, valid_pct, seed=0):
    items = folder_files(root, None, valid_pct)
    return dict(zip(items.keys, stable_split(items, valid_pct, seed)[0]))


@pytest.mark.parametrize("layout", ["", "train"])
def test_no_image_changes_split_when_the_folder_grows_or_shrinks(tmp_path, layout):
    """The issue's case: 80 images, valid_pct=0.25, one more image (a random split moved 17 of 20)."""
    root = make_folder(tmp_path / "pets", n_per_class=27, splits=(layout,))
    (root / layout / "frog" / "26.png").unlink()  # 80 images
    before = splits_by_key(root, 0.25)
    assert len(before) == 80 and 10 <= list(before.values()).count("valid") <= 30
    shutil.copy(root / layout / "cat" / "0.png", root / layout / "cat" / "new.png")
    after = splits_by_key(root, 0.25)
    assert len(after) == 81 and all(after[k] == s for k, s in before.items())
    (root / layout / "dog" / "3.png").unlink()
    (root / layout / "frog" / "extra").mkdir()
    shutil.copy(root / layout / "cat" / "1.png", root / layout / "frog" / "extra" / "a.png")
    shrunk = splits_by_key(root, 0.25)
    assert all(shrunk[k] == s for k, s in before.items() if k in shrunk) and "frog/extra/a.png" in shrunk
    if layout:  # root/<class>/ and root/train/<class>/ split alike: the keys are paths under the class folders
        flat = make_folder(tmp_path / "flat", n_per_class=27, splits=("",))
        (flat / "frog" / "26.png").unlink()
        assert splits_by_key(flat, 0.25) == before


def test_a_grown_folder_validates_on_no_image_the_first_model_trained_on(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=8, splits=("",))
    first = image_folder(root, valid_pct=0.25, device="cpu", verbose=False)
    for label, name in enumerate(CLASSES):
        for i in range(3):
            image = torch.full((3, 12, 12), 100 + 10 * label + i, dtype=torch.uint8)
            image[:, 0, 0] = label
            save(image, root / name / f"more{i}.png")
    grown = image_folder(root, valid_pct=0.25, device="cpu", verbose=False)
    trained_on = {tuple(x.flatten().tolist()) for x in first.train.x}
    assert not any(tuple(x.flatten().tolist()) in trained_on for x in grown.valid.x)
    validated_on = {tuple(x.flatten().tolist()) for x in first.valid.x}
    assert validated_on <= {tuple(x.flatten().tolist()) for x in grown.valid.x}


def test_tiny_sets_keep_a_training_image_per_class_and_one_validation_image(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    items = folder_files(root, None, 0.01)
    splits, moved = stable_split(items, 0.01, seed=0)  # 1 % of 6 images: none by the hash
    assert splits.count("valid") == 1 and moved["to_valid"] == [items.keys[splits.index("valid")]]
    dls = image_folder(root, valid_pct=0.01, device="cpu", verbose=False)
    assert dls.split["moved_to_valid"] == moved["to_valid"] and len(dls.valid.x) == 1
    with pytest.warns(UserWarning, match=r"valid_pct=0.99 put every training image of 3 classes in validation \('cat' "
                                         r"\(2\), 'dog' \(2\), 'frog' \(2\)\); one of each is kept for training "
                                         r"\(cat/\d.png, dog/\d.png, frog/\d.png\)"):
        splits, moved = stable_split(items, 0.99, seed=0)
    assert len(moved["to_train"]) == 3 and [s for s in splits].count("train") == 3
    assert {items.labels[i] for i, s in enumerate(splits) if s == "train"} == {0, 1, 2}
    for name in CLASSES:
        (root / name / "1.png").unlink()
    with pytest.raises(ValueError, match=r"valid_pct=0.01 leaves no validation images \(3 images, one per class"):
        image_folder(root, valid_pct=0.01)


def test_a_flat_layouts_test_folder_is_the_test_split_not_a_class(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("", "test"))
    items = folder_files(root, None, 0.5)
    assert items.classes == CLASSES
    assert sum(s == "test" for s in items.splits) == 6 and sum(s == "train" for s in items.splits) == 6
    make_folder(root / "valid", n_per_class=1, splits=("",))
    with pytest.raises(ValueError, match="valid_pct=0.5 would ignore the validation folder .*valid"):
        folder_files(root, None, 0.5)


@pytest.mark.parametrize("layout", [("Train", "Test"), ("", "validation"), ("", "Val")])
def test_folders_named_like_splits_in_another_case_are_an_error_not_classes(tmp_path, layout):
    """Kaggle's Train/ and Test/, or validation/ beside the class folders, were classes of a valid_pct split."""
    root = tmp_path / "pets"
    for split in layout:
        make_folder(root, n_per_class=2, splits=(split,))
    odd = sorted(name for name in layout if name)
    with pytest.raises(ValueError, match=rf"{'/, '.join(odd)}/ (are|is) named like (a split|splits).* only train/, valid/ and "
                                         rf"test/ are read as split folders"):
        folder_files(root, None, 0.5)
    if "Train" in layout:
        with pytest.raises(ValueError, match=r"image_folder\('.*/Train', valid_pct=0.2\).*rename Train/ to train/ and "
                                             r"pass valid='Test'"):
            folder_files(root, None, None)
    else:
        with pytest.raises(ValueError, match=rf"put the class folders of the training images in .*train/ and pass "
                                             rf"valid='{layout[1]}'"):
            folder_files(root, None, None)


def test_a_val_folder_next_to_train_is_named_in_the_error_and_never_ignored(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("train", "val"))
    with pytest.raises(FileNotFoundError, match=r"no valid/ or test/ folder next to train/.* If val/ holds the "
                                                r"validation images, pass valid='val'"):
        folder_files(root, None, None)
    with pytest.raises(ValueError, match=r"valid_pct=0.5 would ignore the validation folder .*val: .*valid='val'"):
        folder_files(root, None, 0.5)
    assert folder_files(root, "val", None).splits.count("valid") == 6


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
    assert len(dls.train.x) + len(dls.valid.x) == 12 and len(dls.valid.x) and len(dls.test.x) == 12
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
    in_valid = sum(split_fraction(name, 0) < 0.25 for name, _, _ in rows)  # keyed by the file names in the CSV
    assert len(split.valid.x) == in_valid and split.classes == ["2", "9", "10"]
    assert split.split["keys"] == "csv"
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


def test_a_missing_label_from_pandas_is_empty_not_a_class_nan(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    rows = [{"fname": "cat/0.png", "label": "cat", "is_valid": 0}, {"fname": "dog/0.png", "label": "dog", "is_valid": 1},
            {"fname": "dog/1.png", "label": "dog", "is_valid": 0},
            {"fname": "cat/1.png", "label": float("nan"), "is_valid": float("nan")}]
    with pytest.raises(ValueError, match=r"row 3: the label \('label'\) is empty"):
        csv_files(rows, root, "fname", "label", "is_valid", None)
    rows[3]["label"] = "cat"  # an empty validation flag (NaN) is false, as a blank cell is
    assert csv_files(rows, root, "fname", "label", "is_valid", None).splits == ["train", "valid", "train", "train"]


def test_whole_floats_from_pandas_are_the_csv_files_integers(tmp_path):
    # a pandas column of numbers that had a missing cell is a float column: 2.0 is the class "2", 1.0 is true
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    rows = [("cat/0.png", 2, 0), ("dog/0.png", 10, 0), ("cat/1.png", 9, 0), ("dog/1.png", 2, 1)]
    from_file = csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)
    floats = [{"fname": f, "label": float(label), "is_valid": float(flag)} for f, label, flag in rows]
    from_floats = csv_files(floats, root, "fname", "label", "is_valid", None)
    assert from_floats.classes == from_file.classes == ["2", "9", "10"]
    assert (from_floats.labels, from_floats.splits) == (from_file.labels, from_file.splits)
    floats[2]["label"] = 2.5  # a fraction stays as written
    assert csv_files(floats, root, "fname", "label", "is_valid", None).classes == ["10", "2", "2.5"]


def test_image_csv_takes_a_dataframe_and_refuses_a_list_of_file_names(tmp_path):
    pd = pytest.importorskip("pandas")
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    rows = [("cat/0.png", "cat", 0), ("dog/0.png", "dog", 1), ("cat/1.png", "cat", 0), ("dog/1.png", "dog", 0)]
    from_file = csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)
    frame = pd.DataFrame(rows, columns=["fname", "label", "is_valid"])
    assert csv_files(frame, root, "fname", "label", "is_valid", None) == from_file
    assert csv_files(frame, root, 0, 1, 2, None) == from_file
    frame.loc[1, "label"] = pd.NA
    with pytest.raises(ValueError, match=r"row 1: the label \('label'\) is empty"):
        csv_files(frame, root, "fname", "label", "is_valid", None)
    with pytest.raises(TypeError, match=r"row 0 is the string 'cat/0.png', not a row: .* a pandas DataFrame, or a "
                                        r"list of rows"):
        image_csv(["cat/0.png", "dog/0.png"], root, valid_pct=0.5)


def test_blank_lines_in_a_csv_are_skipped_as_pandas_skips_them(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    rows = [("cat/0.png", "cat", 0), (), ("dog/0.png", "dog", 1), ("dog/1.png", "dog", 0), (), ()]
    items = csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)
    assert [os.path.relpath(f, root) for f in items.files] == ["cat/0.png", "dog/0.png", "dog/1.png"]
    rows.append(("cat/9.png", "cat", 0))  # errors still name the line as an editor counts it
    with pytest.raises(FileNotFoundError, match=r"labels.csv line 8: image file .*cat/9.png does not exist"):
        csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)


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


def test_a_symlink_loop_or_a_second_link_lists_each_image_once(tmp_path):
    """The issue's case: `cat/up -> ..` turned 12 images into 492."""
    root = make_folder(tmp_path / "pets", n_per_class=4, splits=("",))
    os.symlink("..", root / "cat" / "up")  # a loop
    os.symlink(root / "dog", root / "frog" / "dogs")  # a second way into dog's images, from frog's folder
    os.symlink(root / "dog" / "0.png", root / "cat" / "a-link.png")  # a second name of dog/0.png, sorted first
    outside = make_folder(tmp_path / "outside", n_per_class=1, splits=("",))
    os.symlink(outside / "cat", root / "cat" / "more")  # a link to images found nowhere else: followed
    with pytest.warns(UserWarning, match=r"3 symbolic links or repeated files \(e.g. cat/up -> \.\.\)"
                                         r".*each image is listed once"):
        items = folder_files(root, None, 0.25)
    assert len(items.files) == 13 and len(set(items.files)) == 13
    assert [CLASSES[c] for f, c in zip(items.files, items.labels) if "dog" in f] == ["dog"] * 4  # real class folder
    with pytest.warns(UserWarning, match="symbolic link"):
        assert [str(f) for f in image_files(root)] == images_in(root)
        assert sorted(images_in(root)) == sorted(items.files)
    with pytest.warns(UserWarning, match="symbolic link"):
        dls = image_folder(root, valid_pct=0.25, device="cpu", verbose=False)
    assert len(dls.train.x) + len(dls.valid.x) == 13


@pytest.mark.parametrize("link", [os.symlink, os.link])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_an_image_linked_into_training_and_another_split_is_an_error(tmp_path, link, split):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("train", "valid", "test"))
    link(root / "train" / "dog" / "1.png", root / split / "cat" / "linked.png")
    use = "validation" if split == "valid" else "testing"
    with pytest.raises(ValueError, match=rf"{split}/cat/linked.png is the training image .*train/dog/1.png \(a link "
                                         rf"to the same file\), so it is listed both for training and for {use}"):
        folder_files(root, None, None)


def test_images_lying_beside_the_class_folders_are_named_not_dropped_silently(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=3, splits=("",))
    for name in ("stray.png", "z.jpg"):
        shutil.copy(root / "cat" / "0.png", root / name)
    with pytest.warns(UserWarning, match=r"2 images directly in .*pets \(e.g. .*pets/stray.png\), beside its class "
                                         r"folders: they have no class, so 2 are left out; move each into its class"):
        items = folder_files(root, None, 0.25)
    assert len(items.files) == 9
    layered = make_folder(tmp_path / "layered", n_per_class=2)
    shutil.copy(layered / "train" / "cat" / "0.png", layered / "train" / "lost.png")
    with pytest.warns(UserWarning, match=r"1 image directly in .*layered/train \(e.g. .*lost.png\).*it has no class"):
        folder_files(layered, None, None)


@pytest.mark.parametrize("names, message", [
    (["1", "01", "2"], r"the classes '01' and '1' differ only by leading zeros or spaces"),
    (["7", "7.0", "8"], r"the classes '7' and '7.0' differ only by leading zeros or spaces"),
    (["cat", "cat ", "dog"], r"the classes 'cat' and 'cat ' differ only by leading zeros or spaces"),
])
def test_class_folders_that_name_one_label_two_ways_are_refused(tmp_path, names, message):
    root = tmp_path / "digits"
    for name in names:
        make_folder(tmp_path / "one", n_per_class=1, splits=("",))
        shutil.move(tmp_path / "one" / "cat", root / name)
        shutil.rmtree(tmp_path / "one")
    with pytest.raises(ValueError, match=f"class folders of .*digits: {message}.*rename or merge the folders"):
        image_folder(root, valid_pct=0.5)


def test_labels_differing_by_case_are_a_warning_and_in_a_csv_by_zeros_an_error(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    shutil.copytree(root / "cat", root / "Cat")
    with pytest.warns(UserWarning, match=r"the classes 'Cat' and 'cat' differ only by case, so they are two classes"):
        assert folder_files(root, None, 0.5).classes == ["Cat", "cat", "dog", "frog"]
    rows = [("dog/0.png", "1", 0), ("dog/1.png", "01", 0), ("frog/0.png", "2", 1)]
    with pytest.raises(ValueError, match=r"the labels \('label'\): the classes '01' and '1' differ only by leading "
                                         r"zeros.*write each class one way"):
        csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)


@pytest.mark.parametrize("rows, message", [
    ([("cat/0.png", "cat", 0), ("dog/0.png", "dog", 1), ("cat/0.png", "dog", 0)],
     r"labels.csv line 2 and 4 list the image .*cat/0.png under two labels, 'cat' and 'dog'"),
    ([("cat/0.png", "cat", 0), ("dog/0.png", "dog", 0), ("dog/1.png", "dog", 1), ("cat/0.png", "cat", 1)],
     r"labels.csv line 2 and 5 list the image .*cat/0.png both for training and for validation"),
    ([("cat/0.png", "cat", 0), ("dog/0.png", "dog", 1), ("./cat/../cat/0.png", "cat", 0)],
     r"line 2 and 4 list the image .*cat/0.png twice"),
    ([("cat/0.png", "cat", 0), ("dog/0.png", "dog", 1), ("cat/link.png", "cat", 0)],
     r"line 2 and 4 list the image .*cat/0.png \(also listed as .*cat/link.png\) twice"),
])
def test_a_csv_listing_one_image_twice_is_refused_naming_the_rows(tmp_path, rows, message):
    root = make_folder(tmp_path / "pets", n_per_class=2, splits=("",))
    os.symlink(root / "cat" / "0.png", root / "cat" / "link.png")
    with pytest.raises(ValueError, match=message):
        csv_files(write_csv(tmp_path / "labels.csv", rows), root, "fname", "label", "is_valid", None)
    as_list = [{"fname": f, "label": c} for f, c, _ in rows]
    with pytest.raises(ValueError, match=r"rows? \d and \d list the image"):
        image_csv(as_list, root, fn_col="fname", label_col="label", valid_pct=0.5)
