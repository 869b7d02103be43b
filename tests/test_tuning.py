"""find_batch_size's answers when the data is smaller than the candidates (lr_find's tests are in
tests/callbacks/test_schedule.py; its agreement over ranks in tests/test_distributed.py)."""
import pytest
from conftest import make_dls
from torch import nn

from slowlearn import find_batch_size


def test_every_candidate_larger_than_the_data_is_an_error_that_says_so():
    """It used to return [] without a word."""
    with pytest.raises(ValueError, match=r"every candidate batch size \(64, 128\) is larger than the 40 training "
                                         r"samples.*at most 40"):
        find_batch_size(nn.Linear(3, 2), make_dls(n_train=40), candidates=(64, 128), steps=1)


def test_candidates_larger_than_the_data_get_a_row_that_says_so():
    rows = find_batch_size(nn.Linear(3, 2), make_dls(n_train=40), candidates=(16, 32, 64), steps=1)
    assert [r["bs"] for r in rows] == [16, 32, 64] and rows[0]["samples_per_s"] > 0
    assert rows[-1] == {"bs": 64, "samples_per_s": None, "note": "larger than the 40 training samples"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "Invalid steps: 0"), (dict(candidates=(0, 8)), "Invalid batch size: 0"),
    (dict(candidates=(-8,)), "Invalid batch size: -8"), (dict(candidates=(8.5,)), "Invalid batch size: 8.5")])
def test_steps_and_batch_sizes_that_cannot_be_timed_are_refused(kwargs, message):
    """steps=0 failed with an UnboundLocalError; a batch size of 0 was timed at 0 samples/s, -8 at a negative rate."""
    with pytest.raises(ValueError, match=f"find_batch_size: {message}"):
        find_batch_size(nn.Linear(3, 2), make_dls(n_train=40), **{"candidates": (8,), "steps": 1, **kwargs})
