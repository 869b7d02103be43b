"""CompileCB: in-place compile (plain state_dict keys, under DDP too), one training graph with the short batch dropped,
recompiles counted and a storm warned about, exact mid-epoch resume and lr_find. The "eager" backend keeps every
test free of inductor's compile times (seconds per graph)."""
import warnings

import pytest
import torch
from conftest import StopAt, make_dls
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slowlearn import (
    Callback,
    CheckpointCB,
    CompileCB,
    DataLoaders,
    Learner,
    MomentumSGD,
    set_seed,
)
from slowlearn.callbacks.compile import CompiledGraph, storm_advice


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Dynamo's caches emptied: a model of an earlier test, gone, may leave graphs whose guards a new one passes
    (the same id), which would then be reused, not compiled and counted."""
    torch._dynamo.reset()


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))


def learner(cb, n_train=22, n_valid=7, bs=4, cbs=()):
    """22 training items in batches of 4: a short last batch of 2 for CompileCB to drop."""
    return Learner(bn_model(), make_dls(n_train=n_train, n_valid=n_valid, bs=bs), lr=0.1, cbs=[cb, *cbs],
                   opt_func=lambda p, lr: MomentumSGD(p, lr, mom=0.9))


def test_one_training_graph_serves_two_epochs_with_the_short_batch_dropped():
    cb = CompileCB(backend="eager")
    learn = learner(cb)
    with pytest.warns(UserWarning, match="drops the last 2 items"):
        learn.fit(2, valid=False)
    assert learn.dls.train.drop_last and len(learn.dls.train) == 5
    assert (cb.compiles, cb.recompiles) == (1, 0)
    assert cb.graphs[0].grad and cb.graphs[0].shapes[2][0] == 4  # parameters, then the batch of 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader drops it already: nothing to say
        learn.fit(2)  # validation: one graph for batches of 4 and 3 (marked dynamic), a recompile by grad mode
    assert (cb.compiles, cb.recompiles) == (2, 1) and "grad_mode" in cb.graphs[1].reason


@pytest.mark.filterwarnings("ignore:CompileCB. the training loader now drops")
def test_the_model_is_compiled_in_place_for_the_fit_only(tmp_path):
    seen = []

    class Watch(Callback):
        def after_batch(self, learn):
            seen.append((learn.model._compiled_call_impl is not None, list(learn.model.state_dict())))

    learn = learner(CompileCB(backend="eager"), cbs=[Watch(), CheckpointCB(tmp_path / "ckpt.pt")])
    plain_keys = list(learn.model.state_dict())
    learn.fit(1)
    assert all(compiled and keys == plain_keys for compiled, keys in seen)
    assert learn.model._compiled_call_impl is None  # predictions and exports run eagerly
    assert list(torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]) == plain_keys


def test_recompiles_are_counted_and_a_storm_is_a_warning_naming_its_cause():
    class NewBatchSize(Callback):  # every training batch a different size: a graph each, as dynamic=False asks
        def before_batch(self, learn):
            if learn.training:
                k = 2 + learn.iter
                learn.batch = tuple(t[:k] for t in learn.batch)

    cb = CompileCB(backend="eager", dynamic=False, max_recompiles=3)
    learn = learner(cb, n_train=40, bs=8, cbs=[NewBatchSize()])
    with pytest.warns(UserWarning, match=r"recompiled 4 times in this fit \(more than max_recompiles=3\)") as record:
        learn.fit(1, valid=False)
    message = str(record[0].message)
    assert "size mismatch" in message and "CompileCB(dynamic=True)" in message
    assert cb.compiles == 5 and cb.recompiles == 4


def test_storm_advice_tells_shapes_from_other_causes():
    shapes = [CompiledGraph(None, ((4, 3),), True),
              CompiledGraph("tensor 'x' size mismatch at index 0", ((5, 3),), True)]
    assert "CompileCB(dynamic=True)" in storm_advice(shapes)
    values = [CompiledGraph(None, ((4, 3),), True), CompiledGraph("self.scale == 2.0", ((4, 3),), True)]
    assert "TORCH_LOGS=recompiles" in storm_advice(values) and "self.scale" in storm_advice(values)


def run(n_epochs, cbs=(), resume=None, find_lr=False, compile=True):
    set_seed(0)
    dls = make_dls(n_train=38, n_valid=7, bs=4, unseeded=True)
    if not compile:
        dls.train.drop_last = True  # what CompileCB sets
    cb = CompileCB(backend="eager")
    learn = Learner(bn_model(), dls, lr=0.1, cbs=[cb] * compile + list(cbs),
                    opt_func=lambda p, lr: MomentumSGD(p, lr, mom=0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drop_last
        if find_lr:
            learn.lr_find(num_it=12, show_plot=False)
        learn.fit(n_epochs, resume=resume)
    return learn, cb


def test_a_mid_epoch_resume_is_bitwise_exact(tmp_path):
    straight, _ = run(3)
    run(3, cbs=[CheckpointCB(tmp_path / "ckpt.pt", every=3), StopAt(epoch=1, iter=7)])
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter"] == 6
    resumed, _ = run(3, resume=tmp_path / "ckpt.pt")
    assert torch.equal(resumed.model[0].weight, straight.model[0].weight)
    assert resumed.history == straight.history
    eager, _ = run(3, compile=False)  # compiling changes how the maths runs, not which
    assert torch.equal(eager.model[0].weight, straight.model[0].weight)


def test_lr_find_then_fit_is_fit_alone_and_reuses_the_sweeps_graph():
    straight, _ = run(2)
    found, cb = run(2, find_lr=True)
    assert torch.equal(found.model[0].weight, straight.model[0].weight)
    assert cb.compiles == 2  # the sweep's training graph, then validation's


class WatchInner(Callback):
    """Notes the wrapper type, whether the module inside is compiled, and its state_dict keys, at every batch."""

    def __init__(self):
        self.seen = []

    def after_batch(self, learn):
        inner = learn.model.module
        self.seen.append((type(learn.model), inner._compiled_call_impl is not None, list(inner.state_dict())))


class WrapLate(Callback):
    """Wraps the model in DistributedDataParallel after CompileCB has compiled it."""

    def before_fit(self, learn):
        from torch.nn.parallel import DistributedDataParallel
        self.model, learn.model = learn.model, DistributedDataParallel(learn.model)

    def cleanup_fit(self, learn):
        learn.model = self.model


@pytest.mark.parametrize("wrapper", ["user", "DistributedCB", "after CompileCB"])
def test_under_ddp_the_inner_module_is_compiled_whoever_wraps_it_when(wrapper):
    from torch import distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from slowlearn import DistributedCB
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        watch, cb, model = WatchInner(), CompileCB(backend="eager"), bn_model()
        keys = list(model.state_dict())
        cbs = {"user": [], "DistributedCB": [DistributedCB()], "after CompileCB": [WrapLate()]}[wrapper]
        learn = Learner(DistributedDataParallel(model) if wrapper == "user" else model,
                        make_dls(n_train=8, n_valid=7, bs=4), cbs=[cb, watch, *cbs])
        learn.fit(1)
        assert watch.seen and all(t is DistributedDataParallel and compiled and k == keys
                                  for t, compiled, k in watch.seen)
        assert cb.compiles == 2 and model._compiled_call_impl is None
    finally:
        dist.destroy_process_group()


def test_what_cannot_work_is_refused_saying_why(monkeypatch):
    learn = learner(CompileCB(backend="eager"))
    learn.model = torch.compile(learn.model, backend="eager")
    with pytest.raises(TypeError, match="compiled already"):
        learn.fit(1)
    with pytest.raises(ValueError, match="mode or options"):
        CompileCB(mode="max-autotune", options={"epilogue_fusion": True})
    from torch._inductor import cpp_builder, exc

    def no_compiler():
        raise exc.InvalidCxxCompiler()
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(RuntimeError, match="no C.. compiler was found.*apt-get install g.."):
        learner(CompileCB()).fit(1)  # inductor on the CPU
    from torch._dynamo import eval_frame

    def unsupported():
        raise RuntimeError("Python 3.15+ not yet supported for torch.compile")
    monkeypatch.setattr(eval_frame, "check_if_dynamo_supported", unsupported)
    with pytest.raises(RuntimeError, match="does not run here.*Train without CompileCB"):
        CompileCB()


def test_a_torch_dataloader_with_a_short_last_batch_gets_a_warning():
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g))
    learn = Learner(bn_model(), DataLoaders(DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4)),
                    cbs=[CompileCB(backend="eager")])
    with pytest.warns(UserWarning, match="create it with drop_last=True"):
        learn.fit(1, valid=False)


def test_a_file_backed_loader_drops_its_short_batch_too(tmp_path, monkeypatch):
    from images import make_folder

    from slowlearn import image_folder
    monkeypatch.setenv("SLOWLEARN_DATA", str(tmp_path / "data"))
    dls = image_folder(make_folder(tmp_path / "images"), bs=5, seed=0, device="cpu", verbose=False, in_memory=False,
                       num_workers=0)  # 12 training images: 2 batches of 5 and one of 2
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    cb = CompileCB(backend="eager")
    with pytest.warns(UserWarning, match="drops the last 2 items"):
        Learner(model, dls, cbs=[cb]).fit(2, valid=False)
    assert len(dls.train) == 2 and (cb.compiles, cb.recompiles) == (1, 0)
