import pytest
import torch
from conftest import make_dls
from torch import nn

from slowlearn import Callback, ChannelsLastCB, DataLoaders, DeviceCB, Learner, MomentumCB, TensorLoader


def test_momentum_cb_runs_and_equals_sgd_with_momentum():
    def run(cbs, momentum):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        opt_func = lambda params, lr: torch.optim.SGD(params, lr, momentum=momentum)
        Learner(model, make_dls(seed=1), lr=0.1, cbs=cbs, opt_func=opt_func).fit(3, valid=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = run([], 0.)
    with_cb = run([MomentumCB(0.85)], 0.)
    torch_momentum = run([], 0.85)
    assert not torch.allclose(plain, with_cb)  # the callback changes the trajectory
    torch.testing.assert_close(with_cb, torch_momentum)  # ... into heavy-ball momentum


def test_momentum_cb_rejects_bad_mom():
    with pytest.raises(ValueError, match="mom=1.5"):
        MomentumCB(1.5)


def test_device_cb_moves_model_and_batches():
    seen = []

    class Where(Callback):
        order = 0

        def before_batch(self, learn):
            seen.append((learn.batch[0].device, learn.device))

    model = nn.Linear(3, 2)
    learn = Learner(model, make_dls(), cbs=[DeviceCB("cpu"), Where()]).fit(1)
    assert set(seen) == {(torch.device("cpu"), torch.device("cpu"))}  # the batches and the shared slot
    assert next(model.parameters()).device.type == "cpu"
    assert learn.device is None  # the slot is DeviceCB's for the fit only
















def image_dls(n=32, bs=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return DataLoaders(TensorLoader(x, y, bs, device="cpu"), TensorLoader(x[:8], y[:8], bs, device="cpu"))


def small_convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_channels_last_cb_lays_out_model_and_images_and_trains_the_same():
    seen = []

    class Layout(Callback):
        def after_predict(self, learn):
            seen.append(learn.batch[0].is_contiguous(memory_format=torch.channels_last))

    def run(cbs):
        model = small_convnet()
        opt_func = lambda params, lr: torch.optim.SGD(params, lr, momentum=0.9)
        Learner(model, image_dls(), lr=0.1, cbs=cbs, opt_func=opt_func).fit(2)
        return model

    plain, channels_last = run([]), run([ChannelsLastCB(), Layout()])
    assert seen and all(seen)
    assert channels_last[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), channels_last.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same maths, another memory order


def test_device_cb_handles_batches_only_in_phases_whose_loader_is_not_on_the_device(monkeypatch):
    moved = []
    monkeypatch.setattr(DeviceCB, "before_batch", lambda self, learn: moved.append(learn.training))
    dls = make_dls(n_train=8, n_valid=4, bs=4)  # slowlearn loaders hand out batches on their device: the CPU
    foreign = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(dls.valid.x, dls.valid.y), batch_size=4)
    Learner(nn.Linear(3, 2), DataLoaders(dls.train, foreign), cbs=[DeviceCB("cpu")]).fit(2)
    assert moved == [False, False]  # the torch DataLoader's one batch, each epoch; never a training batch


def test_channels_last_cb_leaves_flat_inputs_alone():
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[ChannelsLastCB()])
    learn.fit(1)
    assert learn.batch[0].shape == (1, 3) and learn.batch[0].is_contiguous()
