"""Layers and initialisation: GeneralReLU, Kaiming init, LSUV, the from-scratch BatchNorm."""
import math
from functools import partial

import pytest
import torch
from torch import nn

from slowlearn import BatchNorm, GeneralReLU, get_kaiming_initialized_model, init_weights, lsuv_init, seed_cnn


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


def test_lsuv_names_a_layer_that_the_forward_pass_does_not_use():
    class WithAux(nn.Module):  # an auxiliary head that forward() does not call
        def __init__(self):
            super().__init__()
            self.body, self.aux, self.head = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.body(x))

    model = WithAux()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"'aux' .*not used.*modules="):
        lsuv_init(model, torch.randn(64, 3))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # refused before any change
    lsuv_init(model, torch.randn(64, 3), modules=[model.body, model.head])
    assert not torch.equal(model.body.weight, weights["body.weight"])


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
