from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import make_dls
from torch import nn

from slowlearn import Callback, CutMixCB, DataLoaders, Learner, MetricsCB, MixUpCB, TensorLoader
from slowlearn.callbacks.mixing import box

LAM, PERM = 0.3, torch.tensor([2, 0, 3, 1])


class Fixed:
    """A mixing callback with a fixed lam and permutation instead of random ones."""

    def sample(self, x):
        return torch.tensor(LAM), PERM[:len(x)]


class FixedMixUp(Fixed, MixUpCB):
    pass


class FixedCutMix(Fixed, CutMixCB):
    def mix(self, x, lam, perm):
        return self.cut(x, perm, *map(torch.tensor, (1., 3., 0., 2.)))  # rows 1-2, columns 0-1: 4 of 16 pixels


class Inspect(Callback):
    """Keeps each training batch as the loader gave it, and the batch, predictions and loss the model saw."""

    order = -4  # before the mixing callbacks' before_batch

    def __init__(self):
        self.seen = []

    def before_batch(self, learn):
        self.original = learn.batch

    def after_loss(self, learn):
        if learn.training:
            self.seen.append((self.original, learn.batch, learn.preds.detach(), learn.loss.detach()))


def image_dls(n=8, bs=4, size=4):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, bs, shuffle=True, device="cpu", seed=0), TensorLoader(x, y, bs, device="cpu"))


def image_model(size=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 3))


def fit_one_epoch(mixing, loss_func=F.cross_entropy, size=4):
    inspect = Inspect()
    learn = Learner(image_model(size), image_dls(size=size), loss_func, lr=0.1, cbs=[MetricsCB(), mixing, inspect])
    learn.fit(1)
    return learn, inspect.seen


def test_mixup_blends_inputs_and_loss_as_by_hand():
    _, seen = fit_one_epoch(FixedMixUp(alpha=0.4))
    for (x, y), (mixed, targets), preds, loss in seen:
        torch.testing.assert_close(mixed, LAM * x + (1 - LAM) * x[PERM])
        assert torch.equal(targets, y)
        expected = LAM * F.cross_entropy(preds, y) + (1 - LAM) * F.cross_entropy(preds, y[PERM])
        torch.testing.assert_close(loss, expected)


def test_cutmix_pastes_the_box_and_weighs_the_loss_by_the_area_kept():
    _, seen = fit_one_epoch(FixedCutMix(alpha=1.0))
    for (x, y), (mixed, _), preds, loss in seen:
        expected = x.clone()
        expected[:, :, 1:3, 0:2] = x[PERM][:, :, 1:3, 0:2]
        assert torch.equal(mixed, expected)
        kept = 1 - 4 / 16
        torch.testing.assert_close(loss, kept * F.cross_entropy(preds, y) + (1 - kept) * F.cross_entropy(preds, y[PERM]))


def test_mixed_loss_with_label_smoothing_equals_cross_entropy_on_blended_smoothed_targets():
    eps = 0.1
    _, seen = fit_one_epoch(FixedMixUp(alpha=0.4), partial(F.cross_entropy, label_smoothing=eps))
    for (_, y), _, preds, loss in seen:
        smooth = lambda t: F.one_hot(t, 3).float() * (1 - eps) + eps / 3  # noqa: E731
        soft_targets = LAM * smooth(y) + (1 - LAM) * smooth(y[PERM])
        torch.testing.assert_close(loss, F.cross_entropy(preds, soft_targets))


@pytest.mark.parametrize("cb", [MixUpCB(0.4), CutMixCB(1.0)], ids=["mixup", "cutmix"])
def test_validation_sees_plain_batches_and_the_plain_loss(cb):
    learn, seen = fit_one_epoch(cb, size=16)
    assert len(seen) == 2 and not all(torch.equal(original[0], mixed[0]) for original, mixed, *_ in seen)
    assert cb.lam is None  # the validation batches left the mixing off
    assert learn.history[-1]["loss"] == pytest.approx(learn.validate()["loss"], rel=1e-6)


def test_random_draws_stay_on_the_batch_device_and_follow_the_seed():
    torch.manual_seed(0)
    lam, perm = MixUpCB(0.4).sample(torch.zeros(16, 3))
    torch.manual_seed(0)
    again = MixUpCB(0.4).sample(torch.zeros(16, 3))
    assert lam.device.type == perm.device.type == "cpu" and torch.equal(perm.sort().values, torch.arange(16))
    assert torch.equal(lam, again[0]) and torch.equal(perm, again[1])


@pytest.mark.parametrize("cb", [MixUpCB(0.4), CutMixCB(1.0)])
def test_mixing_a_batch_reads_nothing_back_from_the_device_nor_copies_to_it(cb, monkeypatch):
    """On a GPU either would wait for the device: checked on the CPU by refusing every way to do it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a host read or copy")

    batch = (torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    learn = type("FakeLearner", (), {"training": True, "batch": batch})()
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", True)  # torch's default with __debug__
    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    monkeypatch.setattr(torch, "tensor", refuse)
    cb.before_batch(learn)
    monkeypatch.undo()
    assert learn.batch[0].shape == batch[0].shape and not torch.equal(learn.batch[0], batch[0])


def test_lr_find_sweeps_the_mixed_loss_and_leaves_the_run_as_it_was():
    def learner(cbs):
        return Learner(image_model(size=8), image_dls(n=32, size=8), lr=0.1, cbs=cbs)

    plain, mixed = learner([]), learner([MixUpCB(0.4)])
    plain.lr_find(num_it=6, show_plot=False)
    mixed.lr_find(num_it=6, show_plot=False)
    assert plain.lr_finder.losses[0] != mixed.lr_finder.losses[0]  # the first lr moves nothing: mixing does
    alone = learner([MixUpCB(0.4)])
    for learn in (mixed, alone):
        torch.manual_seed(1)
        learn.fit(1)
    assert torch.equal(mixed.model[1].weight, alone.model[1].weight)


def test_cutmix_box_covers_one_minus_lam_of_the_image_and_is_clipped_at_borders():
    top, bottom, left, right = box(torch.tensor([16., 16.]), torch.tensor(0.5), 32, 32)
    assert (bottom - top) * (right - left) == 16 * 16  # side fraction 0.5: a quarter of the image
    top, bottom, left, right = box(torch.tensor([1., 30.]), torch.tensor(0.5), 32, 32)
    assert (top, bottom, left, right) == (0, 9, 22, 32)


def test_mixing_needs_float_inputs_and_cutmix_needs_images():
    with pytest.raises(ValueError, match="alpha > 0"):
        MixUpCB(0)
    with pytest.raises(TypeError, match="must be floats"):
        Learner(nn.Linear(3, 2), make_int_dls(), cbs=[MixUpCB(0.4)]).fit(1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[CutMixCB(1.0)]).fit(1)


def make_int_dls():
    x = torch.randint(0, 5, (8, 3))
    loader = TensorLoader(x, torch.zeros(8, dtype=torch.long), 4, device="cpu")
    return DataLoaders(loader, loader)
