import math

import pytest
import torch
from conftest import StopAt, make_dls
from torch import nn

from slowlearn import (
    Callback,
    CancelStepException,
    ChannelsLastCB,
    CheckpointCB,
    GradientClipCB,
    Learner,
    MixedPrecisionCB,
    TerminateOnNaNCB,
    get_kaiming_initialized_model,
    resnet,
    speed_cbs,
)


def test_mixed_precision_bf16_on_cpu_runs_forward_in_bf16():
    dtypes = []

    class Watch(Callback):
        def after_predict(self, learn):
            dtypes.append(learn.preds.dtype)

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MixedPrecisionCB("bf16"), Watch()])
    learn.fit(1)
    assert set(dtypes) == {torch.bfloat16} and learn.model.weight.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


class Overflow(Callback):
    order = -3  # after MixedPrecisionCB's backward, before its step

    def after_backward(self, learn):
        if learn.epoch == 0 and learn.iter == 1:
            learn.model.weight.grad[0, 0] = math.inf


def test_mixed_precision_fp16_counts_skipped_steps():
    mp = MixedPrecisionCB("fp16")
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[mp, Overflow(), GradientClipCB(1.), TerminateOnNaNCB()])
    learn.fit(1)
    assert mp.skipped_steps == 1 and torch.isfinite(learn.model.weight).all()
    with pytest.raises(ValueError, match="dtype must be one of"):
        MixedPrecisionCB("int8")


def test_a_resumed_fp16_run_goes_on_with_the_saved_loss_scale(tmp_path):
    def run(resume=None, stop=()):
        torch.manual_seed(0)
        mp = MixedPrecisionCB("fp16")
        learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[mp, Overflow(), CheckpointCB(tmp_path / "ckpt.pt"), *stop])
        learn.fit(2, resume=resume)
        return mp, learn

    straight, straight_learn = run()
    run(stop=[StopAt(epoch=1, iter=0)])  # saved after epoch 0, whose overflow backed the scale off
    resumed, resumed_learn = run(resume=tmp_path / "ckpt.pt")
    assert straight.scaler.get_scale() == resumed.scaler.get_scale() < 2. ** 16
    assert straight.skipped_steps == resumed.skipped_steps == 1
    assert torch.equal(straight_learn.model.weight, resumed_learn.model.weight)


class HalfPrecisionCB(MixedPrecisionCB):
    """MixedPrecisionCB under another name: the scaler reaches GradientClipCB through the Learner's slot."""


@pytest.mark.parametrize("precision_cb", [MixedPrecisionCB, HalfPrecisionCB])
def test_clipping_under_fp16_sees_unscaled_gradients_whatever_the_callback_is_called(precision_cb):
    def norms(cbs):
        clip = GradientClipCB(max_norm=1e9)  # measures without clipping
        torch.manual_seed(0)
        learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[*cbs, clip])
        learn.fit(1)
        return clip.norms, learn

    fp32, _ = norms([])
    fp16, learn = norms([precision_cb("fp16")])
    assert fp16 == pytest.approx(fp32, rel=1e-2)  # scaled gradients would be 2**16 times larger
    assert learn.grad_scaler is None  # the slot is the callback's for the fit only


def test_speed_cbs_give_the_callbacks_of_the_choice(cpu_features):
    cpu_features(amx=True)
    cbs = speed_cbs(resnet(), device="cpu", verbose=False)
    assert [type(cb) for cb in cbs] == [ChannelsLastCB, MixedPrecisionCB] and cbs[1].dtype == torch.bfloat16
    cpu_features()
    assert speed_cbs(get_kaiming_initialized_model(), device="cpu", verbose=False) == []
    assert speed_cbs(resnet(), "fp32", "cpu", verbose=False) == []
    cbs = speed_cbs(resnet(), "fp32", "cpu", channels_last=True, verbose=False)
    assert [type(cb) for cb in cbs] == [ChannelsLastCB]


def test_the_users_own_precision_and_layout_callbacks_win(cpu_features):
    cpu_features(amx=True)
    mine = [MixedPrecisionCB("bf16"), ChannelsLastCB()]
    assert speed_cbs(resnet(), device="cpu", verbose=False, given=mine) == []
    assert speed_cbs(resnet(), device="cpu", verbose=False, given=mine[:1]) == []  # as before "auto" existed
    assert [type(cb) for cb in speed_cbs(resnet(), device="cpu", verbose=False, given=mine[1:])] == [MixedPrecisionCB]


def test_a_disabled_scalers_empty_state_leaves_the_new_scaler_as_it_is():
    mp = MixedPrecisionCB("fp16")
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[mp])
    learn.fit(1)
    scale = mp.scaler.get_scale()
    mp.load_state_dict({"scaler": {}, "skipped_steps": 0})  # what a run whose scaler was disabled saved
    assert mp.scaler.get_scale() == scale and mp.skipped_steps == 0


def test_a_step_cancelled_after_the_clip_unscaled_fp16_gradients_leaves_the_next_batch_working():
    class SkipSecondStep(Callback):
        order = 10  # after GradientClipCB, which unscaled the gradients

        def after_backward(self, learn):
            if learn.iter == 1:
                raise CancelStepException

        def after_step(self, learn):
            steps.append((learn.epoch, learn.iter))

    mp, steps = MixedPrecisionCB("fp16"), []
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[mp, GradientClipCB(1.), SkipSecondStep()])
    learn.fit(2)  # raised "unscale_() has already been called on this optimizer since the last update()" at iter 2
    every_step = [(epoch, i) for epoch in range(2) for i in range(len(learn.dls.train)) if i != 1]
    assert steps == every_step and mp.skipped_steps == 0 and mp.scaler.get_scale() == 2. ** 16
