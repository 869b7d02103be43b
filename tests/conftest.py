import matplotlib
import pytest
import torch
from torch import nn

from slowlearn import Callback, CancelFitException, DataLoaders, TensorLoader
from slowlearn.data import find_fashion_mnist

matplotlib.use("Agg")


def make_dls(n_train=10, n_valid=5, bs=4, n_in=3, n_classes=2, seed=0, unseeded=False):
    """A tiny classification dataset on the CPU: uneven last batches in both loaders. `unseeded`:
    the training order comes from torch's global RNG instead of the loader's own seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, n_in, generator=g)
    y = torch.randint(0, n_classes, (n_train + n_valid,), generator=g)
    train = TensorLoader(x[:n_train], y[:n_train], bs, shuffle=True, device="cpu", seed=None if unseeded else seed)
    valid = TensorLoader(x[n_train:], y[n_train:], bs, device="cpu")
    return DataLoaders(train, valid)


@pytest.fixture
def dls():
    return make_dls()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


@pytest.fixture(scope="session")
def fashion_folder():
    try:
        return find_fashion_mnist(download=False)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed here (run `make data`, or apt-get install "
                    f"dataset-fashion-mnist): {str(e).splitlines()[0]}")


class TrainLosses(Callback):
    """Reads every training batch's loss (with a sync per batch: a reference for the tests)."""

    def __init__(self):
        self.losses = []

    def after_loss(self, learn):
        if learn.training:
            self.losses.append(learn.loss.item())


class StopAt(Callback):
    """Raises `exc` at the end of training batch `iter` of epoch `epoch`."""

    def __init__(self, epoch, iter, exc=CancelFitException):
        self.epoch, self.iter, self.exc = epoch, iter, exc

    def after_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == self.iter:
            raise self.exc()


@pytest.fixture(autouse=True)
def close_figures():
    """Plot functions leave their figures open for `plt.show()`; each test starts with none open."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
