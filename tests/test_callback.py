"""The callback protocol: verbs with one owner, event names checked, order."""
import re

import pytest
from conftest import make_dls
from torch import nn

from slowlearn import Callback, Learner


def test_two_callbacks_replacing_one_verb_is_an_error_naming_both():
    class StepA(Callback):
        def step(self, learn): pass

    class StepB(Callback):
        def step(self, learn): pass

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[StepA(), StepB()])
    with pytest.raises(RuntimeError, match="StepA and StepB.*'step'"):
        learn.fit(1)


def test_misspelt_event_is_an_error_naming_the_callback():
    class Typo(Callback):
        def after_btach(self, learn): pass

    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[Typo()])
    with pytest.raises(AttributeError, match="Typo.*after_btach.*after_batch"):
        learn.fit(1)


def test_callbacks_run_in_order():
    seen = []

    def cb(order):
        return type(f"O{order}", (Callback,), {"order": order,
                                               "before_fit": lambda self, learn: seen.append(self.order)})()

    Learner(nn.Linear(3, 2), make_dls(), cbs=[cb(5), cb(-1), cb(2)]).fit(1)
    assert seen == [-1, 2, 5]


@pytest.mark.parametrize("name, event", [("begin_fit", "before_fit"), ("on_batch_end", "after_batch"),
                                         ("on_train_epoch_end", "after_epoch' (with learn.training True)"),
                                         ("on_train_batch_start", "before_batch"), ("after_pred", "after_predict"),
                                         ("on_after_backward", "after_backward"), ("on_epoch_begin", "before_epoch")])
def test_another_frameworks_event_names_are_an_error_naming_the_slowlearn_event(name, event):
    foreign = type("FastaiStyle", (Callback,), {name: lambda self, learn: None})()
    with pytest.raises(AttributeError, match=f"Callback FastaiStyle defines '{name}', an event name of another framework "
                                             f"that slowlearn never calls: name the method '{re.escape(event)}"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[foreign]).fit(1)


def test_a_callback_given_twice_to_a_fit_is_an_error_before_any_step():
    """The same callback object in learn.cbs and in fit(cbs=) (as Keras takes callbacks in fit) ran each handler twice
    an event: a RecorderCB recorded every batch twice, a MetricsCB wrote each history row twice."""
    from slowlearn import MetricsCB, RecorderCB
    recorder, metrics = RecorderCB(), MetricsCB()
    learn = Learner(nn.Linear(3, 2), make_dls(), cbs=[recorder, metrics])
    weights = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match=r"RecorderCB is given to this fit twice.*learn.cbs.*fit\(cbs=\)"):
        learn.fit(1, cbs=[recorder])
    assert learn.cbs == [recorder, metrics] and learn.model.weight.equal(weights) and learn.history == []
    with pytest.raises(ValueError, match="MetricsCB is given to this fit twice"):
        Learner(nn.Linear(3, 2), make_dls(), cbs=[metrics, metrics]).fit(1)
