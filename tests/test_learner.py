
import contextlib
import copy

import pytest
import torch
from conftest import StopAt, TrainLosses, make_dls
from torch import nn

from slowlearn import (
    ActivationStatsCB,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    DataLoaders,
    Learner,
    MetricsCB,
    MomentumCB,
    ProgressCB,
    TensorLoader,
)
from slowlearn.callback import EVENTS


def _record(event):
    return lambda self, learn: self.events.append(event)


class EventLog(Callback):
    """Records the name of every event, in order."""

    def __init__(self):
        self.events = []

    locals().update({event: _record(event) for event in EVENTS})


def fit_events(cbs=(), n_train=8, n_valid=4, bs=4, **fit_kwargs):
    log = EventLog()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train, n_valid, bs), lr=0.1, cbs=[log, *cbs])
    learn.fit(1, **fit_kwargs)
    return log.events, learn


BATCH_TRAIN = ["before_batch", "after_predict", "after_loss", "after_backward", "after_step", "after_batch",
               "cleanup_batch"]
BATCH_VALID = ["before_batch", "after_predict", "after_loss", "after_batch", "cleanup_batch"]


def test_event_sequence_of_one_epoch():
    events, _ = fit_events()
    assert events == (["before_fit", "before_epoch"] + BATCH_TRAIN * 2 + ["after_epoch", "cleanup_epoch"]
                      + ["before_epoch"] + BATCH_VALID + ["after_epoch", "cleanup_epoch", "after_fit", "cleanup_fit"])


def raising(event, exc, when=lambda learn: True):
    """A callback class whose `event` method raises `exc` when `when(learn)`."""
    cls = type(f"Raise_{event}", (Callback,), {event: lambda self, learn: _maybe_raise(exc, when, learn)})
    return cls()


def _maybe_raise(exc, when, learn):
    if when(learn):
        raise exc("boom")


def test_cancel_batch_skips_rest_of_batch_and_after_batch():
    events, _ = fit_events([raising("after_loss", CancelBatchException, lambda l: l.training and l.iter == 0)])
    first_batch = events[2:2 + 4]
    assert first_batch == ["before_batch", "after_predict", "after_loss", "cleanup_batch"]
    assert events[6:6 + len(BATCH_TRAIN)] == BATCH_TRAIN  # the next batch runs in full


def test_cancel_epoch_skips_rest_of_phase_and_after_epoch():
    events, _ = fit_events([raising("after_batch", CancelEpochException, lambda l: l.training)])
    assert events[:2 + len(BATCH_TRAIN)] == ["before_fit", "before_epoch"] + BATCH_TRAIN
    rest = events[2 + len(BATCH_TRAIN):]
    assert rest[0] == "cleanup_epoch"  # no second batch, no after_epoch
    assert rest[1] == "before_epoch" and "after_fit" in rest  # the valid phase and the fit go on


def test_cancel_fit_skips_after_fit_but_cleans_up():
    events, _ = fit_events([raising("before_epoch", CancelFitException)])
    assert events == ["before_fit", "before_epoch", "cleanup_epoch", "cleanup_fit"]


class StopsAfterTraining(Callback):
    """Asks the fit to stop in the first training phase's after_epoch, before the callbacks of higher order."""

    order = -1

    def after_epoch(self, learn):
        if learn.training:
            learn.stop_reason = "enough"


def test_a_stop_reason_ends_the_fit_after_the_epochs_phases_and_handlers_have_all_run():
    log = EventLog()
    log.order = 1  # after the callback that asks to stop, in the same after_epoch
    learn = Learner(nn.Linear(3, 2), make_dls(8, 4, 4), lr=0.1, cbs=[StopsAfterTraining(), log])
    learn.fit(3)
    assert log.events == (["before_fit", "before_epoch"] + BATCH_TRAIN * 2 + ["after_epoch", "cleanup_epoch"]
                          + ["before_epoch"] + BATCH_VALID + ["after_epoch", "cleanup_epoch", "after_fit", "cleanup_fit"])
    assert learn.epoch == 0 and learn.stop_reason == "enough"
    learn.remove_cb(learn.stops_after_training).fit(1)
    assert learn.stop_reason is None  # each fit starts without one


def test_error_in_callback_names_it_runs_every_cleanup_and_leaves_model_usable():
    bad = raising("after_backward", ValueError, lambda l: l.iter == 1)
    log = EventLog()
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[log])
    with pytest.raises(ValueError) as info:
        learn.fit(1, cbs=[bad])
    assert any("Raise_after_backward" in note and "after_backward" in note for note in info.value.__notes__)
    assert log.events[-3:] == ["cleanup_batch", "cleanup_epoch", "cleanup_fit"]
    assert bad not in learn.cbs
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    learn.fit(1)  # trains again without error
    assert torch.isfinite(learn.loss)


def test_error_in_model_propagates_with_cleanup():
    log = EventLog()
    learn = Learner(nn.Linear(4, 2), make_dls(), cbs=[log])  # wrong input size
    with pytest.raises(RuntimeError):
        learn.fit(1)
    assert log.events[-3:] == ["cleanup_batch", "cleanup_epoch", "cleanup_fit"]




def test_replaced_verb_runs_instead_of_default():
    class NoStep(Callback):
        def step(self, learn):
            self.calls = getattr(self, "calls", 0) + 1

    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    cb = NoStep()
    Learner(model, make_dls(), cbs=[cb]).fit(1)
    assert cb.calls == 3  # 10 samples in batches of 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))




def test_near_miss_without_prefix_is_caught_but_helpers_are_not():
    class Typo(Callback):
        def zero_grads(self, learn): pass

    class Helper(Callback):
        def plot(self): pass

        def state_dict(self): return {}

    with pytest.raises(AttributeError, match="zero_grad"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[Typo()]).fit(1)
    Learner(nn.Linear(3, 2), make_dls(), cbs=[Helper()]).fit(1)




def test_optimizer_state_survives_two_fits():
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1,
                    opt_func=lambda params, lr: torch.optim.SGD(params, lr, momentum=0.9))
    learn.fit(1)
    opt = learn.opt
    buf = opt.state[learn.model.weight]["momentum_buffer"].clone()
    learn.fit(1)
    assert learn.opt is opt
    assert not torch.equal(opt.state[learn.model.weight]["momentum_buffer"], buf)
    learn.fit(1, reset_opt=True)
    assert learn.opt is not opt


def test_fit_lr_sets_every_param_group():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    groups = lambda params, lr: torch.optim.SGD([{"params": model[0].parameters()},
                                                 {"params": model[1].parameters(), "lr": 1.}], lr)
    learn = Learner(model, make_dls(), lr=0.1, opt_func=groups)
    learn.fit(1)
    learn.fit(1, lr=0.01)
    assert [g["lr"] for g in learn.opt.param_groups] == [0.01, 0.01]


def test_fit_callbacks_are_removed_afterwards_and_add_remove_cb():
    class A(Callback):
        pass

    a, b = A(), A()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[a])
    learn.fit(1, cbs=[b])
    assert learn.cbs == [a]
    learn.add_cb(b)
    assert learn.cbs == [a, b]
    learn.remove_cb(a)
    assert learn.cbs == [b]


def test_state_during_fit_and_pct_train():
    seen = []

    class Watch(Callback):
        def before_batch(self, learn):
            if learn.training:
                seen.append((learn.epoch, learn.iter, learn.n_iter, learn.n_epochs, learn.pct_train))

        def after_loss(self, learn):
            assert learn.preds.shape == (len(learn.batch[0]), 2) and learn.loss.ndim == 0
            assert learn.dl is (learn.dls.train if learn.training else learn.dls.valid)
            assert learn.model.training == learn.training
            assert torch.is_grad_enabled() == learn.training

    learn = Learner(nn.Linear(3, 2), make_dls(n_train=8), cbs=[Watch()])
    learn.fit(2)
    assert [s[:4] for s in seen] == [(0, 0, 2, 2), (0, 1, 2, 2), (1, 0, 2, 2), (1, 1, 2, 2)]
    assert [s[4] for s in seen] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert learn.pct_train == 1


class SaveBestCB(Callback):
    pass


def test_callbacks_are_found_by_name():
    cb = SaveBestCB()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[cb])
    assert learn.save_best is cb
    with pytest.raises(AttributeError, match="'nothing'"):
        learn.nothing


def test_callback_names_follow_add_remove_assignment_and_fit_only_callbacks():
    first, second, during_fit = SaveBestCB(), SaveBestCB(), []
    learn = Learner(nn.Linear(3, 2), make_dls())
    learn.add_cb(first).add_cb(second)
    assert learn.save_best is first  # the first of a name
    learn.remove_cb(first)
    assert learn.save_best is second
    learn.cbs = []
    assert not hasattr(learn, "save_best")
    watch = type("Watch", (Callback,), {"before_fit": lambda self, learn: during_fit.append(learn.save_best)})()
    learn.fit(1, cbs=[first, watch])
    assert during_fit == [first] and not hasattr(learn, "save_best")  # named for its fit only


def test_a_callback_name_never_hides_an_attribute_of_the_learner():
    Model, Opt = (type(name, (Callback,), {}) for name in ("ModelCB", "OptCB"))
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[Model(), Opt()])
    assert isinstance(learn.model, nn.Linear) and learn.opt is None
    learn.fit(1)
    assert isinstance(learn.opt, torch.optim.SGD)


def test_learner_has_no_getattr_hook():
    # With a __getattr__ Python 3.11 cannot specialise attribute reads on the class, and the loop and its
    # callbacks read dozens per step: it cost the bare Learner a third of its per-step instructions.
    assert not any("__getattr__" in vars(cls) for cls in Learner.__mro__)


def test_empty_loader_is_a_clear_error():
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=0))
    with pytest.raises(ValueError, match="train loader has no batches"):
        learn.fit(1)


def test_train_only_and_valid_only():
    events, _ = fit_events(valid=False)
    assert "after_backward" in events and events.count("before_epoch") == 1
    events, _ = fit_events(train=False)
    assert "after_backward" not in events and events.count("before_epoch") == 1


def test_keyboard_interrupt_runs_every_cleanup_and_keeps_history():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    progress = ProgressCB(verbose=1)  # progress bars, even in a test's captured output
    cbs = [MetricsCB(), progress, ActivationStatsCB(), StopAt(1, 1, KeyboardInterrupt)]
    learn = Learner(model, make_dls(), cbs=cbs)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert progress.view.batches is None and progress.view.epochs.disable
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train"), (0, "valid")]
    learn.fit(1)  # the learner still works


@pytest.mark.parametrize("exc", [KeyboardInterrupt, CancelFitException, RuntimeError])
def test_a_batch_interrupted_between_backward_and_step_leaves_no_gradients_for_the_next_fit(exc):
    """Ctrl-C lands between a batch's backward pass and its step often (they are most of the step's time): that
    batch's gradients must not be added to the first step of the next fit."""
    def learner():
        torch.manual_seed(0)
        return Learner(nn.Linear(3, 2), make_dls(), lr=0.1)

    interrupted = learner()
    with pytest.raises((exc, CancelFitException)) if exc is not CancelFitException else contextlib.nullcontext():
        interrupted.fit(1, cbs=[raising("after_backward", exc, when=lambda learn: learn.iter == 2)])
    assert all(p.grad is None for p in interrupted.model.parameters())
    straight = learner()
    straight.model.load_state_dict(interrupted.model.state_dict())
    straight.opt = straight.make_optimizer()
    straight.opt.load_state_dict(copy.deepcopy(interrupted.opt.state_dict()))  # torch would share its tensors
    straight.dls.train.generator.set_state(interrupted.dls.train.generator.get_state())  # the same batches
    interrupted.fit(1)
    straight.fit(1)
    assert all(torch.equal(p, q) for p, q in zip(interrupted.model.parameters(), straight.model.parameters()))


@pytest.mark.parametrize("event", ["before_batch", "after_batch"])
def test_an_epoch_cancelled_outside_a_batchs_backward_and_step_keeps_momentum_cbs_gradients(event):
    """MomentumCB keeps the decayed gradients in p.grad from step to step: an epoch that a callback ends with
    CancelEpochException before a batch's backward pass or after its step (miniai's way to shorten epochs) goes on
    with them, as an epoch that ends by itself does; only a batch cut short between its backward pass and its step
    drops them."""
    def fit(n_train, cbs):
        torch.manual_seed(0)
        x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
        dls = DataLoaders(TensorLoader(x[:n_train], y[:n_train], 4, device="cpu"), TensorLoader(x, y, 4, device="cpu"))
        return Learner(nn.Linear(3, 2), dls, lr=0.1, cbs=[MomentumCB(0.9), *cbs]).fit(3, valid=False)

    two_batches = fit(8, [])
    third_batch_or_second = 2 if event == "before_batch" else 1
    cut_at_two = fit(12, [raising(event, CancelEpochException, lambda learn: learn.iter == third_batch_or_second)])
    assert all(torch.equal(p, q) for p, q in zip(cut_at_two.model.parameters(), two_batches.model.parameters()))


def test_dispatch_wrap_runs_every_other_handler_through_the_wrapper():
    calls = []

    class Tracer(Callback):
        def before_fit(self, learn):
            def wrap(method):
                def traced(learn):
                    calls.append(method.__self__)
                    method(learn)
                return traced
            learn.dispatch.wrap(wrap, skip=[self])

        def after_fit(self, learn):
            pass  # skipped: not traced

    log = EventLog()
    Learner(nn.Linear(3, 2), make_dls(n_train=4, n_valid=4), cbs=[Tracer(), log]).fit(1)
    # every EventLog handler after before_fit (whose list was running when it was wrapped), none of Tracer's
    assert calls == [log] * (len(log.events) - 1) and log.events[0] == "before_fit"


def test_events_that_no_callback_handles_are_not_called():
    class AfterBatch(Callback):
        def after_batch(self, learn):
            pass

    called = []
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4), cbs=[AfterBatch()])
    learn.callback = lambda event: called.append(event) or Learner.callback(learn, event)
    learn.fit(1)
    assert called == ["after_batch"] * 3  # two training batches and one validation batch, no empty call


def test_a_handler_switched_off_for_a_phase_is_skipped_and_the_others_still_run():
    class TrainOnly(Callback):
        def before_epoch(self, learn):
            learn.dispatch.set_active(self, "after_batch", learn.training)

        def after_batch(self, learn):
            assert learn.training

    class Tracer(Callback):  # wraps every other handler: a handler switched back on is still wrapped
        order = -1

        def __init__(self):
            self.traced = []

        def before_fit(self, learn):
            learn.dispatch.wrap(lambda method: lambda learn: self.traced.append(method.__name__) or method(learn),
                                skip=[self])

    log, train_only, tracer = EventLog(), TrainOnly(), Tracer()
    Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4), cbs=[train_only, log, tracer]).fit(2)
    assert log.events.count("after_batch") == 2 * (2 + 1)  # the other callback sees every batch of both epochs
    assert tracer.traced.count("after_batch") == 2 * 2  # TrainOnly's, wrapped, in each training batch only


@pytest.mark.parametrize("event", ["after_btach", "after_step"])
def test_switching_a_handler_the_callback_does_not_have_is_an_error_naming_the_events(event):
    class Switcher(Callback):
        def before_fit(self, learn):
            learn.dispatch.set_active(self, event, False)

        def after_batch(self, learn):
            pass

    with pytest.raises(ValueError, match=f"Switcher has no '{event}' handler.*after_batch"):
        Learner(nn.Linear(3, 2), make_dls()).fit(1, cbs=[Switcher()])


class LossReader(Callback):
    """Collects (learn.loss_value, the loss tensor's own value) at every batch."""
    reads_loss_value = True

    def __init__(self):
        self.seen = []

    def after_batch(self, learn):
        self.seen.append((learn.loss_value, learn.loss.detach().clone()))


def test_the_loss_is_read_once_a_batch_on_the_cpu_for_every_callback_that_reads_it(monkeypatch):
    reads, item = [], torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(t) or item(t))
    reader = LossReader()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4),
                    cbs=[reader, MetricsCB(), ProgressCB(verbose=0)])
    learn.fit(1)
    assert len(reader.seen) == 3 and len(reads) == 3  # two training and one validation batch: one read each
    assert all(value == loss.item() for value, loss in reader.seen)
    assert learn.history[0]["loss"] == pytest.approx((reader.seen[0][0] * 4 + reader.seen[1][0] * 4) / 8)


def test_the_loss_is_not_read_without_a_callback_that_reads_it_nor_off_the_cpu(monkeypatch):
    class Other(LossReader):
        reads_loss_value = False

    other = Other()
    Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4), cbs=[other]).fit(1)
    assert [value for value, _ in other.seen] == [None] * 3
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))  # as on a GPU: no read per batch
    reader = LossReader()
    Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4), cbs=[reader]).fit(1)
    assert [value for value, _ in reader.seen] == [None] * 3


def test_the_learner_keeps_every_training_loss_once_for_the_callbacks_that_read_losses(monkeypatch):
    def fit(*cbs):
        reference = TrainLosses()
        learn = Learner(nn.Linear(3, 2), make_dls(n_train=12, n_valid=4, bs=4), cbs=[*cbs, reference]).fit(2)
        return learn, reference.losses

    learn, losses = fit(LossReader())
    assert len(losses) == 6 and learn.batch_losses.read() == losses  # every training batch, no validation one
    assert fit()[0].batch_losses.read() == []  # no callback reads losses: nothing kept
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))  # as on a GPU: tensors, read in bulk
    learn, losses = fit(LossReader())
    assert learn.batch_losses.n_pending == 6 and learn.batch_losses.read() == pytest.approx(losses)


def test_during_after_loss_the_loss_value_is_none_not_the_last_batchs():
    class DuringAfterLoss(LossReader):
        def __init__(self):
            super().__init__()
            self.during = []

        def after_loss(self, learn):
            self.during.append(learn.loss_value)

    reader = DuringAfterLoss()
    Learner(nn.Linear(3, 2), make_dls(n_train=8, n_valid=4, bs=4), cbs=[reader]).fit(1)
    assert reader.during == [None] * 3
    assert all(value == loss.item() for value, loss in reader.seen)  # set once the after_loss handlers ran


def test_a_phase_whose_first_batch_is_cancelled_keeps_the_losses_as_tensors_and_still_averages_them():
    class SkipFirst(Callback):
        order = -1

        def before_batch(self, learn):
            if learn.iter == 0:
                raise CancelBatchException()

    reader = LossReader()
    learn = Learner(nn.Linear(3, 2), make_dls(n_train=12, n_valid=8, bs=4), cbs=[SkipFirst(), reader, MetricsCB()])
    learn.fit(1)
    assert [value for value, _ in reader.seen] == [None] * 3  # the phase's read was never decided on: no float
    train_losses = [loss.item() for _, loss in reader.seen[:2]]
    assert learn.history[0]["loss"] == pytest.approx(sum(train_losses) / 2)


def test_a_loss_that_is_not_a_tensor_is_refused_on_the_first_batch_saying_what_to_return():
    class FloatLoss(Callback):
        def get_loss(self, learn):
            learn.loss = 0.5

    with pytest.raises(TypeError, match="The loss is a float.*return a torch tensor"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[FloatLoss(), MetricsCB()]).fit(1)


def test_a_loss_with_one_value_per_item_is_refused_before_any_step_naming_the_reduction():
    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    learn = Learner(model, make_dls(), lambda preds, y: nn.functional.cross_entropy(preds, y, reduction="none"),
                    cbs=[MetricsCB()])
    with pytest.raises(ValueError, match=r"loss has shape \(4,\).*reduction='mean'"):
        learn.fit(1)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


@pytest.mark.parametrize("n_epochs", [-3, 0, 1.5])
def test_a_number_of_epochs_that_trains_nothing_or_is_not_whole_is_refused(n_epochs):
    with pytest.raises(ValueError, match=f"fit: Invalid n_epochs: {n_epochs}"):
        Learner(nn.Linear(3, 2), make_dls()).fit(n_epochs)


@pytest.mark.parametrize("lr", [-0.5, float("nan"), float("inf")])
def test_an_lr_that_cannot_train_is_refused_also_for_an_existing_optimizer(lr):
    learn = Learner(nn.Linear(3, 2), make_dls())
    learn.fit(1)  # the optimizer exists: fit(lr=) only sets its groups' lr
    before = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match=f"fit: Invalid lr: {lr}"):
        learn.fit(1, lr=lr)
    assert torch.equal(learn.model.weight, before) and learn.opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match=f"Learner: Invalid lr: {lr}"):
        Learner(nn.Linear(3, 2), make_dls(), lr=lr).fit(1)


class Cleanup(Callback):
    def __init__(self, order, fail_in=None):
        self.order, self.fail_in, self.cleaned = order, fail_in, False

    def before_fit(self, learn):
        if self.fail_in == "before_fit":
            raise RuntimeError(f"before_fit failed in {self.order}")

    def cleanup_fit(self, learn):
        self.cleaned = True
        if self.fail_in == "cleanup_fit":
            raise RuntimeError(f"cleanup failed in {self.order}")


def test_every_cleanup_runs_when_one_fails_and_hooks_come_off():
    stats, after = ActivationStatsCB(), Cleanup(order=20)
    learn = Learner(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), make_dls(),
                    cbs=[Cleanup(order=-10, fail_in="cleanup_fit"), Cleanup(order=-5, fail_in="cleanup_fit"),
                         stats, after])
    with pytest.raises(RuntimeError, match="cleanup failed in -10") as error:
        learn.fit(1)
    assert after.cleaned and not stats.hooks  # the later cleanups ran: no activation hook left on the model
    assert "(cleanup_fit also failed: RuntimeError: cleanup failed in -5" in "\n".join(error.value.__notes__)
    assert not any(m._forward_hooks for m in learn.model.modules())


def test_an_error_in_before_fit_is_not_masked_by_a_cleanup_error():
    first, second = Cleanup(order=0, fail_in="before_fit"), Cleanup(order=10, fail_in="cleanup_fit")
    with pytest.raises(RuntimeError, match="before_fit failed in 0") as error:
        Learner(nn.Linear(3, 2), make_dls(), cbs=[first, second]).fit(1)
    notes = "\n".join(error.value.__notes__)
    assert "(then cleanup_fit failed too: RuntimeError: cleanup failed in 10" in notes and second.cleaned


def test_a_cleanup_error_after_a_cancel_is_raised():
    with pytest.raises(RuntimeError, match="cleanup failed in 10"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[StopAt(0, 0), Cleanup(order=10, fail_in="cleanup_fit")]).fit(1)


def test_a_fit_started_from_a_callback_during_a_fit_is_refused_saying_what_was_wrong():
    """It used to fail with "element 0 of tensors does not require grad" (the inner fit trained under the outer
    fit's no_grad validation), naming neither the callback nor the cause."""
    class FitsAgain(Callback):
        def after_epoch(self, learn):
            if not learn.training:
                learn.fit(1)

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[MetricsCB()])
    cb = FitsAgain()
    with pytest.raises(RuntimeError, match="Learner.fit was called while this Learner is fitting") as error:
        learn.fit(1, cbs=[cb])
    assert "(raised in callback FitsAgain during after_epoch)" in error.value.__notes__
    assert [row["phase"] for row in learn.history] == ["train"]  # the error ended the outer fit, nothing else ran
    learn.fit(1)  # the guard is lifted when the fit ends, however it ends
    with pytest.raises(RuntimeError, match="while this Learner is fitting"):
        learn.fit(1, cbs=[FitsAgainViaLrFind()])


class FitsAgainViaLrFind(Callback):
    def before_fit(self, learn):
        learn.lr_find(num_it=3, show_plot=False)


def test_an_error_in_a_replaced_verb_names_the_callback_and_the_verb():
    class BrokenLoss(Callback):
        def get_loss(self, learn):
            raise ValueError("no loss today")

    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1, cbs=[BrokenLoss()])
    with pytest.raises(ValueError, match="no loss today") as error:
        learn.fit(1)
    assert "(raised in callback BrokenLoss during get_loss)" in error.value.__notes__


def test_each_step_frees_the_gradients():
    learn = Learner(nn.Linear(3, 2), make_dls(), lr=0.1)
    learn.fit(1, valid=False)
    assert all(p.grad is None for p in learn.model.parameters())  # zero_grad sets them to None, not to zeros


def test_a_fit_only_callback_that_removes_itself_during_the_fit_ends_the_fit_cleanly():
    """fit(cbs=) took its callbacks off with list.remove, so one that had called learn.remove_cb(self) (a one-shot
    callback, as in fastai) ended the fit with "list.remove(x): x not in list", and left the others on the Learner."""
    class OneShot(Callback):
        def after_epoch(self, learn):
            if self in learn.cbs:  # the running fit still calls it (its handlers are bound for the fit)
                learn.remove_cb(self)

    other = SaveBestCB()
    learn = Learner(nn.Linear(3, 2), make_dls())
    learn.fit(2, cbs=[OneShot(), other])
    assert learn.cbs == [] and not hasattr(learn, "save_best")


class BatchCancelInBeforeEpoch(Callback):
    def before_epoch(self, learn):
        raise CancelBatchException


class StepCancelInAfterBatch(Callback):
    def after_batch(self, learn):
        raise CancelStepException


class EpochCancelInBeforeFit(Callback):
    def before_fit(self, learn):
        raise CancelEpochException


@pytest.mark.parametrize("cb, belongs", [
    (BatchCancelInBeforeEpoch(), "an event of a batch"),
    (StepCancelInAfterBatch(), "after_backward"),
    (EpochCancelInBeforeFit(), "an event of an epoch's phase"),
])
def test_a_cancel_raised_where_no_level_catches_it_names_the_callback_and_where_it_belongs(cb, belongs):
    """It ended the fit as the bare cancel exception, naming neither the callback nor the mistake."""
    event = next(name for name in vars(type(cb)) if not name.startswith("_"))
    cancel = {"before_epoch": CancelBatchException, "after_batch": CancelStepException,
              "before_fit": CancelEpochException}[event]
    with pytest.raises(RuntimeError, match=rf"{cancel.__name__} was raised by callback {type(cb).__name__} in {event}, "
                                           rf"where no level of the loop catches it, so it would end the fit: raise it "
                                           rf"in {belongs}") as raised:
        Learner(nn.Linear(3, 2), make_dls(), cbs=[cb]).fit(1)
    assert isinstance(raised.value.__cause__, cancel)
