"""set_seed and the RNG snapshots."""

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
