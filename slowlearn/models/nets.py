"""Models: convolution blocks, the seed CNN, a ResNet for small images, an MLP, and `summary`."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from ..randomness import peek_batch
from .init import GeneralReLU, init_weights

__all__ = ["data_shape", "conv_block", "seed_cnn", "seed_cnn_fits", "get_kaiming_initialized_model",
           "get_kaiming_initalized_model",
           "ResBlock", "resnet", "MLP"]


def data_shape(dls) -> tuple[int, int | None]:
    """The input channels and the number of classes (None when the loaders name no classes) of `dls`'s images:
    what a model for them must take and give. slowlearn's loaders know their items' shape; another loader is
    asked for a batch, with the random states (its order, augmentation) put back afterwards."""
    shape = getattr(dls.train, "item_shape", None) or tuple(peek_batch(dls)[0].shape[1:])
    classes = getattr(dls, "classes", None)
    return int(shape[0]), (len(classes) if classes else None)


def _sized(in_channels: int | None, n_classes: int | None, dls, owner: str) -> tuple[int, int]:
    """`in_channels` and `n_classes` as given, else from `dls` when given, else 1 and 10 (Fashion-MNIST's)."""
    channels, classes = data_shape(dls) if dls is not None else (1, 10)
    if n_classes is None and classes is None:
        raise ValueError(f"{owner}(dls=...): these loaders name no classes (dls.classes): pass n_classes=")
    return (in_channels if in_channels is not None else channels), (n_classes if n_classes is not None else classes)


def _check_maker(maker, arg: str) -> None:
    """`act=` and `norm=` make a new layer each time they are called; a layer itself cannot be called so."""
    if isinstance(maker, nn.Module):
        name = type(maker).__name__
        raise TypeError(f"{arg}={maker!r} is a layer: give what makes one, as each use needs its own, e.g. "
                        f"{arg}={name} or {arg}=functools.partial({name}, ...) with its arguments")


def conv_block(ni: int, nf: int, ks: int = 3, stride: int = 2, act: Callable[[], nn.Module] | None = nn.ReLU,
               norm: Callable[[int], nn.Module] | None = None, bias: bool | None = None) -> nn.Sequential:
    """Conv (padding `ks // 2`), then `norm(nf)` if given, then `act()` if given. The conv has a bias
    only when there is no norm layer (a norm's shift makes it redundant), unless `bias` says otherwise."""
    _check_maker(act, "act")
    _check_maker(norm, "norm")
    if bias is None:
        bias = norm is None
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)]
    if norm is not None:
        layers.append(norm(nf))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def seed_cnn(act: Callable[[], nn.Module] = nn.ReLU, nfs: tuple[int, ...] = (8, 16, 32, 64),
             n_classes: int | None = None, in_channels: int | None = None,
             norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d, dls=None) -> nn.Sequential:
    """The seeds' CNN for 28x28 images: a 5x5 stride-2 conv, stride-2 3x3 convs through `nfs`, and a
    last stride-2 conv to `n_classes` logits (28 -> 14 -> 7 -> 4 -> 2 -> 1). `in_channels` and `n_classes`
    default to those of `dls` when given (`seed_cnn(dls=dls)`), else 1 and 10."""
    in_channels, n_classes = _sized(in_channels, n_classes, dls, "seed_cnn")
    layers = [conv_block(in_channels, nfs[0], ks=5, act=act, norm=norm)]
    layers += [conv_block(ni, nf, act=act, norm=norm) for ni, nf in zip(nfs, nfs[1:])]
    layers += [conv_block(nfs[-1], n_classes, act=None, norm=None, bias=True), nn.Flatten()]
    return nn.Sequential(*layers)


def seed_cnn_fits(size: tuple[int, int], nfs: tuple[int, ...] = (8, 16, 32, 64)) -> bool:
    """Whether `seed_cnn(nfs=nfs)` reduces h x w images to 1x1, so gives one logit per class: each of its
    len(nfs) + 1 stride-2 convs halves the size (rounding up), so sides up to 2 ** (len(nfs) + 1) fit."""
    return max(size) <= 2 ** (len(nfs) + 1)


def get_kaiming_initialized_model(leak: float = 0.1) -> nn.Sequential:
    """The seed's best Fashion-MNIST model: `seed_cnn` with GeneralReLU(leak), BatchNorm, Kaiming init."""
    model = seed_cnn(act=partial(GeneralReLU, leak=leak))
    model.apply(partial(init_weights, leak=leak))
    return model


get_kaiming_initalized_model = get_kaiming_initialized_model  # the seed's spelling


class ResBlock(nn.Module):
    """Two convs plus a shortcut: act(convs(x) + idconv(pool(x))).

    The shortcut average-pools when `stride` > 1 and uses a 1x1 conv when the channel count changes.
    """

    def __init__(self, ni: int, nf: int, stride: int = 1, ks: int = 3, act: Callable[[], nn.Module] = nn.ReLU,
                 norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d):
        super().__init__()
        self.convs = nn.Sequential(conv_block(ni, nf, ks, stride=1, act=act, norm=norm),
                                   conv_block(nf, nf, ks, stride=stride, act=None, norm=norm))
        self.idconv = nn.Identity() if ni == nf else conv_block(ni, nf, ks=1, stride=1, act=None, norm=norm)
        self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(stride, ceil_mode=True)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.idconv(self.pool(x)))


def resnet(nfs: Sequence[int] = (16, 32, 64, 128, 256), in_channels: int | None = None, n_classes: int | None = None,
           act: Callable[[], nn.Module] = nn.ReLU, norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
           leak: float = 0., dls=None) -> nn.Sequential:
    """A ResNet for small images (28x28 Fashion-MNIST, 32x32 CIFAR-10): a stride-1 ResBlock to
    `nfs[0]`, stride-2 ResBlocks through `nfs`, global average pooling and a linear head.
    Kaiming-initialised for a leaky ReLU of slope `leak`. `in_channels` and `n_classes` default to those
    of `dls` when given (`resnet(dls=dls)`: 3 channels and 4 outputs for a folder of 4 classes of colour
    images), else 1 and 10 (Fashion-MNIST's)."""
    in_channels, n_classes = _sized(in_channels, n_classes, dls, "resnet")
    layers = [ResBlock(in_channels, nfs[0], ks=5, act=act, norm=norm)]
    layers += [ResBlock(ni, nf, stride=2, act=act, norm=norm) for ni, nf in zip(nfs, nfs[1:])]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(nfs[-1], n_classes)]
    model = nn.Sequential(*layers)
    model.apply(partial(init_weights, leak=leak))
    return model


class MLP(nn.Sequential):
    """Flatten, then Linear + activation through `hidden_dims`, then a Linear to `out_dim`."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int,
                 act: Callable[[], nn.Module] = nn.ReLU):
        _check_maker(act, "act")
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = [nn.Flatten()]
        for ni, nf in zip(dims, dims[1:]):
            layers += [nn.Linear(ni, nf), act()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim))






