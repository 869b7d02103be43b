"""Parameter groups: discriminative learning rates, freezing, and fastai's `fine_tune` recipe.

A splitter maps the model to lists of parameters, from the input side to the output side; each list
becomes one param group of the optimizer. `lr` can then be one number (every group), `slice(lo, hi)`
(spread geometrically from the first group to the last), `slice(hi)` (hi/10 for every group but the
last, hi for the last, as fastai) or one lr per group. Freezing a group turns off its parameters'
gradients (`requires_grad=False`), so the optimizer keeps no state for them and never changes them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .arguments import check_range
from .device import bare_model

__all__ = ["default_splitter", "geometric", "group_lrs", "check_lr", "stays_in_eval", "param_groups", "make_optimizer",
           "set_lr", "freeze_to", "frozen_state", "load_frozen_state"]

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def default_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Everything but the last layer, and the last layer: the last module (in registration order) with
    parameters of its own, usually the head. A model with a single such module is one group."""
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    if not owners:
        return [list(model.parameters())]
    head = list(owners[-1].parameters(recurse=False))
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    return [body, head] if body else [head]


def geometric(start: float, end: float, pct: float) -> float:
    """The point `pct` of the way from `start` to `end` (both > 0) on a log scale: lrs spread over param
    groups, exponential schedules (`sched_exp`) and the lr finder's sweep all step this way."""
    return start * (end / start) ** pct


def group_lrs(lr: float | slice | Sequence[float], n_groups: int) -> list[float]:
    """One lr per group from a number, a `slice(lo, hi)` (geometric from lo to hi), a `slice(hi)` (hi/10
    for all groups but the last), or a sequence with one lr per group."""
    if isinstance(lr, slice):
        if lr.stop is None or lr.step is not None:
            raise ValueError(f"lr=slice(lo, hi) or slice(hi) spreads lrs over the param groups; got {lr}")
        hi = float(lr.stop)  # plain floats: numpy scalars in param groups would make checkpoints unloadable
        if lr.start is None:
            return [hi / 10] * (n_groups - 1) + [hi]
        if n_groups == 1:
            return [hi]
        lo = float(lr.start)
        return [geometric(lo, hi, i / (n_groups - 1)) for i in range(n_groups)]
    if isinstance(lr, Sequence):
        if len(lr) != n_groups:
            raise ValueError(f"Got {len(lr)} lrs for {n_groups} param groups: give one per group, one number, "
                             f"or slice(lo, hi)")
        return [float(v) for v in lr]
    return [float(lr)] * n_groups


def check_lr(lr: float | slice | Sequence[float], owner: str, name: str = "lr") -> None:
    """Every lr that `lr` gives (a number, a slice's ends, a sequence's items) must be a finite number >= 0,
    and a slice's `lo` > 0 (the lrs are spread geometrically from it). A string is not a sequence of lrs, nor is a
    named tuple such as lr_find's `SuggestedLRs(valley, steep)`."""
    if hasattr(lr, "_fields"):
        raise ValueError(f"{owner}: {name}={lr!r} is a named tuple, not one lr per param group: pass one of its "
                         f"values, e.g. {name}=suggestion.{lr._fields[0]}")
    if isinstance(lr, slice):
        if lr.start is not None:
            check_range(f"lo of {name}=slice(lo, hi)", lr.start, 0., low_open=True, owner=owner)
        values = [lr.stop] if lr.stop is not None else []
    else:
        values = list(lr) if isinstance(lr, Sequence) and not isinstance(lr, (str, bytes)) else [lr]
    for value in values:
        check_range(name, value, 0., owner=owner)


def param_groups(learn) -> list[list[nn.Parameter]]:
    """The splitter's groups of the (unwrapped) model, checked: every parameter in exactly one group."""
    groups = [list(g) for g in learn.splitter(bare_model(learn.model))]
    groups = [g for g in groups if g]
    seen = [id(p) for g in groups for p in g]
    every = {id(p) for p in learn.model.parameters()}
    if len(seen) != len(set(seen)) or set(seen) != every:
        raise ValueError(f"The splitter must put every parameter of the model in exactly one group; it gave "
                         f"{len(seen)} parameters ({len(seen) - len(set(seen))} repeated) for a model with "
                         f"{len(every)}")
    return groups


def make_optimizer(learn) -> torch.optim.Optimizer:
    """`opt_func` over the splitter's groups, each with its lr from `learn.lr` (see `group_lrs`)."""
    groups = learn.param_groups()
    lrs = group_lrs(learn.lr, len(groups))
    return learn.opt_func([{"params": g, "lr": lr} for g, lr in zip(groups, lrs)], lrs[-1])


def set_lr(learn, lr: float | slice | Sequence[float]) -> None:
    """Set `learn.lr` and every param group's lr from it (a number, a slice or one lr per group); an
    `lr` that does not fit the groups, or is not a finite number >= 0 (see `check_lr`), raises and changes nothing."""
    check_lr(lr, owner="set_lr")
    lrs = group_lrs(lr, len(learn.opt.param_groups) if learn.opt is not None else len(learn.param_groups()))
    learn.lr = lr
    if learn.opt is not None:
        for group, value in zip(learn.opt.param_groups, lrs):
            group["lr"] = value


def freeze_to(learn, n: int, train_bn: bool = True) -> None:
    """Freeze the param groups before group `n` (negative counts from the end) and unfreeze the rest.

    Frozen parameters get no gradient and their optimizer state is dropped, so they stay bitwise
    the same. With `train_bn` (fastai's default), BatchNorm layers in frozen groups keep training
    (weights and running statistics): a pretrained body then adapts its normalisation to the new
    data, which usually helps. `train_bn=False` freezes them too, statistics included (those
    layers run in eval mode until unfrozen). `n` is an integer from -len(groups) (nothing frozen) to len(groups)
    (every group); another is refused before anything changes.
    """
    groups = learn.param_groups()
    try:
        check_range("n", n, -len(groups), len(groups), high_open=False, integer=True, owner="freeze_to")
    except ValueError as e:
        raise ValueError(f"{e}: the splitter gives this model {len(groups)} param groups, and freeze_to(n) freezes "
                         f"those before group n (negative counts from the end: freeze() is freeze_to(-1))") from None
    frozen = {id(p) for g in groups[:n] for p in g}
    model = bare_model(learn.model)
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES) and
             any(id(p) in frozen for p in m.parameters(recurse=False))]
    keep_training = {id(p) for m in norms for p in m.parameters(recurse=False)} if train_bn else set()
    for p in model.parameters():
        trainable = id(p) not in frozen or id(p) in keep_training
        p.requires_grad_(trainable)
        if not trainable:
            p.grad = None
            if learn.opt is not None:
                learn.opt.state.pop(p, None)
    _keep_in_eval(learn, [] if train_bn else norms)


def _keep_in_eval(learn, norms) -> None:
    for hook in getattr(learn, "_frozen_bn_hooks", ()):
        hook.remove()
    learn._frozen_bn_hooks = [m.register_forward_pre_hook(_stay_in_eval) for m in norms]


def frozen_state(learn) -> dict:
    """The names of the frozen parameters and of the BatchNorm layers kept in eval (for checkpoints)."""
    model = bare_model(learn.model)
    return {"params": [name for name, p in model.named_parameters() if not p.requires_grad],
            "eval_norms": [name for name, m in model.named_modules() if stays_in_eval(m)]}


def load_frozen_state(learn, state: dict) -> None:
    """Freeze what `frozen_state()` named, and unfreeze everything else."""
    model = bare_model(learn.model)
    frozen, eval_norms = set(state["params"]), set(state["eval_norms"])
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
        if name in frozen:
            p.grad = None
            if learn.opt is not None:
                learn.opt.state.pop(p, None)
    _keep_in_eval(learn, [m for name, m in model.named_modules() if name in eval_norms])




def _stay_in_eval(module: nn.Module, args) -> None:
    module.eval()


def stays_in_eval(module: nn.Module) -> bool:
    """Whether `module` is a BatchNorm layer that `freeze(train_bn=False)` keeps in eval mode, whatever
    mode the model is put in: its running statistics are frozen."""
    return any(hook is _stay_in_eval for hook in module._forward_pre_hooks.values())
