"""set_seed and the RNG snapshots."""

import pytest
import torch

from slowlearn import get_kaiming_initialized_model, set_seed


def test_set_seed_reproduces_weights():
    set_seed(1)
    a = get_kaiming_initialized_model()
    set_seed(1)
    b = get_kaiming_initialized_model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_snapshot_puts_back_every_random_state_a_fit_draws_from():
    import random

    import numpy as np
    from conftest import make_dls

    from slowlearn.randomness import randomness, restore_randomness
    dls = make_dls()

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.randperm(10, generator=dls.train.generator).tolist())
    saved = randomness(dls)
    first = draws()
    assert draws() != first
    restore_randomness(dls, saved)
    assert draws() == first


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_a_seed_numpy_cannot_take_is_refused_before_any_rng_is_seeded(seed):
    """set_seed(-1) used to seed Python's RNG, then fail in NumPy ("Seed must be between 0 and 2**32 - 1")."""
    import random
    before = random.getstate()
    with pytest.raises(ValueError, match=r"set_seed: Invalid seed: .* \(must be an integer in \[0, 4294967295\]\)"):
        set_seed(seed)
    assert random.getstate() == before


@pytest.mark.parametrize("look", ["summary", "lr_find"])
def test_looking_between_an_interrupted_fit_and_its_save_leaves_the_epochs_order_to_resume(tmp_path, look):
    """A save after a fit interrupted mid-epoch holds the state the loader drew that epoch's order from: a summary or
    an lr_find in between drew another order, and the resumed epoch went on in that one (some samples twice)."""
    from conftest import StopAt, make_dls
    from torch import nn

    from slowlearn import Learner, MetricsCB

    def learner():
        torch.manual_seed(0)
        return Learner(nn.Linear(3, 2), make_dls(n_train=40, bs=4), lr=0.1, cbs=[MetricsCB()])

    straight, stopped = learner().fit(3), learner()
    with pytest.raises(KeyboardInterrupt):
        stopped.fit(3, cbs=[StopAt(epoch=1, iter=3, exc=KeyboardInterrupt)])
    stopped.summary(print_table=False) if look == "summary" else stopped.lr_find(num_it=5, show_plot=False)
    stopped.save(tmp_path / "ckpt.pt")
    resumed = learner().fit(3, resume=tmp_path / "ckpt.pt")
    assert all(torch.equal(p, q) for p, q in zip(resumed.model.parameters(), straight.model.parameters()))
