"""LRFinderCB: the sweep's suggestions and its stop on divergence."""

import numpy as np
import pytest
import torch
from conftest import make_dls

from callbacks.test_schedule import bn_model, sweep
from slowlearn import Learner, LRFinderCB


def test_lr_find_stops_on_divergence():
    learn = Learner(bn_model(), make_dls(n_train=800, bs=8), opt_func=lambda p, lr: torch.optim.SGD(p, lr))
    learn.lr_find(start_lr=1e-3, end_lr=1e6, num_it=100)
    assert len(learn.lr_finder.losses) < 100
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        learn.lr_find(start_lr=1., end_lr=0.1)


@pytest.mark.parametrize("seed", range(5))
def test_lr_find_suggestions_lie_where_a_noisy_loss_comes_down(seed):
    # flat around 2.3 up to lr 1e-3, straight down to 0.5 at lr 1e-1, then diverging; noise throughout
    lrs = np.geomspace(1e-7, 10, 100)
    t = np.log10(lrs)
    clean = np.where(t < -3, 2.3, np.where(t < -1, 2.3 - 0.9 * (t + 3), 0.5 + 3 * (t + 1)))
    noisy = clean + np.random.default_rng(seed).normal(0, 0.1, len(lrs))
    suggestion = sweep(noisy.tolist(), lrs.tolist()).suggest()
    assert 1e-3 <= suggestion.valley <= 1e-1 and 1e-3 <= suggestion.steep <= 1e-1, suggestion


def test_lr_finder_in_a_fit_with_validation_sweeps_the_training_batches_only():
    """Used in a fit of its own (it is public), it recorded the validation batches' losses as sweep points at the lrs
    it went on raising."""
    finder = LRFinderCB(num_it=20)
    Learner(bn_model(), make_dls(n_train=40, n_valid=16, bs=8)).fit(2, cbs=[finder])
    assert len(finder.lrs) == len(finder.losses) == 10  # 2 epochs of 5 training batches, none of the 2 valid ones
    assert finder.lrs == sorted(finder.lrs)
