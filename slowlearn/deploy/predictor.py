"""`load_learner(path)`: an exported model as a `Predictor`, for images from files, PIL, tensors or arrays.

Needs neither the training data, nor the model's Python class, nor slowlearn's callbacks: the model is
the `torch.export` program in the file, and the preprocessing and class names come with it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

from ..data import (
    IMAGE_SUFFIXES,
    Preprocessing,
    as_items,
    class_folder_key,
    class_of_file,
    image_files,
    in_training,
    to_batch,
)
from ..device import default_device
from .export import ExportError, read_export
from .inference import ACTIVATIONS, Prediction, prediction

__all__ = ["Predictor", "load_learner", "FilePreds"]


class FilePreds(NamedTuple):
    """`Predictor.get_preds`: the files, their class probabilities (N x classes), and their true classes where
    a file's folder is named after a class (-1 elsewhere)."""
    files: list[Path]
    preds: torch.Tensor
    targets: torch.Tensor






class Predictor:
    """Predicts with an exported model: `predict(item)`, `predict_batch(items)`, `get_preds(folder_or_files)`.

    Items follow `slowlearn.data.preprocess`: an image file path, a PIL image, a uint8 tensor or array (0-255),
    or a float one in [0, 1]. `classes`, `preprocessing` and `metadata` (versions, date, final metrics)
    describe the model.
    """

    def __init__(self, program: torch.export.ExportedProgram, meta: dict, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = program.module(check_guards=False).to(self.device)
        self.classes: list[str] = meta["classes"]
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.metadata: dict = meta["metadata"]
        # as learn.predict: a softmax over the classes, a sigmoid per label (multi-label), or the outputs as they are
        self.activation: str = meta.get("activation", "softmax")  # older exports record none: softmax
        self._activate = ACTIVATIONS[self.activation][0]

    def __repr__(self) -> str:
        p = self.preprocessing
        shape = f"{p.channels}x{p.size[0]}x{p.size[1]}" if p.kind == "image" else "x".join(map(str, p.shape))
        return f"Predictor({self.metadata.get('model')}, input {shape}, {len(self.classes)} classes)"

    @torch.no_grad()
    def probabilities(self, xb: torch.Tensor) -> torch.Tensor:
        """Class probabilities (as `learn.predict` gives them: see `activation`) for a batch already normalised (as
        `to_batch` makes it)."""
        return self._activate(self.model(xb.to(self.device)).float()).cpu()

    def predict(self, item) -> Prediction:
        """Class index, name and probabilities for one item (or a batch given as an N x C x H x W tensor)."""
        items, single = as_items(item, self.preprocessing)
        return prediction(self._probs(items), self.classes, single)

    def predict_batch(self, items: Sequence, bs: int = 256) -> Prediction:
        """Indexes, names and probabilities for many items, decoded in parallel and run `bs` at a time."""
        items, _ = as_items(items, self.preprocessing)
        return prediction(self._probs(items, bs), self.classes, single=False)

    def get_preds(self, folder_or_files, bs: int = 256, held_out: bool = False) -> FilePreds:
        """Probabilities for every image in a folder (recursively) or in a list of files, with the true classes
        where the folders name them (as `image_folder` labels its images). `held_out=True` leaves out the
        images that the model trained on if this is the folder it was trained on (see `trained_on`)."""
        files = image_files(folder_or_files)
        if not files:
            raise FileNotFoundError(f"No image files in {folder_or_files} (looked for {sorted(IMAGE_SUFFIXES)})")
        root = Path(folder_or_files) if isinstance(folder_or_files, (str, os.PathLike)) else None
        root = root if root is not None and root.is_dir() else None
        if held_out:
            files = [f for f in files if not self.trained_on(f, root)]
        index = {name: i for i, name in enumerate(self.classes)}
        targets = torch.tensor([index.get(class_of_file(f, root, index), -1) for f in files], dtype=torch.long)
        return FilePreds(files, self._probs(files, bs), targets)

    def trained_on(self, file: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
        """Whether the model trained on `file`, if `root` (the folder holding its class folder, or None) is the
        folder of class folders it was trained on with `valid_pct`: the export records that split's rule, which
        decides each image by its path under that folder. False when the export records no such split (the
        data came split into folders, or was a CSV or a Hugging Face dataset)."""
        split = self.metadata.get("split")
        if not split or split.get("keys") != "class-folder":
            return False
        return in_training(class_folder_key(Path(file), Path(root) if root is not None else None, self.classes), split)

    def _probs(self, items: list, bs: int = 256) -> torch.Tensor:
        if not items:
            return torch.empty(0, len(self.classes))
        workers = min(os.cpu_count() or 1, 8)
        with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without holding the GIL
            chunks = [items[i:i + bs] for i in range(0, len(items), bs)]
            return torch.cat([self.probabilities(to_batch(chunk, self.preprocessing, pool.map)) for chunk in chunks])


def load_learner(path: str | os.PathLike, device: torch.device | str | None = None) -> Predictor:
    """Load a model written by `learn.export(path)` as a .pt2 archive (checked first: loading never runs code from
    the file). An ONNX export is refused with a message: it is for onnxruntime."""
    program, meta = read_export(path)
    try:
        return Predictor(program, meta, device=device)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{path}: its slowlearn.json record is incomplete or malformed ({type(e).__name__}: {e}). "
                          f"Export the model again.") from None
