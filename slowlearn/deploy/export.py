"""`learn.export(path)`: a trained classifier in one file that loads without slowlearn's training code,
the model's Python class or the data, and never runs code from the file.

Format (version 2; version 1 lacked `activation`): a `torch.export` archive (a zip, `.pt2`, as
`torch.export.save` writes it) holding

- `models/model.json`: the model's graph as a `torch.export` program, traced in eval mode (BatchNorm
  uses its running statistics, dropout is off) on the CPU, with a dynamic batch dimension. It takes
  the normalised float32 batch the model saw in training (N x C x H x W for images) and returns logits.
- `data/weights/*`, `data/constants/*`: its parameters and buffers as raw bytes (never pickles), described
  by `data/weights/model_weights_config.json` and `data/constants/model_constants_config.json`.
- `data/sample_inputs/model.pt`: empty (torch would unpickle it).
- `extra/slowlearn.json`: `{"format": "slowlearn-export", "version": 2, "classes": [...],
  "preprocessing": {...}, "activation": ..., "metadata": {...}}`. `activation` is what turns the logits into
  the predictions (`deploy.inference.activation_kind`, from the training loss): "softmax" over the classes,
  "sigmoid" per output (binary cross-entropy on logits: multi-label) or "none" (the outputs as they are: a
  regression); files written before it was recorded lack it and mean "softmax". `preprocessing` is
  `slowlearn.data.preprocess.Preprocessing` as a dict: `kind` ("image"), `channels`, `size` [h, w], `scale`
  (1/255: uint8 to [0, 1]), `mean` and `std` (per channel, applied after the scaling), `resize` (how the
  training images were resized:
  {"method": "crop" | "squish", "interpolation": "bilinear"}, or null: inputs must have `size`).
  `metadata`: slowlearn and torch versions, the date (UTC, ISO 8601), the model's class name, the
  metrics of the epoch whose weights it holds (the last row of the training history, or, when
  EarlyStoppingCB(restore_best=True) put an earlier epoch's weights back, that epoch's row: its "epoch"
  says which), and `split`: how a `valid_pct` split was drawn (`dls.split`: {"rule", "valid_pct", "seed",
  "keys"}, null when the data came split), so that `Predictor.trained_on` / `slowlearn evaluate` can tell
  the images the model trained on.

The graph's nodes carry no metadata: torch.export records stack traces (the exporting machine's file
paths and source lines), module class names and provenance, which loading does not need; they are
dropped before saving.

So a model input is `(pixels * scale - mean) / std` with pixels uint8 0-255, C x H x W.

Loading (`read_export`) reads the whole file into memory once and bounds what inflating it costs before
inflating anything: from the archive's directory, every record must be stored or deflated at most 100:1
(a small file claiming gigabytes is refused), then each weight record must hold exactly the bytes that
its tensors' shapes and dtypes take. It then refuses anything that would make
`torch.export.load` unpickle (pickled weights or constants, custom objects, legacy weight files, a
non-empty sample-inputs record), or evaluate text from the file (symbolic shape expressions other than
plain sympy symbols and integers, guard code), or call anything other than aten operators and
arithmetic from the graph, before handing those same bytes to `torch.export.load`.

`learn.export(path, format="onnx")` (or a `path` ending in `.onnx`) writes an ONNX model instead (input "images", output "logits",
dynamic batch), with the same JSON in its metadata under the key "slowlearn"; it needs the `onnx` extra
(`pip install slowlearn[onnx]`) and is meant for onnxruntime and other runtimes outside Python's torch;
`read_export` (load_learner) says so when given one, by its suffix or its header.
"""
from __future__ import annotations

import copy
import datetime
import io
import json
import os
import re
import tokenize
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..data import Preprocessing, preprocessing_of
from ..device import bare_model
from ..distributed import is_rank0
from .inference import activation_kind

__all__ = ["export_learner", "export_format", "read_export", "ExportError", "FORMAT", "VERSION"]

FORMAT, VERSION, META = "slowlearn-export", 2, "slowlearn.json"
READABLE_VERSIONS = (1, 2)  # 2 records the activation (1: softmax); an older slowlearn refuses 2 rather than misread it
_MEMBERS = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                      r"models/model\.json|data/sample_inputs/model\.pt|extra/slowlearn\.json|"
                      r"data/weights/(model_weights_config\.json|weight_\d+)|"
                      r"data/constants/(model_constants_config\.json|tensor_\d+))")
_TRACE_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "custom", "from_node")
_MAX_RATIO = 100  # a member deflated more than this is refused: real weights and JSON compress far less
_SLACK = 1 << 16  # bytes any member may hold beyond the ratio (small JSON records compress well)
_OPERATORS = {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                                               "pow", "eq", "ne", "lt", "le", "gt", "ge")}
# What torch writes in symbolic shapes (sympy's srepr): classes that only build expressions, and their flags
_EXPR_NAMES = {"Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs", "floor", "ceiling",
               "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or",
               "Not", "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "PythonMod", "IntTrueDiv", "FloatTrueDiv",
               "PowByNatural", "FloatPow", "CeilToInt", "FloorToInt", "TruncToInt", "RoundToInt", "ToFloat",
               "Identity", "Where", "true", "false", "True", "False", "positive", "integer", "nonnegative", "real"}


class ExportError(ValueError):
    """A file that is not a slowlearn export, is damaged, or holds something that loading could run."""


_FORMATS = {"pt2": "a torch.export archive", "onnx": "an ONNX model"}


def export_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format `learn.export(path, format)` writes: `format` ("pt2" or "onnx") when given, else the one
    that `path`'s suffix names (`.onnx`: ONNX; `.pt2` or any other: pt2). A `format` that contradicts the
    suffix is refused: the file would be taken for what it is not."""
    if format not in (None, "pt2", "onnx"):
        raise ValueError(f"format={format!r}: use 'pt2' (torch.export, loaded by load_learner) or 'onnx'")
    path = Path(path)
    by_suffix = {".pt2": "pt2", ".onnx": "onnx"}.get(path.suffix.lower())
    if format is None:
        return by_suffix or "pt2"
    if by_suffix is not None and by_suffix != format:
        raise ValueError(f"learn.export({path.name!r}, format={format!r}): format={format!r} writes "
                         f"{_FORMATS[format]}, which a file named {path.suffix} would pass for {_FORMATS[by_suffix]}: "
                         f"name it {path.with_suffix('.' + format).name}, or leave format out to write "
                         f"{_FORMATS[by_suffix]}")
    return format


def export_learner(learn, path: str | os.PathLike, format: str | None = None,
                   preprocessing: Preprocessing | None = None) -> Path:
    """Write `learn`'s model with its preprocessing, class names and metadata to `path` (atomically), as
    `export_format(path, format)` says (by default from the suffix: `.onnx` ONNX, else pt2)."""
    format = export_format(path, format)
    path = Path(path)
    if not is_rank0():  # in a distributed run, one process writes
        return path
    prep = preprocessing or preprocessing_of(learn.dls)
    if prep.kind != "image" and preprocessing is None:
        raise ValueError("learn.export: the training data is not uint8 images in a TensorLoader, so what the model "
                         "takes cannot be read from it; pass preprocessing=Preprocessing(kind='tensor', shape=[...]) "
                         "(see slowlearn.data.preprocess)")
    model = copy.deepcopy(bare_model(learn.model)).cpu().eval()
    meta = _meta(learn, model, prep)
    out = _sample_output(model, prep)
    _check_one_output_per_class(out, meta["classes"])
    # what turns the outputs into predictions (Predictor.probabilities; for ONNX users, in its metadata)
    meta["activation"] = activation_kind(learn.loss_func, out) if isinstance(out, torch.Tensor) else "softmax"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if format == "onnx":
            _write_onnx(model, prep, meta, tmp)
        else:
            buffer = io.BytesIO()
            with warnings.catch_warnings():  # torch's note on weights sharing storage (channels-last layouts)
                warnings.filterwarnings("ignore", "No complete tensor found")
                torch.export.save(export_program(model, prep), buffer, extra_files={META: json.dumps(meta)})
            tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _meta(learn, model: nn.Module, prep: Preprocessing) -> dict:
    from ..version import __version__
    last = _row_of_weights(learn)
    return {"format": FORMAT, "version": VERSION, "classes": list(getattr(learn.dls, "classes", None) or []),
            "preprocessing": prep.to_dict(),
            "metadata": {"slowlearn": __version__, "torch": torch.__version__,
                         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         "model": type(model).__name__,
                         "metrics": {k: v for k, v in last.items() if isinstance(v, (int, float, str))},
                         "split": getattr(learn.dls, "split", None)}}


def _row_of_weights(learn) -> dict:
    """The history row that scores the weights being exported: the last one, or when an earlier epoch's
    weights were put back (`learn.weights_epoch`, set by EarlyStoppingCB(restore_best=True)), that epoch's."""
    epoch = getattr(learn, "weights_epoch", None)
    rows = [row for row in learn.history if epoch is None or row.get("epoch") == epoch]
    return rows[-1] if rows else {}


@torch.no_grad()
def _sample_output(model: nn.Module, prep: Preprocessing):
    return model(torch.zeros(1, *prep.shape))


def _check_one_output_per_class(out, classes: list[str]) -> None:
    """A classifier with class names gives one output per class (else predict would name the wrong class)."""
    if not classes:
        return
    if isinstance(out, torch.Tensor) and out.shape != (1, len(classes)):
        raise ValueError(f"learn.export: the model gives outputs of shape {tuple(out.shape[1:])} per item, but the "
                         f"data has {len(classes)} classes: give its last layer {len(classes)} outputs (trained so, it "
                         f"would not have learnt these classes)")


def export_program(model: nn.Module, prep: Preprocessing) -> torch.export.ExportedProgram:
    """`model` (on the CPU, in eval mode) as a program with a dynamic batch dimension, holding nothing
    that loading would unpickle or execute."""
    example = torch.zeros(2, *prep.shape)
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception as e:
        raise RuntimeError(f"torch.export could not trace {type(model).__name__} on a batch of shape "
                           f"{tuple(example.shape)} with any batch size: {str(e).splitlines()[0]} (Python branches on "
                           f"tensor values or on the batch size cannot be exported; see torch.export's docs)") from e
    program.example_inputs = None  # else saved as a pickle
    program._guards_code = []  # Python source run at load; the Predictor checks input shapes itself
    for node in program.graph.nodes:  # stack traces (this machine's file paths and source lines), module classes
        for key in _TRACE_META:
            node.meta.pop(key, None)
    _compact_storages(program)
    return program


def _compact_storages(program: torch.export.ExportedProgram) -> None:
    """A weight that is a view of a larger tensor is saved as its own copy: torch writes a tensor's whole
    storage, and loading refuses a weight record larger than the weights it holds (`_check_tensor_records`)."""
    for table in (program.state_dict, program.constants):
        for name, t in list(table.items()):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > _extent(t.shape, t.stride(),
                                                                                     t.storage_offset(),
                                                                                     t.element_size()):
                copy_ = t.detach().clone()
                table[name] = nn.Parameter(copy_, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) \
                    else copy_


def _extent(shape, strides, offset: int, itemsize: int) -> int:
    """Bytes of storage a tensor reaches: from the storage's start to past its last element (0 if empty)."""
    if any(n == 0 for n in shape):
        return 0
    return (offset + sum((n - 1) * st for n, st in zip(shape, strides)) + 1) * itemsize


def _write_onnx(model: nn.Module, prep: Preprocessing, meta: dict, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise ImportError("learn.export(format='onnx') needs the onnx package: pip install slowlearn[onnx]") from None
    with warnings.catch_warnings():  # torch 2.14's exporter without onnxscript is the TorchScript one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, *prep.shape),), str(path), dynamo=False, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="slowlearn", value=json.dumps(meta))
    onnx.save(proto, str(path))


def _looks_like_onnx(path: Path, data: bytes) -> bool:
    """An .onnx name, or the start of an ONNX protobuf: field 1 (ir_version, a one-byte varint), then field 2
    (producer_name) or 3 (producer_version) as the exporters write them."""
    return path.suffix.lower() == ".onnx" or (len(data) > 2 and data[0] == 0x08 and data[2] in (0x12, 0x1a))


def read_export(path: str | os.PathLike) -> tuple[torch.export.ExportedProgram, dict]:
    """The program and the JSON of an export, after checking that loading it runs no code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (write one with learn.export or `slowlearn export`)")
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))  # reads the archive's directory only
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if _looks_like_onnx(path, data):
            raise ExportError(f"{path} is an ONNX export (learn.export(format='onnx')), which load_learner does not "
                              f"read: run it with onnxruntime (onnxruntime.InferenceSession(path), input 'images', "
                              f"output 'logits'; slowlearn's description is in its metadata under 'slowlearn'), or "
                              f"export a .pt2 file (learn.export('model.pt2')) for load_learner") from None
        raise ExportError(f"{path} is not a slowlearn export, or it is truncated or damaged ({e}). "
                          f"Export the model again.") from None
    _check_declared_sizes(archive, path)  # before anything is inflated
    meta = _check_archive(archive, path)
    try:
        damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ExportError(f"{path} is truncated or damaged ({e}). Export the model again.") from None
    if damaged is not None:
        raise ExportError(f"{path} is damaged (record {damaged} fails its checksum). Export the model again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
    except Exception as e:
        raise ExportError(f"{path}: torch.export could not load the model ({type(e).__name__}: {e}); it may come "
                          f"from another torch version (it was written by torch {meta['metadata'].get('torch')})."
                          ) from None
    return program, meta


def _check_archive(archive: zipfile.ZipFile, path: Path) -> dict:
    names = archive.namelist()
    root = names[0].split("/")[0] + "/" if names else ""
    if f"{root}extra/{META}" not in names:
        raise ExportError(f"{path} is not a slowlearn export (no extra/{META} record): write one with learn.export")
    meta = _json(archive, f"{root}extra/{META}", path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{path} is not a slowlearn export")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ExportError(f"{path} is a slowlearn export of format version {meta.get('version')!r}, which this "
                          f"slowlearn does not read (it reads versions {', '.join(map(str, READABLE_VERSIONS))}): "
                          f"load it with the slowlearn that wrote it, or a newer one")
    unexpected = [n for n in names if not n.startswith(root) or not _MEMBERS.fullmatch(n[len(root):])]
    if unexpected or len(set(names)) != len(names):
        raise _refused(path, f"unexpected or repeated records {(unexpected or names)[:3]}")
    _check_program(_json(archive, f"{root}models/model.json", path), path)
    if archive.getinfo(f"{root}data/sample_inputs/model.pt").file_size:
        raise _refused(path, "a sample-inputs record, which torch.export.load unpickles")
    for folder, config in (("data/weights/", "model_weights_config.json"),
                           ("data/constants/", "model_constants_config.json")):
        payloads = _json(archive, root + folder + config, path).get("config", {})
        for name, payload in payloads.items():
            if payload.get("use_pickle") or payload.get("tensor_meta") is None:
                raise _refused(path, f"{name} stored as a pickle")
        _check_tensor_records(archive, root + folder, payloads, path)
    return meta


def _check_declared_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Every record's size as the archive's directory declares it: stored or deflated, and not inflating to
    more than `_MAX_RATIO` times its compressed bytes (a zip bomb: a small file claiming gigabytes)."""
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refused(path, f"a record {info.filename} compressed with method {info.compress_type} (torch "
                                 f"writes records uncompressed)")
        stored = info.compress_type == zipfile.ZIP_STORED
        if (stored and info.file_size != info.compress_size) or info.file_size > _MAX_RATIO * info.compress_size \
                + _SLACK:
            raise _refused(path, f"a record {info.filename} that claims {_bytes(info.file_size)} from "
                                 f"{_bytes(info.compress_size)} in the file (a decompression bomb)")


def _check_tensor_records(archive: zipfile.ZipFile, folder: str, payloads: dict, path: Path) -> None:
    """Each weight (or constant) record holds exactly the bytes that the shapes and dtypes of the tensors read
    from it take, and the folder holds no record that no tensor reads."""
    from torch._export.serde.serialize import deserialize_scalar_type  # the archive's dtype numbers
    needed: dict[str, int] = {}
    for name, payload in payloads.items():
        meta = payload["tensor_meta"]
        try:
            ints = [[d["as_int"] for d in meta[k]] for k in ("sizes", "strides")]
            itemsize = deserialize_scalar_type(meta["dtype"]).itemsize
            extent = _extent(*ints, meta["storage_offset"]["as_int"], itemsize)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _refused(path, f"a tensor {name} whose shape or type is not plain ({type(e).__name__}: {e})") \
                from None
        if any(n < 0 for n in ints[0]) or extent < 0:
            raise _refused(path, f"a tensor {name} of shape {ints[0]}")
        record = str(payload.get("path_name"))
        needed[record] = max(needed.get(record, 0), extent)
    for record, n in needed.items():
        try:
            declared = archive.getinfo(folder + record).file_size
        except KeyError:
            raise _refused(path, f"no record {folder + record}, which its tensors read") from None
        if declared != n:
            raise _refused(path, f"a record {folder + record} of {_bytes(declared)} where its tensors' shapes and "
                                 f"types take {_bytes(n)}")
    unread = [n for n in archive.namelist() if n.startswith(folder) and not n.endswith(".json")
              and n[len(folder):] not in needed]
    if unread:
        raise _refused(path, f"records no tensor reads ({', '.join(unread[:3])})")


def _bytes(n: int) -> str:
    return f"{n} bytes" if n < 2**20 else f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _check_program(program: dict, path: Path) -> None:
    if program.get("guards_code"):
        raise _refused(path, "guard code, which loading runs as Python")
    for key, value in _walk(program):
        if key == "target" and not (value.startswith("torch.ops.aten.") or value in _OPERATORS):
            raise _refused(path, f"a graph node calling {value!r} (only aten operators are allowed)")
        if key == "expr_str" and not _plain_expression(value):
            raise _refused(path, f"a shape expression {value[:80]!r}, which loading would evaluate")
        if key in ("as_custom_obj", "custom_obj_values", "as_graph") and value:
            raise _refused(path, f"a {key} entry (custom objects and sub-graphs are not supported)")


def _walk(node, key=None):
    """(key, value) for every string value and every non-empty container under a parsed JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    if isinstance(node, str) or (node and key in ("as_custom_obj", "custom_obj_values", "as_graph")):
        yield key, node


def _plain_expression(text: str) -> bool:
    """True for sympy text made only of symbols, integers and arithmetic, e.g. "Symbol('s31', positive=True)":
    no attribute access, no other names, no strings other than symbol names."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type == tokenize.NAME and not (tok.string in _EXPR_NAMES or re.fullmatch(r"[a-z]+\d+", tok.string)):
            return False
        if tok.type == tokenize.STRING and not re.fullmatch(r"'[a-z]+\d+'", tok.string):
            return False
        if tok.type == tokenize.OP and tok.string not in set("+-*/%(),=") | {"//", "**"}:
            return False
        if tok.type not in (tokenize.NAME, tokenize.STRING, tokenize.OP, tokenize.NUMBER, tokenize.NEWLINE,
                            tokenize.NL, tokenize.ENDMARKER):
            return False
    return True


def _json(archive: zipfile.ZipFile, name: str, path: Path):
    try:
        return json.loads(archive.read(name))
    except (zipfile.BadZipFile, EOFError) as e:  # a record that fails its checksum or is cut short
        raise ExportError(f"{path} is damaged (record {name}: {e}). Export the model again.") from None
    except (KeyError, ValueError) as e:
        raise ExportError(f"{path} is not a readable slowlearn export: record {name} is missing or not JSON ({e})"
                          ) from None


def _refused(path: Path, what: str) -> ExportError:
    return ExportError(f"Refusing to load {path}: it holds {what}. slowlearn never writes that; the file was "
                       f"altered or made by another tool. Export the model again from its training code.")
