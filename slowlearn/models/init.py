"""Initialisation: GeneralReLU, Kaiming init, LSUV, a from-scratch BatchNorm, and seeding every RNG."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralReLU", "init_weights", "lsuv_init", "BatchNorm"]

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class GeneralReLU(nn.Module):
    """ReLU with options: `leak` (leaky slope), `sub` (subtracted after), `maxv` (clamped above).

    >>> GeneralReLU(leak=0.1, sub=0.4, maxv=2.)(torch.tensor([-1., 0., 1., 5.]))
    tensor([-0.5000, -0.4000,  0.6000,  2.0000])
    """

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def init_weights(m: nn.Module, leak: float = 0.) -> None:
    """Kaiming-normal weights (gain for a leaky ReLU of slope `leak`) and zero bias for conv and linear
    layers; use as `model.apply(partial(init_weights, leak=0.1))`."""
    if isinstance(m, WEIGHT_LAYERS):
        nn.init.kaiming_normal_(m.weight, a=leak)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@torch.no_grad()
def lsuv_init(model: nn.Module, xb: torch.Tensor, modules: list[nn.Module] | None = None, tol: float = 1e-3,
              max_iter: int = 10) -> nn.Module:
    """Layer-sequential unit variance (Mishkin & Matas, 2015): in forward order, rescale each layer's
    weight and shift its bias until its output on `xb` has |mean| < tol and |std - 1| < tol.

    `modules` defaults to every conv and linear layer. A layer without bias (a convolution followed
    by BatchNorm, as in the seed CNN) only has its variance scaled: its mean is left to the BatchNorm
    after it, which removes any mean anyway. A layer's output is an affine function of its weight
    and bias, so one correction w <- w/std, b <- (b - mean)/std nearly always suffices; the loop
    re-measures because earlier layers feed later ones. BatchNorm running statistics are left as they
    were. Raises RuntimeError, naming the layer, when it cannot: a layer the forward pass does not use (checked
    before any change), an output with no variance, or no convergence within `max_iter` passes. Returns the model.
    """
    modules = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)] if modules is None else modules
    names = {m: name for name, m in model.named_modules()}
    for m in modules:
        if not isinstance(getattr(m, "weight", None), torch.Tensor):
            raise RuntimeError(f"lsuv_init: '{names.get(m, type(m).__name__)}' has no weight to rescale; pass "
                               f"layers such as conv or linear layers in `modules=`")
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # forward passes move BatchNorm's
    try:
        _check_used(model, modules, names, xb)
        for m in modules:
            _unit_variance(model, m, names.get(m, type(m).__name__), xb, tol, max_iter)
    finally:
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return model


def _check_used(model: nn.Module, modules: list[nn.Module], names: dict, xb: torch.Tensor) -> None:
    """Every layer of `modules` runs in the forward pass on `xb` (an auxiliary head may not): else no output of
    it can be measured."""
    used = set()
    hooks = [m.register_forward_hook(lambda mod, inputs, output: used.add(mod)) for m in modules]
    try:
        model(xb)
    finally:
        for h in hooks:
            h.remove()
    unused = [names.get(m, type(m).__name__) for m in modules if m not in used]
    if unused:
        raise RuntimeError(f"lsuv_init: {', '.join(map(repr, unused))} not used by the model's forward pass on this "
                           f"batch, so its output cannot be measured; pass the layers to initialise in `modules=`")


def _unit_variance(model: nn.Module, m: nn.Module, name: str, xb: torch.Tensor, tol: float, max_iter: int) -> None:
    has_bias = getattr(m, "bias", None) is not None

    def done(mean: float, std: float) -> bool:
        return abs(std - 1) < tol and (abs(mean) < tol or not has_bias)

    for _ in range(max_iter):
        mean, std = _output_stats(model, m, xb)
        if done(mean, std):
            return
        if std < 1e-8:
            raise RuntimeError(f"lsuv_init: layer '{name}' outputs a constant on this batch (std {std:.2e}): "
                               f"its variance cannot be scaled to 1")
        m.weight.div_(std)
        if has_bias:
            m.bias.sub_(mean).div_(std)
    mean, std = _output_stats(model, m, xb)
    if not done(mean, std):
        raise RuntimeError(f"lsuv_init: layer '{name}' did not reach |mean| < {tol} and |std - 1| < {tol} "
                           f"in {max_iter} passes (mean {mean:.3g}, std {std:.3g})")


def _output_stats(model: nn.Module, module: nn.Module, xb: torch.Tensor) -> tuple[float, float]:
    out = {}

    def keep_output(mod, inputs, output):
        out["o"] = output

    handle = module.register_forward_hook(keep_output)
    try:
        model(xb)
    finally:
        handle.remove()
    std, mean = torch.std_mean(out["o"].float())
    return mean.item(), std.item()


class BatchNorm(nn.Module):
    r"""Batch normalisation from scratch, equal to `nn.BatchNorm1d/2d/3d` (channels on dim 1).

    Training: normalise with the batch's mean and (biased) variance over every dim but the channels,
    and update the running statistics with the unbiased variance:
    running <- (1 - mom) * running + mom * batch. Evaluation: normalise with the running statistics.
    Then y = weight * x_hat + bias.
    """

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.mom, self.eps = mom, eps
        self.weight, self.bias = nn.Parameter(torch.ones(nf)), nn.Parameter(torch.zeros(nf))
        self.register_buffer("running_mean", torch.zeros(nf))
        self.register_buffer("running_var", torch.ones(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            dims = [0] + list(range(2, x.ndim))
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.mom)
                self.running_var.lerp_(var * n / (n - 1), self.mom)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt()
        return x_hat * self.weight.reshape(shape) + self.bias.reshape(shape)


