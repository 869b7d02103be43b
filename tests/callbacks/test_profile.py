import pytest
import torch
from conftest import make_dls
from torch import nn

from slowlearn import Learner, MetricsCB, ProfilerCB, ProgressCB, find_batch_size


def test_profiler_report(capsys):
    profiler = ProfilerCB()
    learn = Learner(nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 2)), make_dls(n_train=40, bs=4),
                    cbs=[profiler, MetricsCB(), ProgressCB()])
    learn.fit(2)
    report = profiler.report()
    assert report["batches"] == 20 and report["samples_per_s"] > 0 and report["peak_memory_mb"] > 0
    assert set(report["times"]) == {"data", "forward", "loss", "backward", "step", "callbacks"}
    assert all(t >= 0 for t in report["times"].values()) and report["times"]["callbacks"] > 0
    assert report["total"] == pytest.approx(sum(report["times"].values()))
    assert "samples/s" in capsys.readouterr().out


def test_find_batch_size():
    dls = make_dls(n_train=300, bs=4)
    rows = find_batch_size(nn.Linear(3, 2), dls, candidates=(16, 64, 256, 1024), steps=2)
    assert [r["bs"] for r in rows] == [16, 64, 256, 1024] and all(r["samples_per_s"] > 0 for r in rows[:3])
    assert rows[3]["note"] == "larger than the 300 training samples"


def test_find_batch_size_leaves_torchs_random_state_as_it_was():
    torch.manual_seed(0)
    model, dls = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2)), make_dls(n_train=64, bs=4)
    before = torch.get_rng_state()
    find_batch_size(model, dls, candidates=(16, 32), steps=2)
    assert torch.equal(torch.get_rng_state(), before)  # a set_seed run after it still reproduces


def test_find_batch_size_says_it_needs_data_in_memory(tmp_path):
    from images import make_folder

    from slowlearn import image_folder
    dls = image_folder(make_folder(tmp_path / "pets"), in_memory=False, num_workers=0, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="the training loader is a FileLoader: load a subset in memory"):
        find_batch_size(nn.Linear(3, 2), dls)
