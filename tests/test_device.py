import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from slowlearn.device import DeviceFloats, bare_model, model_device


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


def test_device_floats_keep_detached_values_until_one_read():
    floats = DeviceFloats()
    w = torch.tensor(2., requires_grad=True, device="meta")  # not the CPU: kept as tensors until the read
    assert floats.append(w * 1.5) == 1  # append says how many wait, so a caller needs no second call to ask
    assert floats.append(w * 2) == 2
    assert all(isinstance(t, torch.Tensor) and not t.requires_grad for t in floats._pending)  # no graph kept alive
    reduced = []
    with pytest.raises(NotImplementedError):  # a meta tensor has no values: the read is where they would come back
        floats.read(reduce=lambda t: reduced.append(t) or t)
    assert reduced[0].shape == (2,) and reduced[0].dtype == torch.float64 and reduced[0].device.type == "meta"


def test_device_floats_read_cpu_values_at_once_and_reduce_them_at_the_read():
    floats = DeviceFloats()
    w = torch.tensor(2., requires_grad=True)
    assert floats.append(w * 1.5) == 1
    assert floats.append((w * 2).bfloat16()) == 2
    assert floats._pending == [3., 4.]  # a CPU value costs no sync: it is a float from the start
    assert floats.read() == [3., 4.]
    assert floats.n_pending == 0
    assert floats.read(reduce=lambda t: t * 10) == [3., 4.]  # nothing pending: nothing to reduce
    floats.append(torch.tensor(1.))
    assert floats.read(reduce=lambda t: t * 10) == [3., 4., 10.]


def test_device_floats_read_by_themselves_when_max_pending_values_wait():
    floats = DeviceFloats(max_pending=3)
    w = torch.tensor(2., device="meta")  # not the CPU: kept as tensors until the read
    assert [floats.append(w * k) for k in (1, 2)] == [1, 2]
    with pytest.raises(NotImplementedError):  # the third makes three waiting: append reads them (a meta tensor can't)
        floats.append(w * 3)
    cpu = DeviceFloats(max_pending=2)
    assert [cpu.append(torch.tensor(k)) for k in (1., 2., 3.)] == [1, 0, 1]
    assert cpu.values == [1., 2.] and cpu.read() == [1., 2., 3.]
