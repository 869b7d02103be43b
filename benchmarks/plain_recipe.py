"""A speed recipe of `slowlearn.recipes` written as a plain PyTorch loop: what `run_recipe` does, without
a Learner or callbacks, for `benchmarks/speedrun.py`'s framework ratio.

Same recipe, step for step: the model (`speed_net`, its first conv whitened from the same 5000 random
training images, all built after `set_seed(seed)`), the same loaders with the same `BatchAugment` (the data
path is shared), torch's Nesterov SGD over the two param groups the Learner's default splitter makes
(body, head), the lr of `triangular_lr` set before every batch from the fraction of training done
(`ParamSchedulerCB`), the BatchNorm shifts' gradients multiplied after backward (`GradientMultiplierCB`), Lookahead
after every 5th step and at the end of training (`LookaheadCB`), label smoothing, the precision and layout
`speed_settings` picks for the model (`speed_cbs` does the same: bf16 autocast around forward and loss;
channels-last model and training batches), `zero_grad(set_to_none=True)`, and the final flip-TTA accuracy
computed as `get_preds(tta=True)` does (under the same autocast). Same seed, same device: the same weights as
`run_recipe` (bitwise on a CPU).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slowlearn import default_device, set_seed
from slowlearn.callbacks import batchnorm_shifts
from slowlearn.data import BatchAugment, DataLoaders
from slowlearn.hardware import speed_settings
from slowlearn.models import speed_net, whiten_first_conv
from slowlearn.recipes import RecipeConfig, lookahead_alpha, triangular_lr


@dataclass
class PlainResult:
    """The trained model, its flip-TTA test accuracy, the seconds from the first batch to that accuracy
    (as `RecipeResult`), the precision it trained in, and, with `valid=True`, each epoch's test accuracy
    (no TTA)."""
    model: nn.Module
    accuracy: float
    seconds: float
    precision: str
    curve: list[float] = field(default_factory=list)


def plain_recipe(config: RecipeConfig, dls: DataLoaders, seed: int = 0, precision: str = "auto",
                 valid: bool = False) -> PlainResult:
    """`run_recipe(config, dls, seed, precision, valid=valid)` by hand."""
    set_seed(seed)
    start = time.perf_counter()
    device = default_device()
    dls.train.aug = BatchAugment(pad=config.pad, flip=config.flip)
    model = speed_net(config.in_channels, config.widths, n_classes=len(dls.classes), patch=config.whiten_patch)
    pick = torch.randperm(len(dls.train.x))[:5000].to(dls.train.x.device)
    whiten_first_conv(model[0], dls.train.normalise(dls.train.x[pick]).cpu())
    settings = speed_settings(model, device, precision, verbose=False)
    if settings.precision not in ("fp32", "bf16"):
        raise NotImplementedError(f"the plain recipe runs in fp32 or bf16, not {settings.precision}")
    bf16, channels_last = settings.precision == "bf16", settings.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    head = list(model[-2].parameters())  # the Linear: default_splitter's last group
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    opt = torch.optim.SGD([{"params": body, "lr": config.lr}, {"params": head, "lr": config.lr}], lr=config.lr,
                          momentum=config.mom, nesterov=True, weight_decay=config.wd, foreach=True)
    lr_at = triangular_lr(config.lr, config.pct_warmup, end=config.lr_end)
    shifts = batchnorm_shifts(model)
    live = [v.detach() for v in model.state_dict(keep_vars=True).values() if v.is_floating_point()]
    slow = [v.clone() for v in live]

    def lookahead(alpha: float) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(slow, live, alpha)
            torch._foreach_copy_(live, slow)

    curve, n_batches, steps = [], len(dls.train), 0
    for epoch in range(config.epochs):
        model.train()
        for i, (xb, yb) in enumerate(dls.train):
            pct = (epoch + i / n_batches) / config.epochs
            lr = lr_at(pct)
            for group in opt.param_groups:
                group["lr"] = lr
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            xb, yb = xb.to(device), yb.to(device)  # no copy when the loader is on the device
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(xb), yb, label_smoothing=config.label_smoothing)
            loss.backward()
            if config.bn_shift_lr_mult != 1:
                torch._foreach_mul_([p.grad for p in shifts], config.bn_shift_lr_mult)
            opt.step()
            steps += 1
            if config.lookahead and steps % 5 == 0:
                lookahead(lookahead_alpha(pct))
            opt.zero_grad(set_to_none=True)
        if config.lookahead and epoch == config.epochs - 1:
            lookahead(0.)
        if valid:
            curve.append(accuracy(model, dls.valid, device, bf16, channels_last=channels_last))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # evaluated as trained
        final = accuracy(model, dls.valid, device, bf16, tta=True)
    return PlainResult(model, final, time.perf_counter() - start, settings.precision, curve)


@torch.no_grad()
def accuracy(model: nn.Module, dl, device: torch.device, bf16: bool, tta: bool = False,
             channels_last: bool = False) -> float:
    """Test accuracy in eval mode. Without `tta`: as the Learner's validation phase (the batches in the
    training layout, under autocast). With `tta`: as `get_preds(tta=True)` (softmax of each image and of
    its mirror, averaged; the batches as the loader gives them; autocast is the caller's)."""
    model.eval()
    preds, targets = [], []
    for xb, yb in dl:
        xb, yb = xb.to(device), yb.to(device)
        if tta:
            out = model(xb).float().softmax(-1)
            preds.append((out + model(xb.flip(-1)).float().softmax(-1)) / 2)
        else:
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                preds.append(model(xb))
        targets.append(yb)
    model.train()
    correct = torch.cat(preds).argmax(-1).cpu() == torch.cat(targets).cpu()
    return correct.float().mean().item()
