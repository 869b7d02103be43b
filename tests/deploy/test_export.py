import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from data.test_preprocess import image_learner
from torch import nn
from torcheval.metrics import MulticlassAccuracy

from slowlearn import ExportError, Learner, MetricsCB, Preprocessing, load_learner
from slowlearn.deploy.export import FORMAT, VERSION


class Net(nn.Module):
    """A model class the loading side never sees: BatchNorm and dropout behave differently in eval mode,
    and the reshapes put arithmetic on the symbolic batch size into the program."""

    def __init__(self, channels=1, size=6):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(4 * size * size, 3)

    def forward(self, x):
        h = self.body(x)
        n = h.shape[0]
        return self.head(h.reshape(2 * n, -1).reshape(n, -1)) * 2


def trained(channels=1):
    learn = image_learner(channels)
    torch.manual_seed(0)
    learn.model = Net(channels)
    return learn.add_cb(MetricsCB(accuracy=MulticlassAccuracy())).fit(1)


@pytest.fixture(scope="module")
def export_file(tmp_path_factory):
    learn = trained()
    return learn, learn.export(tmp_path_factory.mktemp("export") / "model.pt2")


def test_export_holds_the_program_weights_preprocessing_classes_and_metadata(export_file):
    learn, path = export_file
    names = [n.split("/", 1)[1] for n in zipfile.ZipFile(path).namelist()]
    assert "models/model.json" in names and "extra/slowlearn.json" in names and "data/weights/weight_0" in names
    meta = json.loads(zipfile.ZipFile(path).read("archive/extra/slowlearn.json"))
    assert meta["format"] == FORMAT and meta["version"] == VERSION and meta["classes"] == ["a", "b", "c"]
    prep = meta["preprocessing"]
    assert prep["channels"] == 1 and prep["size"] == [6, 6] and prep["mean"] == [0.5] and prep["std"] == [0.25]
    assert prep["scale"] == pytest.approx(1 / 255) and prep["resize"] is None
    assert meta["activation"] == "softmax"  # cross-entropy: probabilities over the classes
    info = meta["metadata"]
    assert info["torch"] == torch.__version__ and info["model"] == "Net" and info["date"].startswith("20")
    assert info["metrics"]["loss"] == pytest.approx(learn.history[-1]["loss"])


def test_loaded_model_predicts_as_the_learner_in_eval_mode_for_any_batch_size(export_file):
    learn, path = export_file
    learn.model.train()
    predictor = load_learner(path, device="cpu")
    expected = learn.get_preds().preds
    for n in (1, 3, 8):
        result = predictor.predict_batch(learn.dls.valid.x[:n])
        torch.testing.assert_close(result.probs, expected[:n], atol=1e-5, rtol=0)
        assert result.index.tolist() == expected[:n].argmax(-1).tolist()
    assert learn.model.training  # export leaves the learner's model as it was
    one = predictor.predict(learn.dls.valid.x[0])
    assert one.index == int(expected[0].argmax()) and one.name == predictor.classes[one.index]


def test_a_multi_label_export_predicts_the_sigmoids_that_learn_predict_gives(tmp_path):
    """The Predictor put every export's outputs through a softmax: a model trained with binary cross-entropy on
    logits (one label per class) got probabilities that sum to 1 over its labels, unlike learn.predict's."""
    learn = trained()
    learn.loss_func = nn.BCEWithLogitsLoss()
    predictor = load_learner(learn.export(tmp_path / "model.pt2"), device="cpu")
    expected = learn.get_preds().preds
    assert predictor.activation == "sigmoid" and json.loads(zipfile.ZipFile(tmp_path / "model.pt2").read(
        "archive/extra/slowlearn.json"))["activation"] == "sigmoid"
    torch.testing.assert_close(predictor.predict_batch(learn.dls.valid.x[:4]).probs, expected[:4], atol=1e-5, rtol=0)


def test_export_refuses_data_it_cannot_describe(tmp_path):
    from conftest import make_dls
    learn = Learner(nn.Linear(3, 2), make_dls())
    with pytest.raises(ValueError, match="pass preprocessing=Preprocessing"):
        learn.export(tmp_path / "m.pt2")
    with pytest.raises(ValueError, match="format='tflite'"):
        trained().export(tmp_path / "m.pt2", format="tflite")


@pytest.mark.parametrize("format", ["pt2", "onnx"])
def test_export_refuses_a_model_without_one_output_per_class(tmp_path, format):
    learn = image_learner()  # 3 classes, 1x6x6 images
    learn.model = nn.Sequential(nn.Flatten(), nn.Linear(36, 12))  # e.g. a conv head leaving 2x2 logits per class
    with pytest.raises(ValueError, match=r"outputs of shape \(12,\) per item, but the data has 3 classes"):
        learn.export(tmp_path / f"m.{format}", format=format)
    assert not list(tmp_path.iterdir())  # nothing written


class BatchSizeBranch(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3] if x.shape[0] > 4 else -x.flatten(1)[:, :3]


def test_a_model_that_cannot_be_traced_for_any_batch_size_is_named(tmp_path):
    learn = trained()
    learn.model = BatchSizeBranch()
    with pytest.raises(RuntimeError, match=r"torch.export could not trace BatchSizeBranch on a batch of shape \(2, 1, 6"):
        learn.export(tmp_path / "m.pt2")
    assert not list(tmp_path.iterdir())  # nothing written


def test_export_of_other_data_with_its_preprocessing_given(tmp_path):
    from conftest import make_dls
    torch.manual_seed(0)
    learn = Learner(nn.Linear(3, 2), make_dls()).fit(1)
    path = learn.export(tmp_path / "m.pt2", preprocessing=Preprocessing(kind="tensor", shape=[3], scale=1.))
    predictor = load_learner(path, device="cpu")
    x = learn.dls.valid.x
    torch.testing.assert_close(predictor.predict_batch(x).probs, learn.predict(x).probs)
    assert predictor.predict(x[0]).index == learn.predict(x[0]).index and "input 3" in repr(predictor)


def test_a_malformed_description_is_an_error_naming_the_file(export_file, tmp_path):
    def drop_classes(records):
        meta = json.loads(records["extra/slowlearn.json"])
        del meta["classes"]
        records["extra/slowlearn.json"] = json.dumps(meta).encode()
    broken = rewrite(export_file[1], tmp_path / "broken.pt2", drop_classes)
    with pytest.raises(ExportError, match=r"broken.pt2: its slowlearn.json record is incomplete"):
        load_learner(broken)


@pytest.mark.parametrize("version, activation, loads", [(1, None, "softmax"), (2, "sigmoid", "sigmoid"),
                                                         (2, "relu", "incomplete or malformed"),
                                                         (3, "softmax", "format version 3, which this slowlearn does "
                                                                        "not read")])
def test_version_1_exports_lack_the_activation_and_mean_softmax_unknown_ones_are_errors(export_file, tmp_path,
                                                                                       version, activation, loads):
    """Version 2 records the activation; an older slowlearn refuses it (its version check) rather than softmax a
    multi-label model's outputs."""
    def set_activation(records):
        meta = json.loads(records["extra/slowlearn.json"])
        meta.pop("activation")
        records["extra/slowlearn.json"] = json.dumps(meta | {"version": version} |
                                                     ({"activation": activation} if activation else {})).encode()
    changed = rewrite(export_file[1], tmp_path / "changed.pt2", set_activation)
    if loads in ("softmax", "sigmoid"):
        assert load_learner(changed).activation == loads
    else:
        with pytest.raises(ExportError, match=rf"changed.pt2: its slowlearn.json record is {loads}|changed.pt2 is a "
                                              rf"slowlearn export of {loads}"):
            load_learner(changed)


class RunsCode:
    """A pickle that creates a file when unpickled (what a malicious export would do instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


def rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the archive `src` with `change(records)` applied to its {name: bytes} records."""
    with zipfile.ZipFile(src) as z:
        records = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    change(records)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in records.items():
            z.writestr("archive/" + name, data)
    return dst


def pickled_sample_inputs(records, marker):
    records["data/sample_inputs/model.pt"] = pickle.dumps(RunsCode(marker))


def pickled_weight(records, marker):
    config = json.loads(records["data/weights/model_weights_config.json"])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    records["data/weights/" + entry["path_name"]] = pickle.dumps(RunsCode(marker))
    records["data/weights/model_weights_config.json"] = json.dumps(config).encode()


def first_expression(node):
    """The first dict holding a symbolic shape expression ("expr_str") in a program's JSON."""
    if isinstance(node, dict):
        return node if "expr_str" in node else next(filter(None, map(first_expression, node.values())), None)
    if isinstance(node, list):
        return next(filter(None, map(first_expression, node)), None)
    return None


def evaluated_expression(records, marker):
    program = json.loads(records["models/model.json"])
    holder = first_expression(program)
    holder["expr_str"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or {holder['expr_str']}"
    records["models/model.json"] = json.dumps(program).encode()


def guard_code(records, marker):
    program = json.loads(records["models/model.json"])
    program["guards_code"] = [f"__import__('pathlib').Path({str(marker)!r}).touch() is None"]
    records["models/model.json"] = json.dumps(program).encode()
    buffer = io.BytesIO()  # torch only generates guard code for programs with sample inputs: plain tensors here
    torch.save(((torch.zeros(2, 1, 6, 6),), {}), buffer)
    records["data/sample_inputs/model.pt"] = buffer.getvalue()


def foreign_call(records, marker):
    text = records["models/model.json"].decode()
    records["models/model.json"] = text.replace('"torch.ops.aten.relu.default"', '"torch.os.system"').encode()


def extra_record(records, marker):
    records["data/weights/model.pt"] = pickle.dumps(RunsCode(marker))  # torch's legacy weights file


@pytest.mark.filterwarnings("ignore")  # torch's own loader, run to show that each file is dangerous, warns
@pytest.mark.parametrize("craft, reason, runs_code_in_torch", [
    (pickled_sample_inputs, "a sample-inputs record", True), (pickled_weight, "stored as a pickle", True),
    (evaluated_expression, "a shape expression", True), (guard_code, "guard code", True),
    (foreign_call, "a graph node calling 'torch.os.system'", False), (extra_record, "unexpected or repeated", False)])
def test_a_crafted_export_is_refused_without_running_anything(export_file, tmp_path, craft, reason,
                                                               runs_code_in_torch):
    marker = tmp_path / "code-ran"
    crafted = rewrite(export_file[1], tmp_path / "crafted.pt2", lambda records: craft(records, marker))
    with pytest.raises(ExportError, match=f"Refusing to load {crafted}: it holds.*{reason}"):
        load_learner(crafted)
    assert not marker.exists()
    if runs_code_in_torch:  # the danger is real: torch's own loader runs the file's code
        try:
            torch.export.load(crafted).module()(torch.zeros(2, 1, 6, 6))
        except Exception:
            pass
        assert marker.exists()


def test_an_unaltered_rewrite_still_loads(export_file, tmp_path):
    copy = rewrite(export_file[1], tmp_path / "copy.pt2", lambda records: None)
    assert load_learner(copy, device="cpu").predict(torch.zeros(1, 6, 6, dtype=torch.uint8)).probs.shape == (3,)


def test_truncated_damaged_or_foreign_files_are_errors_naming_the_file(export_file, tmp_path):
    data = export_file[1].read_bytes()
    (tmp_path / "truncated.pt2").write_bytes(data[:len(data) // 2])
    truncated = tmp_path / "truncated.pt2"
    with pytest.raises(ExportError, match=f"{truncated} is not a slowlearn export, or it is truncated"):
        load_learner(tmp_path / "truncated.pt2")
    at = data.index(b'"graph_module"')  # inside the program's record
    (tmp_path / "damaged.pt2").write_bytes(data[:at] + b"X" + data[at + 1:])
    with pytest.raises(ExportError, match="damaged.pt2 is damaged"):
        load_learner(tmp_path / "damaged.pt2")
    learn = trained()
    learn.save(tmp_path / "checkpoint.pt")
    with pytest.raises(ExportError, match=r"checkpoint.pt is not a slowlearn export \(no extra/slowlearn.json"):
        load_learner(tmp_path / "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt2: no such model file"):
        load_learner(tmp_path / "nothing.pt2")


def test_onnx_export_predicts_as_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from slowlearn.data.preprocess import preprocessing_of, to_batch
    learn = trained(channels=3)
    path = learn.export(tmp_path / "model.onnx", format="onnx")
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["slowlearn"])
    assert meta["classes"] == ["a", "b", "c"] and meta["preprocessing"]["channels"] == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xb = to_batch(list(learn.dls.valid.x), preprocessing_of(learn.dls))
    logits = torch.from_numpy(session.run(["logits"], {"images": xb.numpy()})[0])
    expected = learn.get_preds().preds
    torch.testing.assert_close(logits.softmax(-1), expected, atol=1e-5, rtol=0)


def write_records(dst: Path, records: dict, deflated: dict | None = None) -> Path:
    """An archive of `records` ({name: bytes}), stored as torch stores them, except those in `deflated`."""
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in {**records, **(deflated or {})}.items():
            z.writestr("archive/" + name, data,
                       compress_type=zipfile.ZIP_DEFLATED if name in (deflated or {}) else zipfile.ZIP_STORED)
    return dst


def declared_size(src: Path, dst: Path, member: str, size: int) -> Path:
    """A copy of `src` whose central directory declares `size` bytes for `member` (nothing else changes)."""
    data = bytearray(src.read_bytes())
    name = member.encode()
    at = -1
    while True:  # the central directory entry of `member`
        at = data.index(b"PK\x01\x02", at + 1)
        length = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + length].endswith(name):
            break
    data[at + 24:at + 28] = struct.pack("<I", size)
    dst.write_bytes(bytes(data))
    return dst


def opened_records(monkeypatch) -> list[str]:
    """The archive records that get opened (read or inflated) from now on."""
    names, open_ = [], zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: names.append(str(getattr(
        name, "filename", name))) or open_(self, name, *a, **k))
    return names


def test_load_learner_on_an_onnx_export_says_what_it_is(tmp_path):
    """It said the file was truncated or damaged, and to export again."""
    pytest.importorskip("onnx")
    path = trained(channels=3).export(tmp_path / "model.onnx")
    (tmp_path / "model.bin").write_bytes(path.read_bytes())  # found by its header too
    for file in (path, tmp_path / "model.bin"):
        with pytest.raises(ExportError, match=rf"{file.name} is an ONNX export.*onnxruntime.*export\('model.pt2'\)"):
            load_learner(file)

def test_a_weight_record_of_deflated_zeros_is_refused_before_anything_is_inflated(export_file, tmp_path, monkeypatch):
    """Issue 23, rule 5: a 1.1 MB .pt2 whose weight record is 1 GiB of deflated zeros was accepted and inflated
    twice. Here 64 MiB in 64 KiB of file, and a weight record that holds more bytes than its tensors take."""
    with zipfile.ZipFile(export_file[1]) as z:
        records = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    bomb = write_records(tmp_path / "bomb.pt2", records, {"data/weights/weight_0": bytes(64 << 20)})
    assert bomb.stat().st_size < 200_000
    opened = opened_records(monkeypatch)
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch.export.load was called"))
    with pytest.raises(ExportError, match=r"Refusing to load .*bomb.pt2: it holds a record archive/data/weights/"
                                          r"weight_0 that claims 64.0 MiB from \d+ bytes in the file \(a decompression "
                                          r"bomb\)"):
        load_learner(bomb)
    assert opened == []
    size = len(records["data/weights/weight_0"])
    padded = write_records(tmp_path / "padded.pt2", {**records, "data/weights/weight_0": bytes(size + 4096)})
    opened.clear()
    with pytest.raises(ExportError, match=rf"holds a record archive/data/weights/weight_0 of {size + 4096} bytes "
                                          rf"where its tensors' shapes and types take {size} bytes"):
        load_learner(padded)
    assert not any(name.endswith("weight_0") for name in opened)


def test_a_directory_that_declares_a_huge_record_is_refused_unread(export_file, tmp_path, monkeypatch):
    crafted = declared_size(export_file[1], tmp_path / "huge.pt2", "data/weights/weight_0", 2**30)
    opened = opened_records(monkeypatch)
    with pytest.raises(ExportError, match=r"a record archive/data/weights/weight_0 that claims 1.0 GiB from \d+ bytes"):
        load_learner(crafted)
    assert opened == []


def bigger_tensor(records):
    """A weight whose shape says 2**40 floats: torch would allocate them for an empty record."""
    config = json.loads(records["data/weights/model_weights_config.json"])
    entry = next(iter(config["config"].values()))
    entry["tensor_meta"]["sizes"] = [{"as_int": 2**20}, {"as_int": 2**20}]
    entry["tensor_meta"]["strides"] = [{"as_int": 2**20}, {"as_int": 1}]
    records["data/weights/model_weights_config.json"] = json.dumps(config).encode()
    records["data/weights/" + entry["path_name"]] = b""


def unread_record(records):
    records["data/weights/weight_99"] = bytes(1000)


@pytest.mark.parametrize("craft, reason", [
    (bigger_tensor, (r"a record archive/data/weights/weight_0 of 0 bytes where its tensors' shapes and types take "
                     r"4096.0 GiB")),
    (unread_record, r"records no tensor reads \(archive/data/weights/weight_99\)")])
def test_a_record_that_disagrees_with_the_tensors_it_holds_is_refused(export_file, tmp_path, craft, reason):
    crafted = rewrite(export_file[1], tmp_path / "crafted.pt2", craft)
    with pytest.raises(ExportError, match=f"Refusing to load {crafted}: it holds {reason}"):
        load_learner(crafted)


def test_an_export_carries_no_stack_traces_paths_or_source_lines(export_file):
    """Issue 23, rule 6: the graph's metadata held the export's stack traces: the training machine's file paths
    (the virtual environment's, the user's script's) and source lines."""
    data = export_file[1].read_bytes()
    assert str(Path(__file__).parent).encode() not in data  # where this test (the "training script") lies
    assert str(Path(torch.__file__).parent).encode() not in data  # the virtual environment
    assert b"reshape(2 * n, -1)" not in data and b"stack_trace" not in data  # Net.forward's source line
    with zipfile.ZipFile(export_file[1]) as z:
        program = json.loads(z.read("archive/models/model.json"))
    assert all(node["metadata"] == {} for node in program["graph_module"]["graph"]["nodes"])


def test_the_format_follows_the_suffix_and_a_contradicting_one_is_refused(tmp_path):
    """`learn.export("model.onnx")` used to write a torch.export zip named .onnx, which onnxruntime cannot read."""
    onnx = pytest.importorskip("onnx")
    learn = trained()
    path = learn.export(tmp_path / "model.onnx")
    assert not zipfile.is_zipfile(path) and onnx.load(str(path)).graph.input[0].name == "images"
    assert zipfile.is_zipfile(learn.export(tmp_path / "model.pt2")) and zipfile.is_zipfile(learn.export(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"format='pt2' writes a torch.export archive, which a file named .onnx would "
                                         r"pass for an ONNX model: name it other.pt2, or leave format out"):
        learn.export(tmp_path / "other.onnx", format="pt2")
    with pytest.raises(ValueError, match=r"name it other.onnx"):
        learn.export(tmp_path / "other.pt2", format="onnx")
    assert not (tmp_path / "other.onnx").exists() and not (tmp_path / "other.pt2").exists()


def test_an_export_after_early_stopping_restored_the_best_weights_holds_that_epochs_metrics(tmp_path):
    """The best epoch's weights used to go out with the last epoch's metrics."""
    from slowlearn import Callback, EarlyStoppingCB
    losses = iter([0.5, 0.9, 0.8])

    class Scripted(Callback):  # the valid losses EarlyStoppingCB sees
        order = MetricsCB.order + 1

        def after_epoch(self, learn):
            if not learn.training:
                learn.history[-1]["loss"] = next(losses)

    learn = image_learner()
    learn.add_cb(MetricsCB()).fit(3, cbs=[Scripted(), EarlyStoppingCB(patience=2, restore_best=True)])
    assert learn.history[-1]["epoch"] == 2 and learn.weights_epoch == 0
    meta = json.loads(zipfile.ZipFile(learn.export(tmp_path / "best.pt2")).read("archive/extra/slowlearn.json"))
    assert meta["metadata"]["metrics"]["epoch"] == 0 and meta["metadata"]["metrics"]["loss"] == 0.5
    learn.fit(1)  # trained on: the weights are the last epoch's again
    assert learn.weights_epoch is None
    meta = json.loads(zipfile.ZipFile(learn.export(tmp_path / "last.pt2")).read("archive/extra/slowlearn.json"))
    assert meta["metadata"]["metrics"] == learn.history[-1]
