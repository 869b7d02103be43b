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

from ..data import IMAGE_SUFFIXES, Preprocessing, as_items, class_of_file, image_files, to_batch
from ..device import default_device
from .export import ExportError, read_export
from .inference import Prediction, prediction

__all__ = ["Predictor", "load_learner", "FilePreds"]


class FilePreds(NamedTuple):
    """`Predictor.get_preds`: the files, their class probabilities (N x classes), and their true classes where
    a file's folder is named after a class (-1 elsewhere)."""
    files: list[Path]
    preds: torch.Tensor
    targets: torch.Tensor






class Predictor:
    """Predicts with an exported model: `predict(item)`, `predict_batch(items)`, `get_preds(folder_or_files)`.

    Items follow `slowlearn.preprocess`: an image file path, a PIL image, a uint8 tensor or array (0-255),
    or a float one in [0, 1]. `classes`, `preprocessing` and `metadata` (versions, date, final metrics)
    describe the model.
    """

    def __init__(self, program: torch.export.ExportedProgram, meta: dict, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.model = program.module(check_guards=False).to(self.device)
        self.classes: list[str] = meta["classes"]
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.metadata: dict = meta["metadata"]

    def __repr__(self) -> str:
        p = self.preprocessing
        shape = f"{p.channels}x{p.size[0]}x{p.size[1]}" if p.kind == "image" else "x".join(map(str, p.shape))
        return f"Predictor({self.metadata.get('model')}, input {shape}, {len(self.classes)} classes)"

    @torch.no_grad()
    def probabilities(self, xb: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a batch already normalised (as `to_batch` makes it)."""
        return self.model(xb.to(self.device)).float().softmax(-1).cpu()

    def predict(self, item) -> Prediction:
        """Class index, name and probabilities for one item (or a batch given as an N x C x H x W tensor)."""
        items, single = as_items(item, self.preprocessing)
        return prediction(self._probs(items), self.classes, single)

    def predict_batch(self, items: Sequence, bs: int = 256) -> Prediction:
        """Indexes, names and probabilities for many items, decoded in parallel and run `bs` at a time."""
        items, _ = as_items(items, self.preprocessing)
        return prediction(self._probs(items, bs), self.classes, single=False)

    def get_preds(self, folder_or_files, bs: int = 256) -> FilePreds:
        """Probabilities for every image in a folder (recursively) or in a list of files, with the true classes
        where the folders name them (as `image_folder` labels its images)."""
        files = image_files(folder_or_files)
        if not files:
            raise FileNotFoundError(f"No image files in {folder_or_files} (looked for {sorted(IMAGE_SUFFIXES)})")
        root = Path(folder_or_files) if isinstance(folder_or_files, (str, os.PathLike)) else None
        root = root if root is not None and root.is_dir() else None
        index = {name: i for i, name in enumerate(self.classes)}
        targets = torch.tensor([index.get(class_of_file(f, root, index), -1) for f in files])
        return FilePreds(files, self._probs(files, bs), targets)

    def _probs(self, items: list, bs: int = 256) -> torch.Tensor:
        if not items:
            return torch.empty(0, len(self.classes))
        workers = min(os.cpu_count() or 1, 8)
        with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without holding the GIL
            chunks = [items[i:i + bs] for i in range(0, len(items), bs)]
            return torch.cat([self.probabilities(to_batch(chunk, self.preprocessing, pool.map)) for chunk in chunks])


def load_learner(path: str | os.PathLike, device: torch.device | str | None = None) -> Predictor:
    """Load a model written by `learn.export(path)` (checked first: loading never runs code from the file)."""
    program, meta = read_export(path)
    try:
        return Predictor(program, meta, device=device)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{path}: its slowlearn.json record is incomplete or malformed ({type(e).__name__}: {e}). "
                          f"Export the model again.") from None
