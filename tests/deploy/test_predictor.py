import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slowlearn import DataLoaders, Learner, TensorLoader, image_folder, load_learner
from slowlearn.data.preprocess import resize_image

CLASSES = ["ant", "bee", "cat"]
# Run in a new process whose path has neither this file nor the training data: only the export and PNG files.
PREDICT_ELSEWHERE = textwrap.dedent("""
    import importlib.util, sys, torch
    from slowlearn import load_learner
    assert importlib.util.find_spec("test_predictor") is None  # the model's class cannot be imported here
    result = load_learner(sys.argv[1], device="cpu").get_preds(sys.argv[2])
    torch.save({"files": [str(f) for f in result.files], "preds": result.preds, "targets": result.targets},
               sys.argv[3])
""")


class TinyNet(nn.Module):
    """Defined here only: the process that loads the export never sees this class."""

    def __init__(self, channels, size):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * ((size + 1) // 2) ** 2, len(CLASSES))

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def save_png(image: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy()).save(path)
    return path


def learner(x_train, y_train, x_valid, y_valid, resize=None) -> Learner:
    channels = x_train.shape[1]
    stats = dict(mean=[0.4] * channels, std=[0.3] * channels, device="cpu")
    dls = DataLoaders(TensorLoader(x_train, y_train, 16, shuffle=True, seed=0, **stats),
                      TensorLoader(x_valid, y_valid, 32, **stats), classes=CLASSES, resize=resize)
    torch.manual_seed(0)
    return Learner(TinyNet(channels, x_train.shape[-1]), dls, lr=0.05).fit(1)


def predict_in_new_process(model: Path, images: Path, tmp_path: Path) -> dict:
    script = tmp_path / "predict_elsewhere.py"
    script.write_text(PREDICT_ELSEWHERE)
    result = subprocess.run([sys.executable, str(script), str(model), str(images), str(tmp_path / "out.pt")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return torch.load(tmp_path / "out.pt", weights_only=True)


def assert_same_predictions(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_new_process_predicts_64_png_files_as_the_learner(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (192, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (192,), generator=g)
    x[y == 1, :, :14] //= 4  # something to learn
    learn = learner(x[:128], y[:128], x[128:], y[128:])
    model = learn.export(tmp_path / "model.pt2")
    files = [save_png(image, tmp_path / "pngs" / CLASSES[label] / f"{i:03d}.png")
             for i, (image, label) in enumerate(zip(x[128:], y[128:].tolist()))]
    expected = learn.get_preds().preds
    order = sorted(range(64), key=lambda i: files[i])  # the predictor lists a folder's files sorted
    result = predict_in_new_process(model, tmp_path / "pngs", tmp_path)
    assert result["files"] == [str(files[i]) for i in order]
    assert_same_predictions(result["preds"], expected[order])
    assert result["targets"].tolist() == y[128:][order].tolist()  # true classes from the folder names


def test_new_process_on_rgb_images_of_mixed_sizes_resized_as_in_training(tmp_path):
    g = torch.Generator().manual_seed(1)
    sizes = [(10, 14), (16, 12), (12, 12), (9, 20)]
    files, labels = [], []
    for i in range(48):
        h, w = sizes[i % 4]
        label = i % 3
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        image[label] = image[label] // 2 + 128  # a colour per class
        files.append(save_png(image, tmp_path / "images" / CLASSES[label] / f"{i:02d}.png"))
        labels.append(label)
    files, labels = zip(*sorted(zip(files, labels)))
    resize = {"method": "crop", "interpolation": "bilinear"}
    decoded = [np.asarray(resize_image(Image.open(f).convert("RGB"), (8, 8), **resize)) for f in files]
    x = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels)
    learn = learner(x, y, x, y, resize=resize)
    result = predict_in_new_process(learn.export(tmp_path / "model.pt2"), tmp_path / "images", tmp_path)
    assert result["files"] == [str(f) for f in files]
    assert_same_predictions(result["preds"], learn.get_preds().preds)


def test_image_folder_with_size_exports_its_resize_rule_and_predicts_other_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "data"))
    g = torch.Generator().manual_seed(2)
    for i in range(12):
        save_png(torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=g),
                 tmp_path / "images" / CLASSES[i % 3] / f"{i}.png")
    dls = image_folder(tmp_path / "images", size=8, valid_pct=0.25, bs=4, device="cpu", verbose=False)
    torch.manual_seed(0)
    learn = Learner(TinyNet(3, 8), dls, lr=0.05).fit(1)
    other_size = save_png(torch.randint(0, 256, (3, 20, 10), dtype=torch.uint8, generator=g), tmp_path / "other.png")
    expected = learn.predict(other_size).probs  # resized as the training images were, not refused
    predictor = load_learner(learn.export(tmp_path / "model.pt2"), device="cpu")
    assert predictor.preprocessing.resize == {"method": "crop", "interpolation": "bilinear"}
    torch.testing.assert_close(predictor.predict(other_size).probs, expected, atol=1e-5, rtol=0)


def test_an_export_records_its_split_and_tells_which_images_it_trained_on(tmp_path, monkeypatch):
    """Issue 23, rule 6: evaluating on the folder a model was trained on with valid_pct counted the images it
    trained on. The export records the split, and get_preds(held_out=True) leaves them out."""
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "data"))
    g = torch.Generator().manual_seed(3)
    for i in range(24):
        save_png(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=g),
                 tmp_path / "images" / CLASSES[i % 3] / ("nested" if i == 5 else "") / f"{i}.png")
    dls = image_folder(tmp_path / "images", valid_pct=0.25, seed=7, bs=4, device="cpu", verbose=False)
    torch.manual_seed(0)
    learn = Learner(TinyNet(3, 8), dls, lr=0.05).fit(1)
    predictor = load_learner(learn.export(tmp_path / "model.pt2"), device="cpu")
    assert predictor.metadata["split"] == dls.split and dls.split["seed"] == 7 and dls.split["valid_pct"] == 0.25
    every = predictor.get_preds(tmp_path / "images")
    held_out = predictor.get_preds(tmp_path / "images", held_out=True)
    assert len(every.files) == 24 and 0 < len(held_out.files) < 24

    def pixels(files):
        return sorted(tuple(np.array(Image.open(f)).transpose(2, 0, 1).flatten().tolist()) for f in files)
    assert pixels(held_out.files) == sorted(tuple(x.flatten().tolist()) for x in dls.valid.x)  # exactly validation's
    assert sum(predictor.trained_on(f, tmp_path / "images") for f in every.files) == len(dls.train.x)
    unsplit = load_learner(learn.export(tmp_path / "m2.pt2"), device="cpu")
    unsplit.metadata["split"] = None  # as for data that came split into folders: nothing is left out
    assert len(unsplit.get_preds(tmp_path / "images", held_out=True).files) == 24


@pytest.fixture(scope="module")
def predictor_and_learner(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    learn = learner(x[:32], y[:32], x[32:], y[32:])
    return load_learner(learn.export(tmp_path_factory.mktemp("m") / "model.pt2"), device="cpu"), learn


def test_predict_batch_takes_any_mix_of_items(predictor_and_learner, tmp_path):
    predictor, learn = predictor_and_learner
    x = learn.dls.valid.x
    path = save_png(x[1], tmp_path / "one.png")
    result = predictor.predict_batch([x[0], path, Image.open(path), x[2].float() / 255, x[3][0].numpy()])
    expected = learn.get_preds().preds
    torch.testing.assert_close(result.probs, expected[[0, 1, 1, 2, 3]], atol=1e-5, rtol=0)
    assert result.name == [CLASSES[i] for i in result.index.tolist()]
    assert predictor.predict_batch([]).probs.shape == (0, 3)
    assert "TinyNet" in repr(predictor) and "1x12x12" in repr(predictor)


def test_get_preds_on_files_and_its_errors(predictor_and_learner, tmp_path):
    predictor, learn = predictor_and_learner
    files = [save_png(learn.dls.valid.x[i], tmp_path / name / f"{i}.png") for i, name in enumerate(["bee", "other"])]
    result = predictor.get_preds(files)
    assert result.files == files and result.targets.tolist() == [1, -1] and result.preds.shape == (2, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files in .*empty"):
        predictor.get_preds(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="No such image file: .*missing.png"):
        predictor.get_preds([files[0], tmp_path / "missing.png"])
    nested = save_png(learn.dls.valid.x[2], tmp_path / "folder" / "cat" / "closeups" / "2.png")
    (tmp_path / "folder" / "cat" / "._2.png").write_bytes(b"macOS metadata, not a png")  # hidden: not an image
    in_folder = predictor.get_preds(tmp_path / "folder")
    assert in_folder.files == [nested] and in_folder.targets.tolist() == [2]  # by its class folder, as in training
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read image file .*broken.png"):
        predictor.predict(tmp_path / "broken.png")


def test_a_dataset_roots_images_are_labelled_by_their_class_folders(tmp_path):
    from slowlearn.data.labels import class_of_file as _class_folder
    root = tmp_path / "data"
    classes = {"cat": 0, "dog": 1}
    assert _class_folder(root / "train" / "dog" / "1.png", root, classes) == "dog"  # train/ is no class
    assert _class_folder(root / "cat" / "indoor" / "2.png", root, classes) == "cat"  # nested in a class folder
