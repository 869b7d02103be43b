"""MixUp and CutMix: train on blends of pairs of images, with the loss blended the same way."""
from __future__ import annotations

import torch

from ..callback import Callback

__all__ = ["MixUpCB", "CutMixCB"]


class _MixingCB(Callback):
    """Shared by MixUp and CutMix: during training, before each batch, pair every item with another
    (a random permutation `perm` of the batch), blend their inputs by a fraction `lam` drawn from
    Beta(alpha, alpha), and score predictions against both targets:

        loss = lam * loss_func(preds, y) + (1 - lam) * loss_func(preds, y[perm])

    For cross-entropy, also with label smoothing, that equals the cross-entropy against the blended
    (smoothed) one-hot targets lam * t(y) + (1 - lam) * t(y[perm]), since it is linear in the target.
    Everything is drawn and computed on the batch's device, for the whole batch at once: no host sync
    and no per-item Python. Validation sees plain batches and the plain loss. Replaces `get_loss`, also
    during `lr_find`.
    The random numbers come from torch's RNGs, which checkpoints hold: resuming stays exact.
    """

    order = -3  # after DeviceCB (-10) has moved the batch, before callbacks that look at the inputs
    sweep = True  # lr_find sweeps the loss that training minimises: the mixed one

    def __init__(self, alpha: float):
        if not alpha > 0:
            raise ValueError(f"{type(self).__name__} needs alpha > 0 (the Beta distribution's parameter), got {alpha}")
        self.alpha = alpha
        self.lam, self.perm = None, None

    def before_batch(self, learn) -> None:
        if not learn.training:
            self.lam, self.perm = None, None
            return
        x = learn.batch[0]
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} blends inputs, which must be floats; got {x.dtype} inputs "
                            f"(normalise them in the loader)")
        lam, self.perm = self.sample(x)
        mixed, self.lam = self.mix(x, lam, self.perm)
        learn.batch = (mixed, *learn.batch[1:])

    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lam ~ Beta(alpha, alpha) and a random permutation of the batch, both on `x`'s device."""
        alpha = torch.full((), float(self.alpha), device=x.device)  # filled there: no copy from the host
        beta = torch.distributions.Beta(alpha, alpha, validate_args=False)  # checking alpha would read it back
        return beta.sample(), torch.randperm(len(x), device=x.device)

    def mix(self, x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The blended inputs and the fraction of each that comes from `x` (rather than `x[perm]`)."""
        raise NotImplementedError

    def get_loss(self, learn) -> None:
        targets = learn.batch[1:]
        loss = learn.loss_func(learn.preds, *targets)
        if self.lam is not None:
            other = learn.loss_func(learn.preds, *(t[self.perm] for t in targets))
            loss = torch.lerp(other, loss, self.lam.to(loss.dtype))
        learn.loss = loss


class MixUpCB(_MixingCB):
    """MixUp (Zhang et al., 2018): x <- lam * x + (1 - lam) * x[perm], lam ~ Beta(alpha, alpha) per batch.
    `alpha=0.4` is a common choice for image classification; smaller alphas blend less."""

    def mix(self, x, lam, perm):
        return torch.lerp(x[perm], x, lam.to(x.dtype)), lam


class CutMixCB(_MixingCB):
    """CutMix (Yun et al., 2019): a box of each image is replaced by the same box of its partner.

    The box covers a fraction 1 - lam of the image (lam ~ Beta(alpha, alpha), `alpha=1.0` as in the
    paper), centred uniformly at random and clipped at the borders; lam is then the fraction of the
    image that was kept, which is what weighs the loss. Works on (N, C, H, W) images.
    """

    def mix(self, x, lam, perm):
        if x.ndim != 4:
            raise ValueError(f"CutMixCB cuts boxes out of images shaped (N, C, H, W); got inputs of shape "
                             f"{tuple(x.shape)}: use MixUpCB for other inputs")
        height, width = x.shape[-2:]
        row, col = torch.rand(2, device=x.device).unbind()
        return self.cut(x, perm, *box((row * height, col * width), (1 - lam).sqrt(), height, width))

    @staticmethod
    def cut(x: torch.Tensor, perm: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor,
            right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`x` with rows [top, bottom) and columns [left, right) taken from `x[perm]`, and the kept fraction."""
        height, width = x.shape[-2:]
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        inside = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
        kept = 1 - inside.sum() / (height * width)
        return torch.where(inside, x[perm], x), kept


def box(centre: torch.Tensor | tuple[torch.Tensor, torch.Tensor], side_fraction: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Top, bottom, left, right (as tensors) of the box of `side_fraction` of each side around `centre`
    (row, column), clipped at the image's borders."""
    half_h, half_w = (side_fraction * height / 2).floor(), (side_fraction * width / 2).floor()
    top, bottom = (centre[0] - half_h).floor().clamp(0, height), (centre[0] + half_h).floor().clamp(0, height)
    left, right = (centre[1] - half_w).floor().clamp(0, width), (centre[1] + half_w).floor().clamp(0, width)
    return top, bottom, left, right
