"""Models: convolution blocks and the seed CNN."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .init import GeneralReLU, init_weights

__all__ = ["conv_block", "seed_cnn", "get_kaiming_initialized_model", "get_kaiming_initalized_model"]


def conv_block(ni: int, nf: int, ks: int = 3, stride: int = 2, act: Callable[[], nn.Module] | None = nn.ReLU,
               norm: Callable[[int], nn.Module] | None = None, bias: bool | None = None) -> nn.Sequential:
    """Conv (padding `ks // 2`), then `norm(nf)` if given, then `act()` if given. The conv has a bias
    only when there is no norm layer (a norm's shift makes it redundant), unless `bias` says otherwise."""
    if bias is None:
        bias = norm is None
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)]
    if norm is not None:
        layers.append(norm(nf))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def seed_cnn(act: Callable[[], nn.Module] = nn.ReLU, nfs: tuple[int, ...] = (8, 16, 32, 64), n_classes: int = 10,
             in_channels: int = 1, norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d) -> nn.Sequential:
    """The seeds' CNN for 28x28 images: a 5x5 stride-2 conv, stride-2 3x3 convs through `nfs`, and a
    last stride-2 conv to `n_classes` logits (28 -> 14 -> 7 -> 4 -> 2 -> 1)."""
    layers = [conv_block(in_channels, nfs[0], ks=5, act=act, norm=norm)]
    layers += [conv_block(ni, nf, act=act, norm=norm) for ni, nf in zip(nfs, nfs[1:])]
    layers += [conv_block(nfs[-1], n_classes, act=None, norm=None, bias=True), nn.Flatten()]
    return nn.Sequential(*layers)


def get_kaiming_initialized_model(leak: float = 0.1) -> nn.Sequential:
    """The seed's best Fashion-MNIST model: `seed_cnn` with GeneralReLU(leak), BatchNorm, Kaiming init."""
    model = seed_cnn(act=partial(GeneralReLU, leak=leak))
    model.apply(partial(init_weights, leak=leak))
    return model


get_kaiming_initalized_model = get_kaiming_initialized_model  # the seed's spelling
