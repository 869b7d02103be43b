"""A small, fast CNN for short training budgets (in the spirit of airbench94, Jordan 2024), and the
patch-whitening initialisation of its first layer."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvGroup", "speed_net", "whiten_first_conv"]


def _batchnorm(nf: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(nf, momentum=0.4)  # fast-moving statistics: short runs change the weights quickly
    bn.weight.requires_grad_(False)  # a scale before a ReLU-like activation and BN of the next conv is redundant
    return bn


class ConvGroup(nn.Sequential):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU: the pool comes right after the first
    conv, so the second conv runs at a quarter of the pixels."""

    def __init__(self, ni: int, nf: int):
        super().__init__(nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.MaxPool2d(2), _batchnorm(nf), nn.GELU(),
                         nn.Conv2d(nf, nf, 3, padding=1, bias=False), _batchnorm(nf), nn.GELU())


def speed_net(in_channels: int = 3, widths: Sequence[int] = (64, 256, 256), n_classes: int = 10,
              patch: int = 2, scale: float = 1 / 9) -> nn.Sequential:
    """A stem conv of `patch` x `patch` (no padding; `2 * in_channels * patch**2` filters, see
    `whiten_first_conv`), one `ConvGroup` per width (each halves the image), a global max-pool and a
    bias-free linear head whose logits are multiplied by `scale`. Dirac-initialised convs (each starts
    close to passing its input through) train fast in few epochs."""
    n_stem = 2 * in_channels * patch ** 2
    layers: list[nn.Module] = [nn.Conv2d(in_channels, n_stem, patch), nn.GELU()]
    for ni, nf in zip((n_stem, *widths), widths):
        layers.append(ConvGroup(ni, nf))
    head = nn.Linear(widths[-1], n_classes, bias=False)
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), head, _Scale(scale)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m is not layers[0]:
            _dirac_init(m)
    return model


class _Scale(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


def _dirac_init(conv: nn.Conv2d) -> None:
    """The first `min(in, out)` filters become identities (each passes one input channel through, as airbench
    does); the others keep their default random initialisation."""
    with torch.no_grad():
        n = min(conv.in_channels, conv.out_channels)
        nn.init.dirac_(conv.weight[:n])


@torch.no_grad()
def whiten_first_conv(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set `conv`'s filters to whiten its input patches: the eigenvectors of the patches' covariance
    scaled by 1/sqrt(eigenvalue + eps), and their negatives (so a ReLU-like activation keeps both
    signs). `images` are normalised training images (a few thousand are enough). The filters stay
    fixed unless the caller makes them trainable again; the bias is zeroed and trains."""
    k = conv.kernel_size[0]
    patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # n, c, h', w', k, k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, conv.in_channels * k * k)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
    filters = (eigenvectors.T / (eigenvalues[:, None] + eps).sqrt()).float()
    filters = filters.reshape(-1, conv.in_channels, k, k)
    conv.weight.copy_(torch.cat([filters, -filters])[:conv.out_channels])
    conv.weight.requires_grad_(False)
    if conv.bias is not None:
        conv.bias.zero_()
