"""The command line's data options: own folders and CSVs, size, split, augmentation, subsets; mistakes
exit 2 with one line before any image is decoded."""
import csv

import pytest
from images import CLASSES, data_folder, make_folder  # noqa: F401 (data_folder: an autouse fixture)

import slowlearn.data.images
from slowlearn.cli import main, parser
from slowlearn.cli.data import load_data
from slowlearn.data.augment import BatchAugment


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded images before checking the options")
    monkeypatch.setattr(slowlearn.data.images, "decode_images", refuse)


def data(*argv):
    return load_data(parser().parse_args(["train", "--bs", "4", *argv]))


def test_a_folder_of_class_folders_with_size_split_augmentation_and_subset(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", n_per_class=10, splits=("",))
    dls = data("--data", str(root), "--size", "8", "--valid-pct", "0.2", "--n-train", "12")
    assert dls.train.x.shape == (12, 3, 8, 8) and dls.valid.x.shape == (6, 3, 8, 8)
    assert isinstance(dls.train.aug, BatchAugment) and dls.train.aug.pad == 1 and dls.train.aug.flip
    assert "images per class" in capsys.readouterr().out
    assert data("--data", str(root), "--valid-pct", "0.2", "--aug", "none").train.aug is None
    flip_only = data("--data", str(root), "--valid-pct", "0.2", "--aug", "flip", "--size", "6x4").train
    assert flip_only.aug.pad == 0 and flip_only.aug.flip and flip_only.x.shape[-2:] == (6, 4)


def test_a_csv_of_labels_with_an_images_folder(tmp_path):
    root = make_folder(tmp_path / "pets", n_per_class=4, splits=("",))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "class", "valid"),
                                 *((f"{c}/{i}.png", c, int(i == 3)) for c in CLASSES for i in range(4))])
    dls = data("--data", str(tmp_path / "labels.csv"), "--images", str(root), "--valid-col", "valid")
    assert dls.classes == CLASSES and (len(dls.train.x), len(dls.valid.x)) == (9, 3)


def test_no_in_memory_leaves_the_images_in_their_files(tmp_path):
    from slowlearn import FileLoader
    root = make_folder(tmp_path / "pets", n_per_class=6, splits=("",))
    dls = data("--data", str(root), "--valid-pct", "0.25", "--no-in-memory", "--workers", "0")
    assert isinstance(dls.train, FileLoader) and dls.train.num_workers == 0 and dls.valid.num_workers == 0
    assert not isinstance(data("--data", str(root), "--valid-pct", "0.25").train, FileLoader)  # the default


def test_train_runs_on_a_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", n_per_class=6, splits=("",))
    code = main(["train", "--data", str(root), "--valid-pct", "0.25", "--size", "8", "--bs", "6", "--epochs", "1",
                 "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--data", "cifar10", "--size", "64"], "--size: cifar10 has fixed images"),
    (["--data", "fashion_mnist", "--valid-pct", "0.1"], "--valid-pct: fashion_mnist has fixed images"),
    (["--data", "{root}", "--images", "{root}"], "--images {root}: only goes with --data FILE.csv"),
    (["--data", "{root}/labels.csv", "--images", "{root}"], "--data {root}/labels.csv: no such CSV file"),
    (["--data", "{csv}"], "--data {csv}: give --valid-pct 0.2 (a random split) or --valid-col COLUMN"),
    (["--data", "{root}"], "{root} has no train/ folder: use {root}/train/<class>/ and {root}/valid/<class>/ (or "
                           "test/), or pass --valid-pct (e.g. 0.2) to split {root}/<class>/ at random"),
    (["--data", "{root}", "--valid-pct", "0.2", "--n-train", "99"], "--n-train 99: there are 10 images to choose from"),
    (["--data", "{wrapper}"], "Did you mean --data {wrapper}/pets, which holds train/?"),
    (["--data", "{wrapper}", "--valid-pct", "0.2"], "Did you mean --data {wrapper}/pets, which holds train/?"),
    (["--data", "{mixed}", "--valid-pct", "0.2"], "different sizes"),
    (["--data", "fashion_mnist", "--no-in-memory"], "--no-in-memory: fashion_mnist is held in memory"),
    (["--data", "{root}", "--valid-pct", "0.2", "--workers", "2"],
     "--workers 2: worker processes decode batches of images left in their files; add --no-in-memory"),
])
def test_mistakes_exit_2_with_one_line(tmp_path, capsys, argv, message, no_decoding, monkeypatch):
    root = make_folder(tmp_path / "pets", n_per_class=4, splits=("",))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n")
    make_folder(tmp_path / "wrapper" / "pets", n_per_class=2)  # wrapper/pets/train/<class>/...
    values = {"root": str(root), "csv": str(labels), "mixed": str(tmp_path / "mixed"),
              "wrapper": str(tmp_path / "wrapper")}
    if "{mixed}" in argv:  # found while decoding, so decoding is allowed here
        monkeypatch.undo()
        make_folder(tmp_path / "mixed", n_per_class=2, splits=("",))
        make_folder(tmp_path / "mixed" / "cat" / "big", n_per_class=1, size=16, splits=("",))
    code = main(["train", *(a.format(**values) for a in argv), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()  # a decoding progress bar may come first
    assert code == 2 and lines[-1].startswith("slowlearn: error: ") and message.format(**values) in lines[-1]
    assert len([line for line in lines if "error" in line or "Traceback" in line]) == 1
    assert "valid_pct" not in lines[-1] and "n_train" not in lines[-1]  # command-line terms, not Python's


@pytest.mark.parametrize("argv, message", [
    (["--aug", "crop,rotate"], "argument --aug: unknown augmentation rotate; give a comma-separated list of crop, flip"),
    (["--valid-pct", "1.5"], "argument --valid-pct: must be between 0 and 1"),
    (["--size", "0"], "argument --size: give a positive number of pixels"),
    (["--n-train", "0"], "argument --n-train: must be at least 1"),
    (["--workers", "-1"], "argument --workers: must be 0 or more"),
])
def test_bad_values_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
