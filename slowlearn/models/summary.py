"""`summary`: a model's layers on a batch, with output shapes, parameters and FLOPs per sample."""
from __future__ import annotations

import sys

import torch
from torch import nn

from ..device import model_device
from ..display import format_table
from ..randomness import peek_batch

__all__ = ["summary", "Summary"]


class Summary(list):
    """`summary`'s rows (dicts). As a notebook cell's value it shows the table, unless that cell printed it
    already (`printed_in`: the cell's execution count); a later cell that asks for it shows it again."""
    printed_in: int | None = None

    def _ipython_display_(self) -> None:
        if self.printed_in is None or self.printed_in != _notebook_cell():
            print(format_table(self))


def _notebook_cell() -> int | None:
    """The execution count of the notebook cell running now (None outside IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return getattr(shell, "execution_count", None)


def summary(learn_or_model, xb: torch.Tensor | None = None, depth: int = 1, print_table: bool = True) -> Summary:
    """One row per module down to `depth` levels of nesting (1: the top-level layers; nested ones are
    indented under their parent): output shape, parameters (all, trainable, frozen) and MFLOPs per
    sample (torch's FlopCounterMode), for a Learner (on a batch of its training data) or a model and a
    batch `xb`. The last row is the whole model. Runs the model once in eval mode, without gradients,
    and restores its mode; taking a Learner's batch leaves the random states (the loaders' order, augmentation)
    as they were, so a seeded fit is the same with or without a summary first. Prints the rows as a table
    (unless `print_table=False`) and returns them."""
    from torch.utils.flop_counter import FlopCounterMode  # imports triton where installed: only when used
    if depth < 1:
        raise ValueError(f"depth must be at least 1 (the top-level layers), got {depth}")
    model = getattr(learn_or_model, "model", learn_or_model)
    if xb is None:
        xb = peek_batch(learn_or_model.dls)[0]
    xb = xb.to(model_device(model))
    modules = [(name, m) for name, m in model.named_modules() if name and name.count(".") < depth]
    shapes, hooks = {}, []

    def record_shape(name):
        def hook(module, inputs, output):
            shapes[name] = "x".join(map(str, output.shape[1:])) if isinstance(output, torch.Tensor) else ""
        return hook

    for name, m in modules:
        hooks.append(m.register_forward_hook(record_shape(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(xb)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    rows = Summary({"layer": "  " * name.count(".") + f"{name.rsplit('.', 1)[-1]}: {type(m).__name__}",
                    "output": shapes.get(name, ""), **_param_counts(m),
                    "MFLOPs": flops.get(f"{root}.{name}", 0) / len(xb) / 1e6} for name, m in modules)
    rows.append({"layer": "total", "output": "", **_param_counts(model),
                 "MFLOPs": flops.get("Global", 0) / len(xb) / 1e6})
    if print_table:
        print(format_table(rows))
        rows.printed_in = _notebook_cell()
    return rows


def _param_counts(module: nn.Module) -> dict[str, int]:
    params = list(module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"params": sum(p.numel() for p in params), "trainable": trainable,
            "frozen": sum(p.numel() for p in params) - trainable}
