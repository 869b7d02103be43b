"""Gradient accumulation, clipping and multipliers, and the arguments they refuse (which would silently train the
wrong way)."""
import pytest
import torch
from torch import nn

from slowlearn import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    DataLoaders,
    GradientAccumulationCB,
    GradientClipCB,
    GradientMultiplierCB,
    Learner,
    TensorLoader,
    batchnorm_shifts,
)

# few large batches on purpose (to compare accumulated with whole batches): the few-steps advice is not the point
pytestmark = pytest.mark.filterwarnings("ignore:An epoch has only")


def linear_dls(n, bs):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, bs, device="cpu"), TensorLoader(x[:8], y[:8], 8, device="cpu"))


def trained_weights(dls, cbs=(), n_epochs=1):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    Learner(model, dls, lr=0.5, cbs=list(cbs)).fit(n_epochs, valid=False)
    return torch.cat([model.weight.flatten(), model.bias])


def test_gradient_accumulation_equals_one_big_batch():
    big = trained_weights(linear_dls(512, 512))
    accumulated = trained_weights(linear_dls(512, 128), [GradientAccumulationCB(4)])
    plain_small = trained_weights(linear_dls(512, 128))
    torch.testing.assert_close(accumulated, big)
    assert not torch.allclose(plain_small, big)


def test_last_partial_accumulation_is_stepped():
    steps = []

    class CountSteps(Callback):
        def after_step(self, learn):
            steps.append(learn.iter)

    trained_weights(linear_dls(640, 128), [GradientAccumulationCB(4), CountSteps()])
    assert steps == [3, 4]  # after 4 batches, then the 5th batch alone at the end of the epoch


def test_gradient_clip_bounds_the_global_norm():
    seen = []

    class Norm(Callback):
        order = 10  # after GradientClipCB

        def after_backward(self, learn):
            grads = [p.grad for p in learn.model.parameters()]
            seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    clip = GradientClipCB(max_norm=0.05)
    trained_weights(linear_dls(256, 32), [clip, Norm()])
    assert max(seen) <= 0.05 + 1e-6 and max(clip.norms) > 0.05 and len(clip.norms) == 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_norm=-1.), r"GradientClipCB: Invalid max_norm: -1.0 \(must be a finite number in \(0.0, inf\)\)"),
    (dict(max_norm=0.), "Invalid max_norm: 0.0"),
    (dict(max_norm=float("nan")), "Invalid max_norm: nan"),
    (dict(norm_type=-2.), "Invalid norm_type: -2.0"),
])
def test_gradient_clip_refuses_a_norm_that_would_flip_or_zero_the_gradients(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientClipCB(**kwargs)
    GradientClipCB(norm_type=float("inf"))  # the max-norm is a real norm


@pytest.mark.parametrize("n_steps", [0, -2, 2.5, float("nan")])
def test_gradient_accumulation_needs_a_whole_number_of_batches(n_steps):
    with pytest.raises(ValueError, match=f"GradientAccumulationCB: Invalid n_steps: {n_steps!r} "
                                         r"\(must be an integer in \[1, inf\)\)"):
        GradientAccumulationCB(n_steps)


def bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def one_sgd_step(cbs=(), wd=0.):
    """The parameters before and after one plain SGD step (lr 0.5) of the BatchNorm net on one batch."""
    model = bn_net()
    before = {k: v.clone() for k, v in model.named_parameters()}
    opt_func = lambda params, lr: torch.optim.SGD(params, lr=lr, weight_decay=wd)
    Learner(model, linear_dls(16, 16), lr=0.5, cbs=list(cbs), opt_func=opt_func).fit(1, valid=False)
    return before, dict(model.named_parameters())


@pytest.mark.parametrize("wd", [0., 0.1])
def test_gradient_multiplier_is_a_larger_sgd_lr_for_the_chosen_parameters_only(wd):
    before, plain = one_sgd_step(wd=wd)
    _, multiplied = one_sgd_step([GradientMultiplierCB(64.)], wd=wd)
    for name in plain:
        if name != "1.bias":
            assert torch.equal(multiplied[name], plain[name]), name
    p0 = before["1.bias"]
    grad = (p0 - plain["1.bias"]) / 0.5 - wd * p0  # what the plain step used: p <- p - lr * (grad + wd * p)
    torch.testing.assert_close(multiplied["1.bias"], p0 - 0.5 * (64 * grad + wd * p0))  # weight decay not multiplied


def test_batchnorm_shifts_are_the_trainable_batchnorm_biases():
    model = bn_net()
    assert batchnorm_shifts(model) == [model[1].bias]
    model[1].bias.requires_grad_(False)
    assert batchnorm_shifts(model) == []


def test_gradient_multiplier_multiplies_once_per_accumulated_step():
    first_bias = lambda model: [model.bias]
    big = trained_weights(linear_dls(512, 512), [GradientMultiplierCB(3., params=first_bias)])
    accumulated = trained_weights(linear_dls(512, 128), [GradientAccumulationCB(4),
                                                         GradientMultiplierCB(3., params=first_bias)])
    torch.testing.assert_close(accumulated, big)
    assert not torch.allclose(big, trained_weights(linear_dls(512, 512)))


def test_gradient_multiplier_warns_where_it_would_change_nothing():
    with pytest.warns(UserWarning, match="Adam-like optimizer"):
        Learner(bn_net(), linear_dls(16, 16), lr=1e-3, cbs=[GradientMultiplierCB(64.)],
                opt_func=torch.optim.Adam).fit(1, valid=False)
    with pytest.warns(UserWarning, match="found no trainable parameters"):
        Learner(nn.Linear(5, 3), linear_dls(16, 16), cbs=[GradientMultiplierCB(64.)]).fit(1, valid=False)
    with pytest.raises(ValueError, match="factor"):
        GradientMultiplierCB(0.)



class CancelEpochAfter(Callback):
    """Ends each training epoch after batch `iter` (as a callback that shortens epochs does)."""

    def __init__(self, iter):
        self.iter, self.grads_at_epoch_start = iter, []

    def before_epoch(self, learn):
        if learn.training:
            self.grads_at_epoch_start.append(any(p.grad is not None for p in learn.model.parameters()))

    def after_batch(self, learn):
        if learn.training and learn.iter == self.iter:
            raise CancelEpochException()


class SkipFirstBatch(Callback):
    def before_batch(self, learn):
        if learn.training and learn.iter == 0:
            raise CancelBatchException()


def test_an_accumulation_group_cut_short_by_a_cancel_is_dropped_not_carried_into_the_next_epoch():
    """An epoch cancelled after 3 batches of 2-batch groups left batch 3's gradient in p.grad: the next epoch's
    first step added it to its own group's (and divided a sum of 3 by 2)."""
    cancel, dls = CancelEpochAfter(2), linear_dls(40, 8)
    short = trained_weights(dls, [GradientAccumulationCB(2), cancel], n_epochs=2)
    assert cancel.grads_at_epoch_start == [False, False]
    first_two = DataLoaders(TensorLoader(dls.train.x[:16], dls.train.y[:16], 8, device="cpu"), dls.valid)
    torch.testing.assert_close(short, trained_weights(first_two, [GradientAccumulationCB(2)], n_epochs=2))


def test_a_batch_cancelled_before_its_backward_is_left_out_of_its_groups_average():
    """The step was divided by the group's size (2) though only one batch's gradient was in it."""
    dls = linear_dls(16, 8)
    skipped = trained_weights(dls, [GradientAccumulationCB(2), SkipFirstBatch()])
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    nn.functional.cross_entropy(model(dls.train.x[8:]), dls.train.y[8:]).backward()
    torch.testing.assert_close(skipped, torch.cat([(model.weight - 0.5 * model.weight.grad).flatten(),
                                                   model.bias - 0.5 * model.bias.grad]))
