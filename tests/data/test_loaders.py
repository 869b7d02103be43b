
import pytest
import torch

from slowlearn import DataLoaders, TensorLoader


def epoch_labels(loader):
    return torch.cat([yb for _, yb in loader])


def ids_loader(n=10, bs=4, **kwargs):
    """A loader whose labels are the sample indices, so batches show which samples they hold."""
    return TensorLoader(torch.arange(n).float()[:, None], torch.arange(n), bs, device="cpu", **kwargs)


def test_every_sample_once_per_epoch_in_a_new_order_each_epoch():
    loader = ids_loader(n=50, bs=8, shuffle=True, seed=0)
    first, second = epoch_labels(loader), epoch_labels(loader)
    assert sorted(first.tolist()) == list(range(50)) and sorted(second.tolist()) == list(range(50))
    assert not torch.equal(first, second)
    assert [len(yb) for _, yb in loader] == [8] * 6 + [2]


def test_order_is_reproducible_under_a_seed():
    a, b = ids_loader(n=50, shuffle=True, seed=3), ids_loader(n=50, shuffle=True, seed=3)
    assert torch.equal(epoch_labels(a), epoch_labels(b)) and torch.equal(epoch_labels(a), epoch_labels(b))
    c = ids_loader(n=50, shuffle=True)
    torch.randn(3)  # the loaders are made at different points of torch's RNG
    d = ids_loader(n=50, shuffle=True)
    torch.manual_seed(7)
    first_c = epoch_labels(c)
    torch.manual_seed(7)
    assert torch.equal(epoch_labels(d), first_c)  # unseeded: torch's RNG at the epoch's start decides
    assert not torch.equal(epoch_labels(d), first_c)  # ... and moves on, so the next epoch differs


def test_unshuffled_loader_keeps_order_and_len_follows_drop_last():
    assert epoch_labels(ids_loader()).tolist() == list(range(10))
    assert len(ids_loader(bs=4)) == 3
    dropped = ids_loader(bs=4, drop_last=True)
    assert len(dropped) == 2 and epoch_labels(dropped).tolist() == list(range(8))


def test_uint8_images_are_scaled_and_normalised():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(3, 1, 1, 1)
    loader = TensorLoader(x, torch.zeros(3), bs=3, mean=0.2, std=0.5, device="cpu")
    xb, _ = next(iter(loader))
    assert xb.dtype == torch.float32
    torch.testing.assert_close(xb.flatten(), (torch.tensor([0, 51, 255]) / 255 - 0.2) / 0.5)


def test_normalising_float_data_leaves_the_dataset_alone():
    x = torch.ones(4, 2)
    loader = TensorLoader(x, torch.zeros(4), bs=2, mean=0.5, std=0.5, device="cpu")
    assert [xb.tolist() for xb, _ in loader] == [[[1., 1.], [1., 1.]]] * 2
    assert torch.equal(loader.x, torch.ones(4, 2)) and torch.equal(loader.decode(loader.normalise(x)), x)


def test_per_channel_normalisation():
    x = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    loader = TensorLoader(x, torch.zeros(2), bs=2, mean=[0., 0.5, 1.], std=[1., 0.5, 0.25], device="cpu")
    xb, _ = next(iter(loader))
    torch.testing.assert_close(xb[0, :, 0, 0], torch.tensor([1., 1., 0.]))


def test_shards_are_disjoint_equal_and_cover_the_same_permutation():
    shards = [ids_loader(n=11, bs=2, shuffle=True, seed=5).shard(r, 3) for r in range(3)]
    labels = [epoch_labels(s) for s in shards]
    assert [len(s) for s in shards] == [2, 2, 2] and all(len(l) == 3 for l in labels)
    assert len(set(torch.cat(labels).tolist())) == 9  # disjoint; the last 11 % 3 = 2 dropped
    full = epoch_labels(ids_loader(n=11, bs=2, shuffle=True, seed=5))
    assert torch.equal(torch.stack(labels, 1).flatten(), full[:9])


def test_uneven_shards_cover_every_sample():
    shards = [ids_loader(n=11, bs=2).shard(r, 3, even=False) for r in range(3)]
    labels = [epoch_labels(s).tolist() for s in shards]
    assert [s.n_items for s in shards] == [4, 4, 3] and sorted(sum(labels, [])) == list(range(11))


def test_loader_errors():
    with pytest.raises(ValueError, match="3 inputs and 2 labels"):
        TensorLoader(torch.zeros(3, 1), torch.zeros(2), device="cpu")
    with pytest.raises(ValueError, match="bs=0"):
        TensorLoader(torch.zeros(3, 1), torch.zeros(3), bs=0, device="cpu")
    with pytest.raises(ValueError, match="rank=3"):
        ids_loader().shard(3, 2)


def test_dataloaders_access():
    train, valid = ids_loader(), ids_loader()
    dls = DataLoaders(train, valid, test=valid, classes=["a", "b"])
    assert dls["train"] is dls.train is train and dls["valid"] is valid and dls["test"] is valid
    assert dls.classes == ["a", "b"]
    with pytest.raises(KeyError, match="No 'test' loader"):
        DataLoaders(train, valid)["test"]


















def test_normalise_with_replaces_the_statistics_for_every_later_batch():
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    loader = TensorLoader(x, torch.zeros(6, dtype=torch.long), 6, mean=[0.5] * 3, std=[0.25] * 3, device="cpu")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert loader.normalise_with(mean, std) is loader and (loader.mean, loader.std) == (mean, std)
    expected = (x.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(next(iter(loader))[0], expected)
    torch.testing.assert_close(loader.decode(expected), x.float() / 255)
