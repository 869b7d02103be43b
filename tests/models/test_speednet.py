import torch

from slowlearn.models.speednet import speed_net, whiten_first_conv


def test_speed_net_maps_small_images_to_logits():
    for in_channels, size in ((1, 28), (3, 32)):
        model = speed_net(in_channels, widths=(8, 16, 16), n_classes=7)
        assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)
        assert model[0].out_channels == 2 * in_channels * 4


def test_batchnorm_scales_are_frozen_and_their_shifts_train():
    model = speed_net(1, widths=(8, 16))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.weight.requires_grad and bn.bias.requires_grad for bn in bns)


def test_whitened_first_conv_decorrelates_patches():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1., 0.9], [0.9, 1.]])  # strongly correlated channels
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(200, 2, 12, 12, generator=g))
    model = speed_net(2, widths=(8,))
    whiten_first_conv(model[0], images, eps=1e-6)
    out = model[0](images)[:, :8]  # the eigenvector filters; the other half are their negatives
    feats = out.permute(0, 2, 3, 1).reshape(-1, 8)
    cov = torch.cov(feats.T)
    assert torch.allclose(cov, torch.eye(8), atol=0.05)
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert torch.equal(model[0].weight[8:], -model[0].weight[:8])
