import math
from functools import partial

import pytest
import torch
from torch import nn

from slowlearn import (
    MLP,
    BatchNorm,
    GeneralReLU,
    ResBlock,
    conv_block,
    get_kaiming_initalized_model,
    get_kaiming_initialized_model,
    init_weights,
    lsuv_init,
    resnet,
    seed_cnn,
    set_seed,
    summary,
)
from slowlearn.models import seed_cnn_fits


def test_general_relu_options():
    x = torch.tensor([-2., 0., 1., 10.])
    torch.testing.assert_close(GeneralReLU()(x), torch.relu(x))
    torch.testing.assert_close(GeneralReLU(leak=0.1, sub=0.5, maxv=6.)(x), torch.tensor([-0.7, -0.5, 0.5, 6.]))


def test_kaiming_init_std_matches_leak_and_fan_in():
    for leak in (0., 0.1):
        layer = nn.Linear(1000, 1000)
        init_weights(layer, leak=leak)
        expected = math.sqrt(2 / ((1 + leak ** 2) * 1000))
        assert abs(layer.weight.std().item() - expected) / expected < 0.01
        assert torch.count_nonzero(layer.bias) == 0


def test_init_weights_leaves_other_layers_alone():
    bn = nn.BatchNorm2d(4)
    init_weights(bn)
    assert torch.equal(bn.weight, torch.ones(4))


def test_seed_cnn_shapes_and_alias():
    model = get_kaiming_initialized_model()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert get_kaiming_initalized_model is get_kaiming_initialized_model
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 32, 64, 10]
    assert sum(isinstance(m, GeneralReLU) and m.leak == 0.1 for m in model.modules()) == 4


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (32, 20), (33, 33), (64, 64), (16, 40)])
def test_seed_cnn_fits_says_whether_it_gives_one_logit_per_class(size):
    out = seed_cnn(n_classes=3).eval()(torch.zeros(1, 1, *size))
    assert seed_cnn_fits(size) == (out.shape == (1, 3))


def test_conv_block_bias_only_without_norm():
    assert conv_block(3, 8, norm=nn.BatchNorm2d)[0].bias is None
    assert conv_block(3, 8)[0].bias is not None
    assert len(conv_block(3, 8, act=None)) == 1
    assert seed_cnn(act=partial(GeneralReLU, leak=0.), norm=None)(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_set_seed_reproduces_weights():
    set_seed(1)
    a = get_kaiming_initialized_model()
    set_seed(1)
    b = get_kaiming_initialized_model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lsuv_meets_tolerance_on_every_layer():
    torch.manual_seed(0)
    model = seed_cnn(act=partial(GeneralReLU, leak=0.1, sub=0.4), norm=None)
    xb = torch.randn(64, 1, 28, 28) * 3 + 1
    lsuv_init(model, xb, tol=1e-3)
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outputs.append(out)) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(xb)
    for h in hooks:
        h.remove()
    assert len(outputs) == 5
    for out in outputs:
        assert abs(out.mean().item()) < 1e-3 and abs(out.std().item() - 1) < 1e-3


def test_lsuv_on_the_seed_model_scales_bias_free_convs_and_leaves_the_mean_to_batchnorm():
    torch.manual_seed(0)
    model = get_kaiming_initialized_model()
    xb = torch.randn(64, 1, 28, 28)
    running = {name: b.clone() for name, b in model.named_buffers()}
    lsuv_init(model, xb)
    assert all(torch.equal(b, running[name]) for name, b in model.named_buffers())  # BatchNorm statistics kept
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.bias is None for m in convs) == 4  # the last conv, with no BatchNorm after it, has a bias
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outputs.append(out)) for m in convs]
    with torch.no_grad():
        model(xb)
    for h in hooks:
        h.remove()
    assert all(abs(out.std().item() - 1) < 1e-3 for out in outputs)
    assert all(abs(out.mean().item()) < 1e-3 for m, out in zip(convs, outputs) if m.bias is not None)


def test_lsuv_raises_instead_of_looping_when_it_cannot():
    torch.manual_seed(0)
    constant = nn.Sequential(nn.Linear(4, 4))
    nn.init.zeros_(constant[0].weight), nn.init.zeros_(constant[0].bias)
    with pytest.raises(RuntimeError, match="outputs a constant"):
        lsuv_init(constant, torch.randn(32, 4))
    with pytest.raises(RuntimeError, match="has no weight"):
        lsuv_init(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), torch.randn(32, 4), modules=[nn.Tanh()])

    class Twice(nn.Module):  # one layer used twice: its output is no longer affine in its weights
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    with pytest.raises(RuntimeError, match="did not reach .* in 1 passes"):
        lsuv_init(Twice(), torch.randn(32, 4) * 4, max_iter=1)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (16, 4)])
def test_from_scratch_batchnorm_matches_torch(shape):
    torch.manual_seed(0)
    ours, reference = BatchNorm(shape[1]), (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1])
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        reference.weight.copy_(ours.weight)
    for step in range(5):
        x = torch.randn(shape) * (step + 1) + step
        torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval(), reference.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), reference(x))
    x.requires_grad_(True)
    ours.train()(x).sum().backward()
    assert ours.weight.grad is not None


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_resnet_shapes_and_training_step(size, channels):
    torch.manual_seed(0)
    model = resnet(nfs=(8, 16, 32), in_channels=channels)
    xb, yb = torch.randn(4, channels, size, size), torch.tensor([0, 1, 2, 3])
    assert model(xb).shape == (4, 10)
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_res_block_shortcut():
    block = ResBlock(4, 8, stride=2)
    assert block(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)
    assert isinstance(ResBlock(4, 4).idconv, nn.Identity)


def test_mlp():
    model = MLP(784, [50, 20], 10)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [50, 20, 10]


def test_summary_rows(capsys):
    model = get_kaiming_initialized_model()
    model.train()
    rows = summary(model, torch.randn(4, 1, 28, 28))
    assert [r["output"] for r in rows[:5]] == ["8x14x14", "16x7x7", "32x4x4", "64x2x2", "10x1x1"]
    assert rows[-1]["params"] == sum(p.numel() for p in model.parameters())
    assert rows[0]["MFLOPs"] == pytest.approx(2 * 8 * 14 * 14 * 25 / 1e6)  # 2 flops per multiply-add
    assert model.training and "MFLOPs" in capsys.readouterr().out


def test_summary_shows_nested_modules_and_frozen_parameters(capsys):
    model = resnet(nfs=(8, 16), n_classes=3)
    for p in model[0].parameters():
        p.requires_grad_(False)
    rows = summary(model, torch.randn(2, 1, 28, 28), depth=2)
    layers = [r["layer"] for r in rows]
    assert layers[:3] == ["0: ResBlock", "  convs: Sequential", "  idconv: Sequential"]
    assert "    0: Conv2d" not in layers  # depth 3 is not shown
    block = rows[0]
    assert block["frozen"] == block["params"] == sum(p.numel() for p in model[0].parameters())
    assert block["trainable"] == 0 and rows[-1]["trainable"] == sum(p.numel() for p in model[1:].parameters())
    assert rows[1]["output"] == "8x28x28" and rows[1]["MFLOPs"] > 0
    children = rows[1:rows.index(next(r for r in rows if r["layer"] == "1: ResBlock"))]
    assert sum(r["MFLOPs"] for r in children) == pytest.approx(block["MFLOPs"])  # the pool and ReLU cost none
    assert "  convs: Sequential" in capsys.readouterr().out


def rgb_dls(n_classes=4, channels=3):
    from slowlearn import DataLoaders, TensorLoader
    x, y = torch.zeros(8, channels, 12, 12, dtype=torch.uint8), torch.arange(8) % n_classes
    return DataLoaders(TensorLoader(x, y, 4), TensorLoader(x, y, 4), classes=[f"c{i}" for i in range(n_classes)])


def test_resnet_and_seed_cnn_take_channels_and_classes_from_the_data():
    model = resnet(dls=rgb_dls())
    assert model[0].convs[0][0].in_channels == 3 and model[-1].out_features == 4
    assert seed_cnn(dls=rgb_dls(5, channels=1))[-2][0].out_channels == 5
    assert resnet(dls=rgb_dls(), n_classes=7)[-1].out_features == 7  # what is given wins
    assert resnet()[-1].out_features == 10 and resnet()[0].convs[0][0].in_channels == 1  # Fashion-MNIST's
    assert resnet(in_channels=3, n_classes=4)[-1].out_features == 4


def test_sizing_from_loaders_without_class_names_asks_for_n_classes():
    dls = rgb_dls()
    dls.classes = None
    with pytest.raises(ValueError, match="pass n_classes="):
        resnet(dls=dls)
    assert resnet(dls=dls, n_classes=2)[0].convs[0][0].in_channels == 3
