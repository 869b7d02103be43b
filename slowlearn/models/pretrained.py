"""Pretrained architectures for transfer learning: a torchvision or timm body that keeps its pretrained weights, a
new head with one output per class, the statistics the weights were trained with, and a splitter that gives
discriminative learning rates something to do. `slowlearn.vision_learner` makes a Learner of them.

`arch` is a torchvision classification model's name ("resnet18", "convnext_tiny"; detection, segmentation, video
and other models are refused), a torchvision builder (`torchvision.models.resnet34`), or "timm:<name>" for any timm
model ("timm:convnext_atto", "timm:resnet18.a1_in1k"). googlenet and inception_v3 come without their auxiliary heads.
Weights come from where torchvision and timm keep them, or from a file (`weights.py`).

The model is `nn.Sequential(body=..., head=...)`. Two heads (`head=`):

- "linear" (the default): the architecture's own pooling, and whatever it has between pooling and classifier (a
  ConvNeXt's LayerNorm, an EfficientNet's dropout), stay in the body; its last Linear layer is replaced by a new
  `Linear(features, n_out)`.
- "concat": fastai's head. The body is cut before its pooling; the head concatenates max and average pooling,
  then BatchNorm, dropout 0.25, Linear to 512, ReLU, BatchNorm, dropout 0.5, Linear to `n_out` (CNNs only).

Why "linear" by default: it works for every architecture (a ViT or a Swin gives no feature map to concat-pool), it
keeps the layers the body was trained with in front of its classifier, and from a few hundred images it has
`n_out x features` weights to learn (2,565 for 5 classes on a ResNet-18) where the concat head has about 530,000
(1024 x 512 + 512 x 5), which a small data set overfits. fastai's concat head was made for larger data sets;
`benchmarks/fine_tune.py --heads linear concat` measures both on a few hundred CIFAR-10 images.

Either head is initialised as slowlearn initialises layers (`init_weights`: Kaiming-normal, zero bias).
Grayscale data given to a 3-channel body: the first convolution's weights are summed over their input channels
(as timm does), and the statistics are averaged over the channels. A weights file whose first convolution takes
fewer channels than the data (a grayscale model's, for RGB images) has it repeated and scaled the same way, for
torchvision and timm bodies alike.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .init import init_weights
from .weights import read_state_dict, timm_weights_file, torchvision_weights_file

__all__ = ["HEADS", "DEFAULT_HEAD", "Pretrained", "pretrained_model", "pretrained_splitter", "concat_pool_head",
           "AdaptiveConcatPool2d", "adapt_first_conv", "arch_name"]

HEADS = ("linear", "concat")
DEFAULT_HEAD = "linear"  # see the module's docs for why
PROBE_SIDE = 64  # side of the blank image that finds a cut body's feature channels (concat head)


@dataclass
class Pretrained:
    """A model made by `pretrained_model`, with what the data must look like for it: `mean` and `std` (one per
    input channel) and the side `size` its weights were trained at (None for random weights, and for a weights
    file: its statistics are taken to be the architecture's published weights', which `stats=` overrides, but the
    size it was trained at is not known)."""
    model: nn.Sequential
    name: str
    mean: list[float] | None = None
    std: list[float] | None = None
    size: int | None = None


def arch_name(arch: str | Callable) -> str:
    """How an `arch` is named in messages: "resnet18", "timm:convnext_atto"."""
    return arch if isinstance(arch, str) else getattr(arch, "__name__", type(arch).__name__)


def pretrained_model(arch: str | Callable, n_out: int, in_channels: int = 3, pretrained: bool = True,
                     weights=None, head: str = DEFAULT_HEAD) -> Pretrained:
    """`arch`'s body with pretrained weights (from torchvision's or timm's cache, or `weights`: a file, or a
    torchvision weights enum member) or random ones (`pretrained=False`), and a new head of `n_out` outputs.
    A weights file may also be `learn.model.state_dict()` of an earlier vision_learner model: its body is used."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: use one of {HEADS}")
    if weights is not None and not pretrained:
        raise ValueError(f"pretrained=False with weights={weights!r}: pass one of them (weights= loads pretrained "
                         f"weights, pretrained=False starts from random ones)")
    if isinstance(arch, str) and arch.startswith("timm:"):
        body, features, stats = _timm_body(arch.removeprefix("timm:"), in_channels, pretrained, weights, head)
    else:
        body, features, stats = _torchvision_body(arch, in_channels, pretrained, weights, head)
    new_head = concat_pool_head(features, n_out) if head == "concat" else nn.Linear(features, n_out)
    new_head.apply(init_weights)
    mean, std, size = stats if pretrained else (None, None, None)
    return Pretrained(nn.Sequential(OrderedDict(body=body, head=new_head)), arch_name(arch),
                      _per_channel(mean, in_channels), _per_channel(std, in_channels), size)


def _per_channel(values: Sequence[float] | None, channels: int) -> list[float] | None:
    """RGB statistics for `channels` channels: averaged for grayscale, repeated for more channels."""
    if values is None:
        return None
    values = [float(v) for v in values]
    if channels == len(values):
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    return [values[i % len(values)] for i in range(channels)]


class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling to 1x1, concatenated over the channels (fastai's): twice the channels in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)], dim=1)


def concat_pool_head(features: int, n_out: int, hidden: int = 512, p: float = 0.5) -> nn.Sequential:
    """fastai's head for a CNN body's feature maps of `features` channels: concat pooling, flatten, then BatchNorm,
    dropout p/2, Linear to `hidden`, ReLU, BatchNorm, dropout p, Linear to `n_out` (no biases before BatchNorm)."""
    return nn.Sequential(AdaptiveConcatPool2d(), nn.Flatten(),
                         nn.BatchNorm1d(2 * features), nn.Dropout(p / 2), nn.Linear(2 * features, hidden, bias=False),
                         nn.ReLU(inplace=True),
                         nn.BatchNorm1d(hidden), nn.Dropout(p), nn.Linear(hidden, n_out, bias=False))


def pretrained_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Param groups of a `pretrained_model`: a ResNet (torchvision's or timm's: a body with layer3 and layer4) in
    three, as fastai splits it: stem and layers 1-2, layers 3-4, head; any other body in two: body, head."""
    body, head = model.body, model.head
    if not (hasattr(body, "layer3") and hasattr(body, "layer4")):
        return [list(body.parameters()), list(head.parameters())]
    late = [*body.layer3.parameters(), *body.layer4.parameters()]
    late_ids = {id(p) for p in late}
    return [[p for p in body.parameters() if id(p) not in late_ids], late, list(head.parameters())]


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _conv_weight_for(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first convolution's weight made for `in_channels` channels, keeping what it computes on an image whose
    channels are all equal (timm's rule): one channel gets the weights summed over the input channels; more channels
    get them repeated and scaled by old/new channels."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


@torch.no_grad()
def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the model's first convolution take `in_channels` channels (`_conv_weight_for`'s rule)."""
    found = _first_conv(model)
    if found is None or found[1].in_channels == in_channels:
        return
    name, conv = found
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    new.weight.copy_(_conv_weight_for(conv.weight, in_channels))
    if conv.bias is not None:
        new.bias.copy_(conv.bias)
    _set_module(model, name, new)


# torchvision --------------------------------------------------------------------------------------------------

_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}  # see _drop_aux_heads


def _torchvision_builder(arch: str | Callable) -> Callable:
    """The builder of a torchvision classification model (or a builder of one's own); torchvision's detection,
    segmentation, video, optical flow and quantized models are refused, as are unknown names."""
    import torchvision.models as tvm
    classifiers = tvm.list_models(module=tvm)
    if callable(arch):
        own = not getattr(arch, "__module__", "").startswith("torchvision.models")
        if own or any(arch is tvm.get_model_builder(name) for name in classifiers):
            return arch
    elif arch in classifiers:
        return tvm.get_model_builder(arch)
    import difflib
    close = difflib.get_close_matches(arch_name(arch), classifiers, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"arch={arch_name(arch)!r} is not a torchvision classification model{hint}: give one of "
                     f"torchvision.models.list_models(module=torchvision.models), or 'timm:<name>' for a timm "
                     f"model")


def _default_weights(builder: Callable):
    import torchvision.models as tvm
    try:
        return tvm.get_model_weights(builder).DEFAULT
    except (ValueError, KeyError, AttributeError, TypeError):  # a builder of one's own, without weights
        return None


def _torchvision_body(arch, in_channels: int, pretrained: bool, weights, head: str):
    builder = _torchvision_builder(arch)
    name = arch_name(arch)
    from torchvision.models import WeightsEnum
    enum = weights if isinstance(weights, WeightsEnum) else _default_weights(builder)
    if pretrained and weights is None and enum is None:
        raise ValueError(f"torchvision has no pretrained weights for {name}: pass weights='path/to/file' or "
                         f"pretrained=False")
    if pretrained and (weights is None or isinstance(weights, WeightsEnum)):
        file = torchvision_weights_file(enum)
        with _torchvision_reads(file):  # the builder applies what the weights need (num_classes, transform_input..)
            model = builder(weights=enum)
        _drop_aux_heads(model, name)
    else:
        model = builder(weights=None)
        _drop_aux_heads(model, name)
        if weights is not None:
            _load_body(model, read_state_dict(_weights_path(weights)), name)
    adapt_first_conv(model, in_channels)
    stats = (None, None, None)
    if enum is not None:  # a weights file: the published weights' statistics, but not their size (see Pretrained)
        transforms = enum.transforms()
        published = weights is None or isinstance(weights, WeightsEnum)
        mean, std = _in_loader_stats(model, transforms.mean, transforms.std)
        stats = (mean, std, transforms.crop_size[0] if published else None)
    return (*_cut_torchvision(model, head, name, in_channels), stats)


def _in_loader_stats(model: nn.Module, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """The statistics for the loaders. googlenet and inception_v3 with torchvision's weights turn ImageNet-normalised
    input into input normalised with mean 0.5, std 0.5 inside the model (transform_input), which takes three
    channels only: the loaders normalise so instead, which computes the same."""
    if not getattr(model, "transform_input", False):
        return mean, std
    model.transform_input = False
    return [0.5] * len(mean), [0.5] * len(std)


def _drop_aux_heads(model: nn.Module, name: str) -> None:
    """googlenet's and inception_v3's auxiliary classifiers only help training from scratch, and make the model give
    a tuple in training mode, which no loss takes: they go (torchvision's aux_logits=False fails with weights)."""
    if name in _AUX_HEADS:
        model.aux_logits = False
        for aux in _AUX_HEADS[name]:
            setattr(model, aux, None)


def _weights_path(weights) -> str | os.PathLike:
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights={weights!r}: give a file (.pth, .pt or .safetensors state dict) or a torchvision "
                        f"weights enum member such as ResNet34_Weights.IMAGENET1K_V1")
    return weights


@contextmanager
def _torchvision_reads(file):
    """torchvision's builders fetch their weights with `torch.hub.load_state_dict_from_url`, which unpickles with
    weights_only=False: for this build, they get the cached file read safely instead."""
    from torchvision.models import _api
    original = _api.load_state_dict_from_url
    _api.load_state_dict_from_url = lambda url, *args, **kwargs: read_state_dict(file, url)
    try:
        yield
    finally:
        _api.load_state_dict_from_url = original


def _last_linear(model: nn.Module, name: str) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{name} has no Linear classifier layer to replace: vision_learner takes models that "
                         f"end in one (ResNets, ConvNeXts, EfficientNets, ViTs, ...)")
    return linears[-1]


def _load_body(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """A file's weights into `model`, all but its classifier's; a vision_learner model's file has its body used.
    A first convolution of another channel count in the file is taken as it is (then adapted to the data)."""
    if any(k.startswith("body.") for k in state):
        state = {k.removeprefix("body."): v for k, v in state.items() if k.startswith("body.")}
    head, _ = _last_linear(model, name)
    left_out = tuple(f"{module}." for module in (head, *_AUX_HEADS.get(name, ())))
    state = {k: v for k, v in state.items() if not k.startswith(left_out)}
    conv = _first_conv(model)
    if conv is not None and conv[0] + ".weight" in state:
        adapt_first_conv(model, state[conv[0] + ".weight"].shape[1])
    head_keys = {head + ".weight", head + ".bias"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise _does_not_fit("The weights file", name, missing, unexpected)


def _does_not_fit(file: str, name: str, missing: list[str], unexpected: list[str]) -> ValueError:
    """The error for a weights file whose keys are not the model's: the first few keys it lacks and has over."""
    return ValueError(f"{file} does not fit {name}: " + "; ".join(
        f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys) +
        " (is it the weights of another architecture?)")


def _feature_channels(body: nn.Module, in_channels: int, name: str) -> int:
    """The channels of the feature maps a cut body gives (a blank image through it, in eval mode)."""
    was_training = body.training
    try:
        with torch.no_grad():
            out = body.eval()(torch.zeros(1, in_channels, PROBE_SIDE, PROBE_SIDE))
    except Exception:
        out = None
    finally:
        body.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ValueError(f"head='concat' pools feature maps, and {name}'s body gives none (it is not a CNN, or "
                         f"takes other image sizes): use head='linear'")
    return out.shape[1]


def _cut_torchvision(model: nn.Module, head: str, name: str, in_channels: int) -> tuple[nn.Module, int]:
    """The body and its output features: for a linear head the whole model with its last Linear taken out; for
    the concat head its top-level layers before the last pooling layer (or before the classifier)."""
    head_name, linear = _last_linear(model, name)
    if head == "linear":
        _set_module(model, head_name, nn.Identity())
        return model, linear.in_features
    children = list(model.named_children())
    pools = [i for i, (n, _) in enumerate(children) if "pool" in n]
    cut = pools[-1] if pools else next(i for i, (n, _) in enumerate(children) if head_name.split(".")[0] == n)
    body = nn.Sequential(OrderedDict(children[:cut]))
    return body, _feature_channels(body, in_channels, name)


# timm ---------------------------------------------------------------------------------------------------------

class _TimmLoadKeys(logging.Filter):
    """Takes timm's log records of the keys a load missed or did not use, and lets the others through as the logger
    would have at `level`."""

    def __init__(self, level: int):
        super().__init__()
        self.level, self.missing, self.unexpected = level, [], []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for prefix, keys in (("Missing keys (", self.missing), ("Unexpected keys (", self.unexpected)):
            if message.startswith(prefix):
                keys.extend(message.removeprefix(prefix).split(")")[0].split(", "))
                return False
        return record.levelno >= self.level


@contextmanager
def _timm_load_keys():
    """timm loads pretrained weights non-strictly when it drops their classifier, and only logs the keys that the
    file lacks or has over: those are caught here, so a file of another model is an error rather than random or
    ignored layers. timm's other messages go on as before."""
    log = logging.getLogger("timm.models._builder")
    level, keys = log.level, _TimmLoadKeys(log.getEffectiveLevel())
    log.addFilter(keys)
    log.setLevel(logging.INFO)  # timm logs the missing keys at INFO
    try:
        yield keys
    finally:
        log.removeFilter(keys)
        log.setLevel(level)


def _first_conv_to_declared_channels(state: dict[str, torch.Tensor], cfg: dict, in_channels: int) -> None:
    """timm adapts a file's first convolution to the data's channels from the channels that its pretrained config
    declares (3), and refuses a file of other channels (a vision_learner model trained on grayscale images) unless
    they are the data's. Such a file's first convolution is made for the declared channels first, with the
    torchvision path's rule (for fewer channels only: more may be a space-to-depth stem's, which timm checks)."""
    channels = (cfg.get("input_size") or (3,))[0]
    convs = cfg.get("first_conv") or ()
    for conv in [convs] if isinstance(convs, str) else convs:
        weight = state.get(f"{conv}.weight")
        if weight is not None and weight.ndim == 4 and in_channels != weight.shape[1] < channels:
            state[f"{conv}.weight"] = _conv_weight_for(weight, channels)


def _timm_body(name: str, in_channels: int, pretrained: bool, weights, head: str):
    try:
        import timm
    except ImportError:
        raise ImportError(f"arch='timm:{name}' needs timm: pip install slowlearn[timm]") from None
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        raise ValueError(f"arch='timm:{name}' is not a timm model" +
                         (f" (models with that name in theirs: {', '.join(close)})" if close else ""))
    kwargs = dict(num_classes=0, in_chans=in_channels, **({"global_pool": ""} if head == "concat" else {}))
    if not pretrained:
        model = timm.create_model(name, **kwargs)
    else:
        cfg = timm.models.get_pretrained_cfg(name)
        file = _weights_path(weights) if weights is not None else timm_weights_file(cfg.to_dict() if cfg else {}, name)
        state = read_state_dict(file)
        if any(k.startswith("body.") for k in state):  # a vision_learner model's file
            state = {k.removeprefix("body."): v for k, v in state.items() if k.startswith("body.")}
        _first_conv_to_declared_channels(state, cfg.to_dict() if cfg else {}, in_channels)
        with _timm_load_keys() as keys:
            try:
                model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state),
                                          **kwargs)
            except RuntimeError as e:  # timm's check of the first convolution's channels
                if "inconsistent with input_size" not in str(e):
                    raise
                raise ValueError(f"The weights file {file} does not fit timm:{name}: {e} Pass the weights of a "
                                 f"model with at most 3 input channels, or pretrained=False") from None
        model.pretrained_cfg.pop("state_dict", None)  # else the model holds a second copy of the weights
        if keys.missing or keys.unexpected:
            raise _does_not_fit(f"The weights file {file}", f"timm:{name}", keys.missing, keys.unexpected)
    cfg = model.pretrained_cfg
    size = (cfg.get("input_size") or (None,))[-1] if weights is None else None  # a file's training size is unknown
    stats = (cfg.get("mean"), cfg.get("std"), size)
    if head == "concat":
        return model, _feature_channels(model, in_channels, f"timm:{name}"), stats
    return model, getattr(model, "head_hidden_size", None) or model.num_features, stats
