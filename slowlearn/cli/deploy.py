"""The command line's commands for a trained model: `slowlearn export` (a run's checkpoint to one file),
`slowlearn predict` (classes of image files), `slowlearn evaluate` (loss, accuracy, confusion matrix).

Each is one function taking the parsed arguments; a user's mistake is a `CLIError` (one line, exit code 2).
`main.py` adds them to its parser; `export` rebuilds a run's data and model with `build.py`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .build import checked_data, model_name, rebuilt_learner
from .common import CLIError, positive_int, writable_file, writable_folder
from .data import add_data_args

__all__ = ["add_model_commands", "export_command", "predict_command", "evaluate_command"]


def _load_model(path: str):
    """The Predictor of an export, or a CLIError naming the file."""
    from ..deploy import ExportError, load_learner
    try:
        return load_learner(path)
    except ExportError as e:
        raise CLIError(str(e)) from None


def export_command(args) -> int:
    source = Path(args.source)
    checkpoint = source / "checkpoint.pt" if source.is_dir() else source
    if not checkpoint.is_file():
        raise CLIError(f"{args.source}: no checkpoint here (give a run folder holding checkpoint.pt, or a checkpoint)")
    out = Path(args.out) if args.out else checkpoint.with_name("model." + (args.format or "pt2"))
    fmt = _format(out, args.format)
    if out.exists() and not args.force:
        raise CLIError(f"{out} already exists (`slowlearn train` writes model.pt2 itself): pass --force to replace it, "
                       f"or --out FILE")
    from ..checkpoint import read_checkpoint, restore_weights
    dls = checked_data(args)
    learn = rebuilt_learner(args, dls)
    try:  # the weights and history; not the optimizer, which the export does not need (and the run's may differ)
        restore_weights(learn, {**read_checkpoint(checkpoint), "opt": None})
    except RuntimeError:  # load_state_dict: weights of another architecture
        raise CLIError(f"{checkpoint} does not load into --model {args.model} for --data {args.data}: pass the "
                       f"--model and --data the run was trained with") from None
    except ValueError as e:  # not a checkpoint, or one of another model (checked before anything is loaded)
        raise CLIError(f"{e} (export rebuilt --model {args.model} for --data {args.data}: pass the --model and "
                       f"--data the run was trained with)") from None
    print(f"Wrote {learn.export(out, format=fmt, preprocessing=_recorded_preprocessing(checkpoint, dls))}")
    return 0


def _format(out: Path, format: str | None) -> str:
    """--format, or the one --out's suffix names; refused when they contradict each other."""
    from ..deploy import export_format
    try:
        return export_format(out, format)
    except ValueError:
        named = export_format(out)
        raise CLIError(f"--format {format} with --out {out}: a {out.suffix} file would pass for {named} while it "
                       f"holds {format}; pass --out {out.with_suffix('.' + format)}, or drop --format to write "
                       f"{named}") from None


def _recorded_preprocessing(checkpoint: Path, dls):
    """The preprocessing the run trained with, as its checkpoint records it (None for an older checkpoint:
    then the rebuilt data's), after checking that the rebuilt data has the run's classes and input shape."""
    from ..checkpoint import read_checkpoint
    from ..data import Preprocessing, preprocessing_of
    recorded = read_checkpoint(checkpoint).get("inputs")
    if recorded is None:
        return None
    prep, rebuilt = Preprocessing.from_dict(recorded["preprocessing"]), preprocessing_of(dls)
    if recorded["classes"] != list(dls.classes or []) or prep.shape != rebuilt.shape:
        shape = "x".join(map(str, rebuilt.shape))
        raise CLIError(f"{checkpoint} was trained on {prep.channels}x{prep.size[0]}x{prep.size[1]} images of classes "
                       f"{', '.join(recorded['classes'][:5])}; these data options give {shape} images of "
                       f"{', '.join((dls.classes or [])[:5])}: pass the --data and --size the run was trained with")
    return prep


def predict_command(args) -> int:
    import csv

    from ..data import image_files
    if args.csv:
        writable_file(args.csv, "--csv")
    predictor = _load_model(args.model)
    files = [f for item in args.images for f in image_files(item)]
    if not files:
        raise CLIError(f"No image files in {' '.join(args.images)}")
    try:
        probs = predictor.predict_batch(files).probs
    except ValueError as e:  # an image that does not decode, or has the wrong size
        raise CLIError(str(e)) from None
    k, names = min(args.top_k, probs.shape[1]), predictor.classes or [str(i) for i in range(probs.shape[1])]
    top = probs.topk(k)
    rows = [[str(f)] + [x for i, p in zip(idx.tolist(), ps.tolist()) for x in (names[i], f"{p:.4f}")]
            for f, idx, ps in zip(files, top.indices, top.values)]
    for row in rows:
        print(row[0] + "\t" + "  ".join(f"{name} {p}" for name, p in zip(row[1::2], row[2::2])))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file"] + [x for j in range(1, k + 1) for x in (f"class_{j}", f"prob_{j}")])
            writer.writerows(rows)
    return 0


def evaluate_command(args) -> int:
    import torch

    from ..deploy import confusion_matrix
    from ..display import save_png
    from ..show import plot_confusion
    out = writable_folder(args.out, "--out")
    predictor = _load_model(args.model)
    folder = Path(args.data)
    folder = next((folder / s for s in ("test", "valid") if (folder / s).is_dir()), folder)
    if not folder.is_dir():
        raise CLIError(f"--data {args.data}: not a folder of <class>/ image folders")
    try:
        result = predictor.get_preds(folder, held_out=not args.include_training)
    except ValueError as e:
        raise CLIError(str(e)) from None
    note = _split_note(predictor, folder, len(result.files), args.include_training)
    if not result.files:
        raise CLIError(f"--data {args.data}: the model trained on every image of {folder} ({note}); evaluate it on "
                       f"images it did not train on, or pass --include-training")
    labelled = result.targets >= 0
    if not labelled.any():
        raise CLIError(f"--data {args.data}: no image is in a folder named after one of the model's classes "
                       f"({', '.join(predictor.classes[:5])}...)")
    probs, targets = result.preds[labelled], result.targets[labelled]
    loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), targets).item()
    accuracy = (probs.argmax(-1) == targets).float().mean().item()
    cm = confusion_matrix(targets, probs.argmax(-1), len(predictor.classes))
    path = save_png(plot_confusion(cm, predictor.classes), out / "confusion_matrix.png")
    skipped = "" if labelled.all() else _skipped(predictor, result.files, labelled, folder)
    print(f"{int(labelled.sum())} images in {folder}{skipped}: loss {loss:.4f}, accuracy {accuracy:.4f}. "
          f"Confusion matrix: {path}")
    if note:
        print(f"Note: {note}.")
    return 0


def _skipped(predictor, files, labelled, folder: Path) -> str:
    """What evaluate says of the images it left out: the folders holding them name none of the model's classes."""
    from ..data import class_of_file
    names = sorted({class_of_file(Path(f), folder, predictor.classes) for f, known in zip(files, labelled.tolist())
                    if not known})
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return f" ({int((~labelled).sum())} images skipped: their folders ({shown}) name none of the model's classes)"


def _split_note(predictor, folder: Path, n_kept: int, include_training: bool) -> str:
    """What evaluate says about the images the model may have trained on (its export records its split)."""
    from ..data import image_files
    split = predictor.metadata.get("split")
    if not split:
        return ""
    how = f"the model was trained with --valid-pct {split['valid_pct']} (seed {split['seed']})"
    if split.get("keys") != "class-folder":
        return (f"{how} on {'a CSV' if split.get('keys') == 'csv' else 'a dataset'} split; if these images are that "
                f"data, some are ones it trained on, which evaluate cannot tell apart here")
    n_all = len(image_files(folder))
    if include_training:
        n_trained = sum(predictor.trained_on(f, folder) for f in image_files(folder))
        return (f"{how}; if {folder} is the folder it trained on, it trained on {n_trained} of these {n_all} images "
                f"(kept, as --include-training asks)") if n_trained else ""
    if n_all == n_kept:
        return ""
    return (f"{how}; {n_all - n_kept} of the {n_all} images are ones that split put in training, so they were left "
            f"out (pass --include-training to keep them, e.g. when {folder} is not the folder it trained on)")


def add_model_commands(sub) -> None:
    """The `export`, `predict` and `evaluate` subcommands, added to the `slowlearn` parser's subparsers."""
    e = sub.add_parser("export", help="write a trained run's model as one file for `slowlearn predict`",
                       description="Rebuild the model of a `slowlearn train` run (same --data and --model), load "
                                   "its checkpoint and export it (model, preprocessing and class names, as the "
                                   "checkpoint records them) to --out.")
    e.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    add_data_args(e)  # the data options the run was trained with
    e.add_argument("--model", type=model_name, default="cnn", help="the run's --model (default: cnn)")
    e.add_argument("--pretrained", action="store_true",
                   help="the run's --pretrained, if you repeat its options (not needed: the checkpoint has the "
                        "weights)")
    e.add_argument("--weights", metavar="FILE", default=None,
                   help="the run's --weights, if you repeat its options (not needed: the checkpoint has the weights)")
    e.add_argument("--bs", type=positive_int, default=512, help=argparse.SUPPRESS)
    e.add_argument("--format", choices=("pt2", "onnx"), default=None,
                   help="pt2 (torch.export, for slowlearn predict / load_learner) or onnx (default: the one --out's "
                        "suffix names, .onnx or .pt2; else pt2)")
    e.add_argument("--out", default=None, help="the file to write (default: model.pt2, or model.onnx with --format "
                                               "onnx, next to the checkpoint)")
    e.add_argument("--force", action="store_true", help="replace --out if it exists (by default an existing file is "
                                                        "kept and the export refused)")
    e.set_defaults(func=export_command)
    p = sub.add_parser("predict", help="classify image files with an exported model",
                       description="Print one line per image: the file, then the top classes with probabilities.")
    p.add_argument("model", metavar="MODEL", help="a file written by learn.export or `slowlearn export`")
    p.add_argument("images", metavar="FILES_OR_FOLDER", nargs="+", help="image files, or folders searched recursively")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--csv", default=None, help="also write the predictions to this CSV file")
    p.set_defaults(func=predict_command)
    v = sub.add_parser("evaluate", help="loss, accuracy and confusion matrix of an exported model on labelled images",
                       description="Evaluate on PATH/test/<class>/* (or valid/, or PATH/<class>/*): print loss "
                                   "and accuracy, write confusion_matrix.png into --out.")
    v.add_argument("model", metavar="MODEL")
    v.add_argument("--data", required=True, metavar="PATH", help="a folder of <class>/ image folders")
    v.add_argument("--out", default="runs/evaluate", help="output folder (default: runs/evaluate)")
    v.add_argument("--include-training", action="store_true",
                   help="also evaluate on the images the model trained on (by default, when the model was trained "
                        "with --valid-pct on a folder of class folders, the images its split put in training are "
                        "left out)")
    v.set_defaults(func=evaluate_command)
