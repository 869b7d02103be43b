"""Pictures of data: looking at a batch changes nothing that training draws on."""
import pytest
import torch

from slowlearn import DataLoaders, TensorLoader


def noisy_loaders(seed: int | None) -> DataLoaders:
    """Tiny grey images; the training loader shuffles (seeded or from torch's RNG) and augments from torch's RNG."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8, generator=g), torch.arange(20) % 3
    norm = {"mean": 0.5, "std": 0.25, "device": "cpu"}
    train = TensorLoader(x[:16], y[:16], 4, shuffle=True, seed=seed, aug=lambda xb: xb + torch.rand(len(xb), 1, 1, 1),
                         **norm)
    return DataLoaders(train, TensorLoader(x[16:], y[16:], 4, **norm), classes=["a", "b", "c"])


@pytest.mark.parametrize("seed", [0, None])
def test_show_batch_leaves_the_training_order_and_augmentation_as_they_were(seed):
    def first_epoch(look: bool) -> list[torch.Tensor]:
        torch.manual_seed(1)
        dls = noisy_loaders(seed)
        if look:
            dls.show_batch(n=4)
        return [t for xb, yb in dls.train for t in (xb, yb)]

    assert all(torch.equal(a, b) for a, b in zip(first_epoch(False), first_epoch(True), strict=True))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_show_batch_draws_grey_colour_and_rgba_images_of_a_torch_dataloader(channels):
    """Images with an alpha channel (PNGs read with PIL and ToTensor) are drawn as matplotlib draws RGBA."""
    from torch.utils.data import DataLoader, TensorDataset
    dl = DataLoader(TensorDataset(torch.rand(8, channels, 6, 6), torch.arange(8) % 2), batch_size=4)
    fig = DataLoaders(dl, dl).show_batch(n=4)
    assert len([ax for ax in fig.axes if ax.images]) == 4


def test_show_batch_of_two_channel_images_says_which_images_it_draws():
    from torch.utils.data import DataLoader, TensorDataset
    dl = DataLoader(TensorDataset(torch.rand(8, 2, 6, 6), torch.arange(8) % 2), batch_size=4)
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*got items of shape \(2, 6, 6\)"):
        DataLoaders(dl, dl).show_batch(n=4)
