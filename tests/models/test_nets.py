from functools import partial

import pytest
import torch
from images import CLASSES, data_folder, make_folder  # noqa: F401 (data_folder: an autouse fixture)
from torch import nn

from slowlearn import (
    MLP,
    GeneralReLU,
    ResBlock,
    conv_block,
    get_kaiming_initalized_model,
    get_kaiming_initialized_model,
    resnet,
    seed_cnn,
)
from slowlearn.models import seed_cnn_fits


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


def test_sizing_from_file_backed_loaders_reads_no_batch(tmp_path, data_folder):
    """A file-backed loader knows its images' shape: sizing a model from it decodes no batch and draws nothing
    from the loader's generator or torch's RNG, so the fit that follows is the same as with the sizes given."""
    from slowlearn import image_folder
    dls = image_folder(make_folder(tmp_path / "pets"), in_memory=False, num_workers=0, bs=4)
    order = dls.train.generator.get_state()
    model = resnet(nfs=(4, 8), dls=dls)
    assert model[0].convs[0][0].in_channels == 3 and model[-1].out_features == len(CLASSES)
    assert torch.equal(dls.train.generator.get_state(), order)
    rng = torch.get_rng_state()
    first = seed_cnn(dls=dls)[0][0].weight
    torch.set_rng_state(rng)
    assert torch.equal(first, seed_cnn(in_channels=3, n_classes=3)[0][0].weight)


@pytest.mark.parametrize("build", [lambda: resnet(act=nn.LeakyReLU(0.1)), lambda: seed_cnn(act=GeneralReLU(0.1)),
                                   lambda: MLP(3, [4], 2, act=nn.ReLU()), lambda: resnet(norm=nn.BatchNorm2d(16)),
                                   lambda: ResBlock(3, 8, act=nn.ReLU())])
def test_a_layer_given_for_act_or_norm_says_to_give_what_makes_one(build):
    """act= and norm= make one layer per use (nn.ReLU, partial(GeneralReLU, leak=0.1)); a Keras-style instance is
    refused with the spelling that works, not torch's 'forward() missing 1 required positional argument'."""
    with pytest.raises(TypeError, match=r"(act|norm)=.* is a layer: give what makes one.*partial"):
        build()
