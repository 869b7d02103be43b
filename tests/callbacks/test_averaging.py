import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import StopAt, make_dls
from torch import nn

from slowlearn import (
    Callback,
    CheckpointCB,
    Learner,
    LookaheadCB,
    MetricsCB,
    MomentumSGD,
    TensorBoardCB,
    WeightAveragingCB,
    default_splitter,
    set_seed,
    update_bn,
)
from slowlearn.checkpoint import read_checkpoint
from slowlearn.randomness import randomness, restore_randomness


class WeightsAfterStep(Callback):
    """Records the weights after every optimizer step, and the training progress at that step."""

    def __init__(self):
        self.weights, self.pcts = [], []

    def after_step(self, learn):
        self.weights.append(copy.deepcopy(learn.model.state_dict()))
        self.pcts.append(learn.pct_train)


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def learner(model, cbs=(), n_train=24, splitter=default_splitter, **kwargs):
    dls = make_dls(n_train=n_train, n_valid=12, bs=8, **kwargs)
    return Learner(model, dls, lr=0.1, cbs=[MetricsCB(), *cbs], opt_func=lambda p, lr: MomentumSGD(p, lr, mom=0.9),
                   splitter=splitter)


def hand_average(initial, steps, weight_of):
    """The average over the recorded states, with `weight_of(k)` the weight of the k-th update's state."""
    avg = {k: v.clone().float() for k, v in initial.items()}
    for k, state in enumerate(steps, 1):
        for name, value in state.items():
            if value.is_floating_point():
                avg[name] = avg[name] * (1 - weight_of(k)) + value * weight_of(k)
            else:
                avg[name] = value.clone()
    return avg


def assert_close_states(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_the_hand_computation(warmup):
    model = bn_model()
    initial = copy.deepcopy(model.state_dict())
    ema, record = WeightAveragingCB(decay=0.9, warmup=warmup), WeightsAfterStep()
    learner(model, [ema, record]).fit(3, valid=False)
    decay = (lambda k: min(0.9, (1 + k) / (10 + k))) if warmup else (lambda k: 0.9)
    expected = hand_average(initial, record.weights, lambda k: 1 - decay(k))
    assert len(record.weights) == 9 and ema.n == 9
    assert_close_states(ema.averaged_state_dict(), expected)


def test_ema_every_n_steps_averages_every_nth_state():
    model = bn_model()
    initial = copy.deepcopy(model.state_dict())
    ema, record = WeightAveragingCB(decay=0.8, warmup=False, every=2), WeightsAfterStep()
    learner(model, [ema, record]).fit(3, valid=False)
    expected = hand_average(initial, record.weights[1::2], lambda k: 0.2)
    assert ema.n == 4
    assert_close_states(ema.averaged_state_dict(), expected)


def test_swa_is_the_mean_of_the_weights_from_swa_start():
    model = bn_model()
    swa, record = WeightAveragingCB(swa_start=0.5, update_bn=False), WeightsAfterStep()
    learner(model, [swa, record]).fit(4, valid=False)
    averaged = [w for w, pct in zip(record.weights, record.pcts) if pct >= 0.5]
    assert swa.n == len(averaged) == 6
    expected = hand_average(averaged[0], averaged, lambda k: 1 / k)
    assert_close_states(swa.averaged_state_dict(), expected)


def test_swa_from_an_epoch_number():
    swa, record = WeightAveragingCB(swa_start=2, update_bn=False), WeightsAfterStep()
    learner(bn_model(), [swa, record]).fit(3, valid=False)
    assert swa.n == 3  # the last epoch's three steps


def test_validation_runs_on_the_average_and_training_on_the_trained_weights():
    model = bn_model()
    ema = WeightAveragingCB(decay=0.9, final="trained")
    learn = learner(model, [ema])
    learn.fit(2)
    trained = copy.deepcopy(model.state_dict())
    averaged = copy.deepcopy(model)
    averaged.load_state_dict(ema.averaged_state_dict())
    xb, yb = learn.dls.valid.x, learn.dls.valid.y
    with torch.no_grad():
        loss_of_average = F.cross_entropy(averaged.eval()(learn.dls.valid.normalise(xb)), yb).item()
        loss_of_trained = F.cross_entropy(model.eval()(learn.dls.valid.normalise(xb)), yb).item()
    assert learn.history[-1]["phase"] == "valid"
    assert learn.history[-1]["loss"] == pytest.approx(loss_of_average, rel=1e-5)
    assert abs(loss_of_average - loss_of_trained) > 1e-3
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())  # final="trained"


def test_final_average_stays_in_the_model_for_inference_and_training_continues_from_the_trained_weights():
    set_seed(0)
    a = learner(bn_model(), [WeightAveragingCB(decay=0.9), WeightsAfterStep()])
    a.fit(2)
    averaged = a.weight_averaging.averaged_state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in a.model.state_dict().items())
    assert a.validate()["loss"] == pytest.approx(a.history[-1]["loss"], rel=1e-5)  # get_preds uses the average
    trained = a.weights_after_step.weights[-1]
    a.weights_after_step.weights = []
    a.fit(1)
    first_step = a.weights_after_step.weights[0]
    # the next fit started from the trained weights: replaying its first step from them gives the same weights
    set_seed(0)
    b = learner(bn_model(), [WeightsAfterStep()])
    b.fit(2)
    assert all(torch.equal(v, trained[k]) for k, v in b.model.state_dict().items())
    b.weights_after_step.weights = []
    b.fit(1)
    assert all(torch.equal(v, first_step[k]) for k, v in b.weights_after_step.weights[0].items())


def bn_statistics_by_hand(model, dls):
    """What update_bn must give the first BatchNorm: the mean of the batch means and unbiased variances
    over the training batches that come next (without drawing them)."""
    saved = randomness(dls)
    with torch.no_grad():
        hidden = [model[0](xb) for xb, _ in dls.train]
    restore_randomness(dls, saved)
    return torch.stack([h.mean(0) for h in hidden]).mean(0), torch.stack([h.var(0) for h in hidden]).mean(0)


def test_swa_reestimates_batchnorm_statistics_and_leaves_randomness_alone():
    set_seed(0)
    with_pass = learner(bn_model(), [WeightAveragingCB(swa_start=0.5)])
    with_pass.fit(3, valid=False)
    mean, var = bn_statistics_by_hand(with_pass.model, with_pass.dls)
    torch.testing.assert_close(with_pass.model[1].running_mean, mean)
    torch.testing.assert_close(with_pass.model[1].running_var, var)
    assert with_pass.model[1].momentum == 0.1
    set_seed(0)
    without = learner(bn_model(), [WeightAveragingCB(swa_start=0.5, update_bn=False)])
    without.fit(3, valid=False)
    with_pass.fit(1, valid=False)  # the same batches follow: the pass did not draw random numbers
    without.fit(1, valid=False)
    assert torch.equal(with_pass.weight_averaging._avg["0.weight"], without.weight_averaging._avg["0.weight"])


def test_update_bn_keeps_the_statistics_of_batchnorm_frozen_in_eval_and_refills_the_others():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    learn = learner(model, splitter=lambda m: [list(m[:2].parameters()), list(m[2:].parameters())])
    learn.fit(1)  # both BatchNorms learn statistics
    learn.freeze(train_bn=False)
    frozen = {k: v.clone() for k, v in model[1].state_dict().items()}
    saved = randomness(learn.dls)
    with torch.no_grad():
        hidden = [model[:3].eval()(xb) for xb, _ in learn.dls.train]  # the first BatchNorm in eval, as in training
    restore_randomness(learn.dls, saved)
    update_bn(learn)
    assert all(torch.equal(v, frozen[k]) for k, v in model[1].state_dict().items())
    torch.testing.assert_close(model[3].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    assert model[3].num_batches_tracked == len(learn.dls.train)


def resumable_learner(cbs=()):
    return learner(bn_model(), [WeightAveragingCB(decay=0.9), *cbs], n_train=64, unseeded=True)


def assert_same_run(a, b, same_history=True):
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    for k, v in a.weight_averaging.state_dict()["trained"].items():
        assert torch.equal(v, b.weight_averaging.state_dict()["trained"][k]), k
    if same_history:  # a mid-epoch resume's training loss covers only the batches after the checkpoint
        assert a.history == b.history


def straight_and_resumed(make_learner, ckpt, where):
    """A 4-epoch fit, and the same fit interrupted at `where` (saved after 2 epochs, at the end of epoch 2's
    validation, or at its 3rd batch) and resumed from its checkpoint by a new Learner."""
    set_seed(0)
    straight = make_learner().fit(4)
    set_seed(0)
    interrupted = make_learner()
    if where == "saved after a fit":
        interrupted.fit(2)
        interrupted.save(ckpt)
    else:
        every = "epoch" if where == "end of an epoch's validation" else 3
        with pytest.raises(KeyboardInterrupt):
            interrupted.fit(4, cbs=[CheckpointCB(ckpt, every=every), StopAt(epoch=2, iter=5, exc=KeyboardInterrupt)])
    set_seed(123)
    return straight, make_learner().fit(4, resume=ckpt)


@pytest.mark.parametrize("where", ["saved after a fit", "end of an epoch's validation", "mid-epoch"])
def test_resume_with_weight_averaging_is_bitwise_exact(tmp_path, where):
    straight, resumed = straight_and_resumed(resumable_learner, tmp_path / "ckpt.pt", where)
    assert_same_run(straight, resumed, same_history=where != "mid-epoch")


def test_load_gives_the_average_and_the_callbacks_state_continues_from_the_trained_weights(tmp_path):
    set_seed(0)
    straight = resumable_learner()
    straight.fit(2)
    straight.fit(2)
    set_seed(0)
    first = resumable_learner()
    first.fit(2)
    first.save(tmp_path / "ckpt.pt")
    loaded = resumable_learner().load(tmp_path / "ckpt.pt")  # the model, for inference: the average
    averaged = first.weight_averaging.averaged_state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in loaded.model.state_dict().items())
    loaded.weight_averaging.load_state_dict(read_checkpoint(tmp_path / "ckpt.pt")["callbacks"]["WeightAveragingCB"])
    loaded.fit(2)  # with the callback's state loaded too, training goes on from the trained weights
    assert_same_run(straight, loaded)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of decay"), ({"decay": 0.9, "swa_start": 0.5}, "exactly one of decay"),
    ({"decay": 1.0}, "0 < decay < 1"), ({"swa_start": 1.5}, "swa_start"), ({"decay": 0.9, "every": 0}, "every"),
    ({"decay": 0.9, "final": "best"}, "final")])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightAveragingCB(**kwargs)


def test_lr_find_sweeps_without_the_average_and_the_loggers(tmp_path):
    learn = learner(bn_model(), [WeightAveragingCB(decay=0.9), TensorBoardCB(tmp_path / "tb")])
    learn.fit(1)
    before, files = learn.weight_averaging.state_dict(), sorted((tmp_path / "tb").iterdir())
    learn.lr_find(num_it=5, show_plot=False)
    after = learn.weight_averaging.state_dict()
    assert after["n"] == before["n"] and all(torch.equal(v, after["avg"][k]) for k, v in before["avg"].items())
    assert sorted((tmp_path / "tb").iterdir()) == files


class WeightsAfterLookahead(WeightsAfterStep):
    order = LookaheadCB.order + 1  # sees the weights the model goes on from


def float_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_lookahead_equals_the_hand_computation():
    fast, after = WeightsAfterStep(), WeightsAfterLookahead()
    learn = learner(bn_model(), [fast, LookaheadCB(every=2, alpha=0.3), after])  # 3 steps an epoch
    slow = float_state(learn.model)
    learn.fit(2)
    for step, (w, restart) in enumerate(zip(fast.weights, after.weights), 1):
        if step % 2 == 0:  # s <- s + alpha * (w - s), and the model goes on from s
            slow = {k: v + 0.3 * (w[k] - v) for k, v in slow.items()}
            assert_close_states(float_state_of(restart), slow)
        else:
            assert_close_states(float_state_of(restart), float_state_of(w))
    assert_close_states(float_state(learn.model), slow)  # step 6 was a sync: the model ends on the slow weights


def float_state_of(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_lookahead_with_alpha_1_changes_nothing_and_a_schedule_reads_the_progress():
    set_seed(0)
    plain = learner(bn_model()).fit(2)
    pcts = []
    set_seed(0)
    pulled = learner(bn_model(), [LookaheadCB(every=2, alpha=lambda pct: pcts.append(pct) or 1.)]).fit(2)
    assert all(torch.equal(v, pulled.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    assert pcts == pytest.approx([1 / 6, 3 / 6, 5 / 6])  # pct_train during steps 2, 4 and 6 of 6


@pytest.mark.parametrize("where", ["end of an epoch's validation", "mid-epoch"])
def test_resume_with_lookahead_is_bitwise_exact(tmp_path, where):
    # not "saved after a fit": a 2-epoch fit ends on the slow weights, which a 4-epoch one does not do there
    make = lambda: learner(bn_model(), [LookaheadCB(every=3, alpha=0.5)], n_train=64, unseeded=True)
    straight, resumed = straight_and_resumed(make, tmp_path / "ckpt.pt", where)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_lookahead_starts_from_weights_loaded_into_the_model_between_fits_not_the_old_slow_weights():
    """After a complete fit the model holds the slow weights: other weights in the model at the next fit (learn.load,
    EarlyStoppingCB's restore_best) are where training goes on from, and the first sync must not pull them back."""
    other = learner(bn_model()).fit(1).model.state_dict()
    learn = learner(bn_model(), [LookaheadCB(every=3, alpha=0.5)]).fit(1)  # 3 steps an epoch: a sync at the end
    learn.model.load_state_dict(other)
    fresh = learner(bn_model(), [LookaheadCB(every=3, alpha=0.5)])
    fresh.model.load_state_dict(other)
    fresh.opt = fresh.make_optimizer()
    fresh.opt.load_state_dict(copy.deepcopy(learn.opt.state_dict()))  # torch would share its tensors
    fresh.dls.train.generator.set_state(learn.dls.train.generator.get_state())
    learn.fit(1)
    fresh.fit(1)
    assert_close_states(learn.model.state_dict(), fresh.model.state_dict())


def test_lookahead_goes_on_from_its_slow_weights_after_an_interrupted_fit():
    """A fit cut short does not end on the slow weights: the next fit goes on pulling towards them."""
    learn = learner(bn_model(), [LookaheadCB(every=2, alpha=0.5)])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(1, cbs=[StopAt(0, 2, KeyboardInterrupt)])
    lookahead = learn.cbs[-1]
    slow = {k: v.clone() for k, v in lookahead._slow.items()}
    with pytest.raises(KeyboardInterrupt):
        learn.fit(1, cbs=[InterruptAtFitStart()])  # once LookaheadCB's before_fit has run
    assert all(torch.equal(v, lookahead._slow[k]) for k, v in slow.items())


def test_lookahead_before_an_ema_that_leaves_its_average_in_the_model_goes_on_from_its_slow_weights():
    """WeightAveragingCB leaves its average in the model after a fit and puts the trained weights back in its
    before_fit: a LookaheadCB listed before it (the same order) took the average for other weights loaded between the
    fits and restarted its slow weights from it. Training must go on as without the average."""
    alone = learner(bn_model(), [LookaheadCB(every=2, alpha=0.5)]).fit(1).fit(1)
    averaging = WeightAveragingCB(decay=0.9)
    learner(bn_model(), [LookaheadCB(every=2, alpha=0.5), averaging]).fit(1).fit(1)
    assert_close_states(averaging.state_dict()["trained"], alone.model.state_dict())


class InterruptAtFitStart(Callback):
    order = LookaheadCB.order + 1

    def before_fit(self, learn):
        raise KeyboardInterrupt


@pytest.mark.parametrize("kwargs, message", [({"every": 0}, "every"), ({"alpha": 0.}, "alpha"),
                                             ({"alpha": 1.5}, "alpha")])
def test_lookahead_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LookaheadCB(**kwargs)
