import math
from functools import partial

import torch
from torch import nn

from slowlearn import (GeneralReLU, conv_block, get_kaiming_initalized_model, get_kaiming_initialized_model,
                       init_weights, seed_cnn, set_seed)


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
