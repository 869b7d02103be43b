import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from slowlearn.device import bare_model, model_device


def test_model_device_is_where_the_parameters_are_or_the_cpu():
    assert model_device(nn.Linear(3, 2)) == torch.device("cpu")
    assert model_device(nn.Linear(3, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters


def test_bare_model_unwraps_compile_and_ddp_however_nested():
    model = nn.Linear(3, 2)
    compiled = torch.compile(model, backend="eager")
    assert bare_model(compiled) is model and bare_model(model) is model
    fake_ddp = DistributedDataParallel.__new__(DistributedDataParallel)  # no process group needed to nest one
    nn.Module.__init__(fake_ddp)
    fake_ddp.module = compiled
    assert bare_model(fake_ddp) is model


def test_to_device_moves_nested_batches_and_keeps_their_types():
    from slowlearn.device import default_device, to_device

    batch = {"x": [torch.zeros(2), (torch.ones(1), "label")], "n": 3}
    moved = to_device(batch, "cpu")
    assert isinstance(moved["x"], list) and isinstance(moved["x"][1], tuple) and moved["n"] == 3
    assert moved["x"][1][1] == "label" and torch.equal(moved["x"][1][0], torch.ones(1))
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert default_device().type == expected
