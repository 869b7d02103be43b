"""RecorderCB: hyper-parameters and losses per batch, and their plot."""

import matplotlib.figure
import numpy as np
import pytest
import torch
from conftest import TrainLosses, make_dls
from torch import nn

from callbacks.test_schedule import progress
from slowlearn import Adam, Learner, MomentumSGD, RecorderCB, one_cycle_lr, one_cycle_mom, train_1cycle
from slowlearn.callbacks.schedule import get_hyper


@pytest.mark.parametrize("opt_func", [torch.optim.AdamW, Adam, MomentumSGD], ids=["torch AdamW", "Adam", "MomentumSGD"])
def test_recorded_one_cycle_follows_the_formula_and_ends_on_its_last_value(opt_func):
    dls = make_dls(n_train=20, bs=4)
    learn = train_1cycle(nn.Linear(3, 2), lr=0.1, n_epochs=3, dls=dls, opt_func=opt_func)
    pcts = progress(3, len(dls.train))
    assert learn.recorder.recs["lr"] == [one_cycle_lr(0.1)(p) for p in pcts]
    assert learn.recorder.recs["mom"] == [one_cycle_mom()(p) for p in pcts]
    assert len(learn.recorder.losses) == len(pcts)
    lr, mom = np.array(learn.recorder.recs["lr"]), np.array(learn.recorder.recs["mom"])
    assert lr.max() == pytest.approx(0.1, rel=1e-2) and np.corrcoef(lr, mom)[0, 1] < -0.9
    # after the fit: the schedule's end value, which a plain fit() then trains at
    end_lr = one_cycle_lr(0.1)(1.)
    assert learn.opt.param_groups[0]["lr"] == end_lr == pytest.approx(0.1 / 25 / 1e4)
    assert get_hyper(learn.opt.param_groups[0], "mom") == one_cycle_mom()(1.) == pytest.approx(0.95)
    learn.fit(1)
    assert learn.recorder.recs["lr"] == [end_lr] * len(dls.train)


def test_recorder_getters_strings_and_callables_and_plots():
    recorder = RecorderCB(lr="lr", mom="mom", wd="wd", double_lr=lambda cb: 2 * cb.pg["lr"],
                          n_iter=lambda cb: cb.learn.n_iter)
    opt_func = lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9, weight_decay=1e-3)
    Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[recorder], opt_func=opt_func).fit(2)
    n = 2 * 3
    assert recorder.recs == {"lr": [0.1] * n, "mom": [0.9] * n, "wd": [1e-3] * n, "double_lr": [0.2] * n,
                             "n_iter": [3] * n}
    assert recorder.learn is None  # no reference to the learner kept after the fit
    fig = recorder.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and [ax.get_title() for ax in fig.axes] == list(recorder.recs)
    assert recorder.plot_loss().axes[0].get_lines()[0].get_ydata().shape == (n,)


def test_recorder_saves_png_outside_notebooks(tmp_path):
    recorder = RecorderCB()
    Learner(nn.Linear(3, 2), make_dls(), cbs=[recorder]).fit(1)
    recorder.plot(tmp_path / "sched.png")
    recorder.plot_loss(tmp_path / "loss.png")
    assert (tmp_path / "sched.png").stat().st_size > 1000 and (tmp_path / "loss.png").stat().st_size > 1000


def test_recorded_loss_equals_the_batch_losses():
    recorder, reference = RecorderCB(), TrainLosses()
    Learner(nn.Linear(3, 2), make_dls(), cbs=[recorder, reference]).fit(2)
    assert recorder.losses == pytest.approx(reference.losses)
