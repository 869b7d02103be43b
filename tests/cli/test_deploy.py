"""`slowlearn export / predict / evaluate` (cli_model.py), run in this process through `cli.main` (the
subprocess tests of `train` are in test_integration.py and test_image_data.py)."""
import csv
import shutil

import pytest
import torch
from images import CLASSES, make_folder

from slowlearn import Learner, load_learner, seed_cnn
from slowlearn.cli import main
from slowlearn.data.images import image_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A folder of images, and a run trained on it as `slowlearn train --data FOLDER` would (checkpoint)."""
    tmp = tmp_path_factory.mktemp("cli")
    root = make_folder(tmp / "pets", n_per_class=4)
    torch.manual_seed(0)
    learn = Learner(seed_cnn(in_channels=3, n_classes=3), image_folder(root, bs=8, device="cpu"), lr=0.05).fit(1)
    learn.save(tmp / "run" / "checkpoint.pt")
    learn.export(tmp / "model.pt2")
    return root, tmp, learn


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_from_a_run_folder_predicts_as_the_learner(run, capsys):
    root, tmp, learn = run
    code, out, err = cli(capsys, "export", tmp / "run", "--data", root)
    assert code == 0 and out.strip().splitlines()[-1] == f"Wrote {tmp / 'run' / 'model.pt2'}", err  # after the data table
    predictor = load_learner(tmp / "run" / "model.pt2", device="cpu")
    torch.testing.assert_close(predictor.predict_batch(learn.dls.valid.x).probs, learn.get_preds().preds,
                               atol=1e-5, rtol=0)
    assert predictor.classes == CLASSES


def test_export_keeps_an_existing_file_unless_forced_and_uses_the_runs_recorded_preprocessing(run, capsys, tmp_path):
    root, tmp, learn = run
    out = tmp_path / "model.pt2"
    out.write_bytes(b"a good export")
    code, _, err = cli(capsys, "export", tmp / "run", "--data", root, "--out", out)
    assert code == 2 and "already exists" in err and "--force" in err and out.read_bytes() == b"a good export"
    # other data options: a training subset has other statistics, but the export has the run's normalisation
    code, _, err = cli(capsys, "export", tmp / "run", "--data", root, "--n-train", "4", "--out", out, "--force")
    assert code == 0, err
    recorded = load_learner(out, device="cpu").preprocessing
    assert recorded.mean == pytest.approx(learn.dls.valid.mean)
    assert recorded.std == pytest.approx(learn.dls.valid.std)
    code, _, err = cli(capsys, "export", tmp / "run", "--data", root, "--size", "10", "--out", out, "--force")
    assert code == 2 and "was trained on 3x12x12 images" in err and "these data options give 3x10x10" in err


def test_predict_prints_top_classes_per_image_and_writes_csv(run, capsys, tmp_path):
    root, tmp, _ = run
    csv_file = tmp_path / "p.csv"
    code, out, err = cli(capsys, "predict", tmp / "model.pt2", root / "test", "--top-k", "2", "--csv", csv_file)
    assert code == 0, err
    result = load_learner(tmp / "model.pt2", device="cpu").get_preds(root / "test")
    lines = out.strip().splitlines()
    assert len(lines) == len(result.files) == 12
    for line, file, probs in zip(lines, result.files, result.preds):
        name, top = line.split("\t")
        best = probs.topk(2)
        assert name == str(file) and top == "  ".join(f"{CLASSES[i]} {p:.4f}" for i, p in
                                                      zip(best.indices.tolist(), best.values.tolist()))
    rows = list(csv.reader(open(csv_file)))
    assert rows[0] == ["file", "class_1", "prob_1", "class_2", "prob_2"]
    assert [r[0] for r in rows[1:]] == [str(f) for f in result.files]
    assert [r[1:] for r in rows[1:]] == [line.split("\t")[1].split() for line in lines]


def test_evaluate_prints_loss_and_accuracy_and_saves_the_confusion_matrix(run, capsys, tmp_path):
    root, tmp, _ = run
    code, out, err = cli(capsys, "evaluate", tmp / "model.pt2", "--data", root, "--out", tmp_path)
    assert code == 0, err
    result = load_learner(tmp / "model.pt2", device="cpu").get_preds(root / "test")
    loss = torch.nn.functional.nll_loss(result.preds.log(), result.targets).item()
    accuracy = (result.preds.argmax(-1) == result.targets).float().mean().item()
    assert out.strip() == (f"12 images in {root / 'test'}: loss {loss:.4f}, accuracy {accuracy:.4f}. "
                           f"Confusion matrix: {tmp_path / 'confusion_matrix.png'}")
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000


def test_evaluate_on_the_folder_a_model_split_with_valid_pct_leaves_out_its_training_images(capsys, tmp_path,
                                                                                           monkeypatch):
    """Issue 23, rule 6: evaluate reported accuracy over images 75 % of which the model trained on, without a word."""
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "data"))
    root = make_folder(tmp_path / "pets", n_per_class=8, splits=("",))
    dls = image_folder(root, valid_pct=0.25, bs=8, device="cpu", verbose=False)
    torch.manual_seed(0)
    Learner(seed_cnn(in_channels=3, n_classes=3), dls, lr=0.05).fit(1).export(tmp_path / "model.pt2")
    n_valid, n_train = len(dls.valid.x), len(dls.train.x)
    code, out, err = cli(capsys, "evaluate", tmp_path / "model.pt2", "--data", root, "--out", tmp_path / "eval")
    assert code == 0, err
    assert out.startswith(f"{n_valid} images in {root}: loss ")
    assert (f"Note: the model was trained with --valid-pct 0.25 (seed 0); {n_train} of the 24 images are ones that "
            f"split put in training, so they were left out (pass --include-training") in out
    code, out, err = cli(capsys, "evaluate", tmp_path / "model.pt2", "--data", root, "--out", tmp_path / "eval",
                         "--include-training")
    assert code == 0 and out.startswith(f"24 images in {root}: loss ")
    assert f"if {root} is the folder it trained on, it trained on {n_train} of these 24 images" in out


def test_evaluate_names_the_folders_it_skips_as_none_of_the_models_classes(run, capsys, tmp_path):
    """Images in an owl/ folder of a cat/dog/... model were 'images outside class folders skipped', which they were
    not: the folder is a class, just none of the model's."""
    root, tmp, _ = run
    shutil.copytree(root / "test", tmp_path / "data")
    shutil.copytree(root / "test" / CLASSES[0], tmp_path / "data" / "owl")
    code, out, err = cli(capsys, "evaluate", tmp / "model.pt2", "--data", tmp_path / "data", "--out", tmp_path)
    assert code == 0, err
    assert out.startswith(f"12 images in {tmp_path / 'data'} (4 images skipped: their folders (owl) name none of "
                          f"the model's classes): loss ")


def test_user_mistakes_exit_2_with_one_line(run, capsys, tmp_path):
    root, tmp, _ = run
    (tmp_path / "notes.pt2").write_text("not a model")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "unlabelled" / "misc").mkdir(parents=True)
    (tmp_path / "unlabelled" / "misc" / "0.png").write_bytes((root / "test" / CLASSES[0] / "0.png").read_bytes())
    cases = [
        (["predict", tmp_path / "none.pt2", root], "none.pt2: no such model file"),
        (["predict", tmp_path / "notes.pt2", root], "notes.pt2 is not a slowlearn export"),
        (["predict", tmp / "model.pt2", tmp_path / "broken.png"], "Cannot read image file"),
        (["predict", tmp / "model.pt2", tmp_path / "missing.png"], "No such image file: "),
        (["predict", tmp / "model.pt2", tmp_path / "empty"], "No image files in"),
        (["evaluate", tmp / "model.pt2", "--data", tmp_path / "unlabelled"], "no image is in a folder named after"),
        (["predict", tmp_path / "none.pt2", root, "--csv", tmp_path], f"--csv {tmp_path}: that is a folder"),
        (["predict", tmp / "model.pt2", root, "--csv", tmp_path / "notes.pt2" / "p.csv"],
         "cannot write into its folder"),
        (["evaluate", tmp_path / "none.pt2", "--data", root, "--out", tmp_path / "notes.pt2"], "that is a file"),
        (["export", tmp_path, "--data", root], "no checkpoint here"),
        (["export", tmp / "run", "--data", root, "--model", "resnet", "--out", tmp_path / "r.pt2"],
         "export rebuilt --model resnet for --data"),
    ]
    for args, message in cases:
        code, out, err = cli(capsys, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("slowlearn: error: ")


def test_export_writes_the_format_that_out_names_and_refuses_a_contradicting_format(run, capsys, tmp_path):
    """`--out model.onnx` used to get a torch.export zip: --format defaulted to pt2 whatever the name."""
    onnx = pytest.importorskip("onnx")
    root, tmp, _ = run
    code, _, err = cli(capsys, "export", tmp / "run", "--data", root, "--out", tmp_path / "model.onnx")
    assert code == 0, err
    assert onnx.load(str(tmp_path / "model.onnx")).graph.output[0].name == "logits"
    code, _, err = cli(capsys, "export", tmp / "run", "--data", root, "--format", "pt2", "--out", tmp_path / "m.onnx")
    assert code == 2 and not (tmp_path / "m.onnx").exists()
    assert (f"--format pt2 with --out {tmp_path / 'm.onnx'}: a .onnx file would pass for onnx while it holds pt2; "
            f"pass --out {tmp_path / 'm.pt2'}, or drop --format to write onnx") in err


def test_export_of_a_run_trained_with_another_optimizer_than_the_learners_default(capsys, tmp_path):
    """`slowlearn train` trains with AdamW; export rebuilds a Learner whose optimizer it never uses."""
    root = make_folder(tmp_path / "pets", n_per_class=4)
    torch.manual_seed(0)
    learn = Learner(seed_cnn(in_channels=3, n_classes=3), image_folder(root, bs=8, device="cpu"), lr=1e-3,
                    opt_func=torch.optim.AdamW).fit(1)
    learn.save(tmp_path / "run" / "checkpoint.pt")
    code, out, err = cli(capsys, "export", tmp_path / "run", "--data", root)
    assert code == 0, err
    predictor = load_learner(tmp_path / "run" / "model.pt2", device="cpu")
    torch.testing.assert_close(predictor.predict_batch(learn.dls.valid.x).probs, learn.get_preds().preds,
                               atol=1e-5, rtol=0)
