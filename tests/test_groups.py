import copy

import pytest
import torch
from conftest import make_dls
from torch import nn
from torchvision.models import resnet18

from slowlearn import (
    Callback,
    DataLoaders,
    Learner,
    ParamSchedulerCB,
    SuggestedLRs,
    TensorLoader,
    default_splitter,
    group_lrs,
    one_cycle_lr,
    sched_lin,
    set_seed,
)


class GroupLRs(Callback):
    """Every param group's lr at every training batch (as the schedules set it), and the weights after each fit."""

    order = 20

    def __init__(self):
        self.lrs, self.fits = [], []

    def before_batch(self, learn):
        if learn.training:
            self.lrs.append([group["lr"] for group in learn.opt.param_groups])

    def after_fit(self, learn):
        self.fits.append(copy.deepcopy(learn.model.state_dict()))


def progress(n_epochs, n_batches):
    return [(epoch + i / n_batches) / n_epochs for epoch in range(n_epochs) for i in range(n_batches)]


def three_layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def by_layer(model):
    return [list(model[0].parameters()) + list(model[1].parameters()), list(model[3].parameters()),
            list(model[5].parameters())]


def test_default_splitter_puts_the_last_layer_in_a_group_of_its_own():
    model = three_layers()
    body, head = default_splitter(model)
    assert head == list(model[5].parameters())
    assert body == [p for m in model[:5] for p in m.parameters()]
    single = nn.Linear(3, 2)
    assert default_splitter(single) == [list(single.parameters())]


def test_group_lrs_spread_geometrically_and_say_what_is_wrong():
    assert group_lrs(slice(1e-4, 1e-2), 3) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert group_lrs(slice(1e-2), 3) == pytest.approx([1e-3, 1e-3, 1e-2])  # fastai's slice(hi)
    assert group_lrs(slice(1e-4, 1e-2), 1) == [1e-2]
    assert group_lrs(0.1, 2) == [0.1, 0.1] and group_lrs([0.1, 0.2], 2) == [0.1, 0.2]
    with pytest.raises(ValueError, match="Got 3 lrs for 2 param groups"):
        group_lrs([0.1, 0.2, 0.3], 2)
    with pytest.raises(ValueError, match="slice"):
        group_lrs(slice(1e-4, 1e-2, 2), 2)


def test_fit_with_a_slice_gives_each_group_its_lr_and_schedules_scale_them():
    model, recorder = three_layers(), GroupLRs()
    learn = Learner(model, make_dls(n_train=16, bs=4), lr=0.1, splitter=by_layer)
    learn.fit(1, lr=slice(1e-3, 1e-1), cbs=[recorder])
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert recorder.lrs[0] == pytest.approx([1e-3, 1e-2, 1e-1])
    recorder.lrs = []
    learn.fit(1, cbs=[recorder, ParamSchedulerCB(lr=sched_lin(1.0, 0.5))])  # the schedule is the last group's
    pcts = progress(1, 4)
    assert recorder.lrs == [pytest.approx([1e-2 * (1 - p / 2), 1e-1 * (1 - p / 2), 1 - p / 2]) for p in pcts]
    recorder.lrs = []
    learn.fit_one_cycle(2, lr_max=slice(1e-3, 1e-1), pct_start=0.25, cbs=[recorder])
    peaks = [1e-3, 1e-2, 1e-1]
    assert recorder.lrs == [pytest.approx([one_cycle_lr(peak, 0.25)(p) for peak in peaks]) for p in progress(2, 4)]


def test_an_lr_that_does_not_fit_the_groups_is_refused_and_changes_nothing():
    for fitted in (False, True):  # before the optimizer exists, and after
        learn = Learner(three_layers(), make_dls(), lr=0.1, splitter=by_layer)
        if fitted:
            learn.fit(1)
        with pytest.raises(ValueError, match="Got 2 lrs for 3 param groups"):
            learn.fit(1, lr=[0.1, 0.2])
        assert learn.lr == 0.1
        learn.fit(1)  # the next fit still works
        assert [g["lr"] for g in learn.opt.param_groups] == [0.1] * 3


@pytest.mark.parametrize("lr, message", [(slice(0, 1e-2), r"Invalid lo of lr=slice\(lo, hi\): 0 "),
                                         ("1e-3", "Invalid lr: '1e-3'"), ([0.1, -1, 0.1], "Invalid lr: -1")])
def test_a_bad_lr_is_refused_naming_it(lr, message):
    learn = Learner(three_layers(), make_dls(), lr=0.1, splitter=by_layer)
    with pytest.raises(ValueError, match=message):
        learn.fit(1, lr=lr)
    assert learn.lr == 0.1 and learn.opt is None


@pytest.mark.parametrize("lr, message", [(-1., "set_lr: Invalid lr: -1.0"), (float("nan"), "set_lr: Invalid lr: nan"),
                                         (slice(0, 1e-2), r"set_lr: Invalid lo of lr=slice\(lo, hi\): 0 "),
                                         ("0.1", "set_lr: Invalid lr: '0.1'")])
def test_set_lr_refuses_a_bad_lr_and_changes_nothing(lr, message):
    learn = Learner(three_layers(), make_dls(), lr=0.1, splitter=by_layer).fit(1)
    with pytest.raises(ValueError, match=message):
        learn.set_lr(lr)
    assert learn.lr == 0.1 and [g["lr"] for g in learn.opt.param_groups] == [0.1] * 3


def test_lr_finds_suggestion_itself_is_refused_as_an_lr_saying_which_value_to_pass():
    """fit_one_cycle(1, learn.lr_find()) on a model of two param groups trained the body at the valley and the head
    at the steep lr: SuggestedLRs is a tuple of two numbers, which read as one lr per group."""
    suggestion = SuggestedLRs(valley=1e-3, steep=1e-2)
    learn = Learner(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), make_dls(), lr=0.1)
    assert len(learn.param_groups()) == 2
    message = r"lr_max=SuggestedLRs\(valley=0.001, steep=0.01\) is a named tuple.*e.g. lr_max=suggestion.valley"
    with pytest.raises(ValueError, match=message):
        learn.fit_one_cycle(1, suggestion)
    with pytest.raises(ValueError, match="fit: lr=SuggestedLRs"):
        learn.fit(1, lr=suggestion)
    assert learn.lr == 0.1 and learn.opt is None


def test_frozen_groups_stay_bitwise_the_same_and_have_no_optimizer_state():
    model = three_layers()
    before = copy.deepcopy(model.state_dict())
    learn = Learner(model, make_dls(n_train=16, bs=4), lr=0.1, splitter=by_layer, opt_func=torch.optim.AdamW)
    learn.freeze_to(2, train_bn=False)  # groups 0 and 1 frozen, BatchNorm included
    learn.fit(2)
    after = model.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "3.weight"):
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["5.weight"], before["5.weight"])
    assert set(learn.opt.state) == set(model[5].parameters())
    assert all(p.grad is None for p in model[:4].parameters())


def test_batchnorm_of_frozen_groups_trains_by_default_and_unfreeze_trains_everything():
    model = three_layers()
    before = copy.deepcopy(model.state_dict())
    learn = Learner(model, make_dls(n_train=16, bs=4), lr=0.1, splitter=by_layer, opt_func=torch.optim.AdamW)
    learn.freeze()
    learn.fit(1)
    after = copy.deepcopy(model.state_dict())
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["3.weight"], before["3.weight"])
    for name in ("1.weight", "1.running_mean", "5.weight"):  # BatchNorm keeps training (fastai's train_bn)
        assert not torch.equal(after[name], before[name]), name
    learn.unfreeze()
    learn.fit(1)
    assert all(not torch.equal(v, after[k]) for k, v in model.state_dict().items() if k != "1.num_batches_tracked")


@pytest.mark.parametrize("n", [4, -4, 1.5])
def test_freeze_to_a_group_the_model_does_not_have_is_refused_and_changes_nothing(n):
    """freeze_to(4) of 3 groups froze everything but BatchNorm, and the fit of a model without BatchNorm then failed
    in torch's backward ('element 0 of tensors does not require grad'); freeze_to(-4) unfroze everything."""
    learn = Learner(three_layers(), make_dls(n_train=16, bs=4), lr=0.1, splitter=by_layer)
    learn.freeze()
    with pytest.raises(ValueError, match=rf"freeze_to: Invalid n: {n} \(must be an integer in \[-3, 3\]\).*3 "
                                         rf"param groups"):
        learn.freeze_to(n)
    assert [p.requires_grad for p in learn.model.parameters()] == [False, False, True, True, False, False, True, True]
    learn.freeze_to(3)  # every group: only the BatchNorm layers train
    assert [p.requires_grad for p in learn.model.parameters()] == [False, False, True, True, False, False, False, False]


def test_a_splitter_that_misses_parameters_is_an_error():
    model = three_layers()
    learn = Learner(model, make_dls(), splitter=lambda m: [list(m[5].parameters())])
    with pytest.raises(ValueError, match="every parameter of the model in exactly one group"):
        learn.fit(1)


def image_dls(n_classes, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, n_classes, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, 16, shuffle=True, device="cpu", seed=seed),
                       TensorLoader(x[:16], y[:16], 16, device="cpu"))


def test_fine_tune_a_resnet18_from_a_local_file(tmp_path):
    set_seed(0)
    pretrained = resnet18(weights=None, num_classes=5)
    Learner(pretrained, image_dls(5), lr=1e-3, opt_func=torch.optim.AdamW).fit(1)
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pt")

    model = resnet18(weights=None, num_classes=5)
    model.load_state_dict(torch.load(tmp_path / "pretrained.pt", weights_only=True))
    model.fc = nn.Linear(512, 3)  # a new head for the new task
    loaded = copy.deepcopy(model.state_dict())
    recorder = GroupLRs()
    learn = Learner(model, image_dls(3, seed=1), opt_func=torch.optim.AdamW, cbs=[recorder])
    learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1)

    frozen, tuned = recorder.fits
    assert torch.equal(frozen["conv1.weight"], loaded["conv1.weight"])
    assert torch.equal(frozen["layer4.1.conv2.weight"], loaded["layer4.1.conv2.weight"])
    assert not torch.equal(frozen["bn1.weight"], loaded["bn1.weight"])  # BatchNorm trains while frozen
    assert not torch.equal(frozen["fc.weight"], loaded["fc.weight"])
    assert not torch.equal(tuned["conv1.weight"], loaded["conv1.weight"])
    pcts = progress(1, 2)
    head = [one_cycle_lr(2e-3, 0.99)(p) for p in pcts]
    body = [one_cycle_lr(2e-4, 0.99)(p) for p in pcts]
    assert recorder.lrs[:2] == [pytest.approx([b, h]) for b, h in zip(body, head)]
    assert recorder.lrs[2:] == [pytest.approx([one_cycle_lr(1e-5, 0.3, div=5.)(p), one_cycle_lr(1e-3, 0.3, div=5.)(p)])
                                for p in pcts]
    assert all(p.requires_grad for p in model.parameters())
