import matplotlib
import pytest
import torch
from torch import nn

from slowlearn import Callback, CancelFitException, DataLoaders, Learner, MetricsCB, TensorLoader, hardware
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


CLASSES = ["zero", "one", "two"]


def image_dls(n_train=24, n_valid=10, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_valid, 1, 6, 6), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (n_train + n_valid,), generator=g)
    norm = dict(mean=0.5, std=0.25, device="cpu")
    return DataLoaders(TensorLoader(x[:n_train], y[:n_train], bs, shuffle=True, seed=0, **norm),
                       TensorLoader(x[n_train:], y[n_train:], bs, **norm), classes=CLASSES)


def image_learner():
    """A linear classifier of 6x6 grey images in 3 classes, with an accuracy metric."""
    from torcheval.metrics import MulticlassAccuracy
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    return Learner(model, image_dls(), lr=0.1, cbs=[MetricsCB(accuracy=MulticlassAccuracy())])


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


class FailsBeforeFit(Callback):
    """Raises in `before_fit`, before the callbacks of higher order have run theirs."""

    order = -10

    def before_fit(self, learn):
        raise ValueError("before_fit failed")


@pytest.fixture(autouse=True)
def close_figures():
    """Plot functions leave their figures open for `plt.show()`; each test starts with none open."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.fixture
def cpu_features(monkeypatch):
    """Mock the CPU's bf16 features: cpu_features(amx=True) makes torch's cpuinfo probe report AMX."""
    def set_features(amx=False, avx512_bf16=False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(hardware, "_announced", set())  # print the choice again
    monkeypatch.delenv("SLOWLEARN_NATIVE_BF16", raising=False)  # the mocked features answer, not the environment
    return set_features


@pytest.fixture
def torchvision_cache(tmp_path, monkeypatch):
    """A temporary, offline torchvision cache ($TORCH_HOME with SLOWLEARN_OFFLINE=1: nothing is ever downloaded).
    `torchvision_cache("resnet18")` writes random weights of that model under the file name torchvision's own weights
    enum gives ($TORCH_HOME/hub/checkpoints/<the url's file name>) and returns that state dict."""
    import os

    import torchvision.models as tvm
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("SLOWLEARN_OFFLINE", "1")

    def write(arch: str = "resnet18", seed: int = 0) -> dict:
        torch.manual_seed(seed)
        state = tvm.get_model(arch, weights=None).state_dict()
        path = home / "hub" / "checkpoints" / os.path.basename(tvm.get_model_weights(arch).DEFAULT.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return state
    return write


def pytest_configure(config):
    # MLflow 3's SQLite store configures SQLAlchemy with a strategy SQLAlchemy 2.1 deprecates: not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy is deprecated")
