"""Checkpoint files: damaged, foreign and older files, checksums, paths that cannot be written."""
import errno
import os
import re
import struct

import pytest
import torch
from test_checkpoint import BAD_FILES, PATTERN, bad_file, learner, same, saved_checkpoint, state_tensors
from torch import nn

from slowlearn import CheckpointError, checkpoint_io
from slowlearn.checkpoint_io import write_atomically


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_damaged_or_foreign_file_is_an_error_naming_it_for_load_and_resume(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    learn = learner()
    before = state_tensors(learn)
    for attempt in (lambda: learn.load(path), lambda: learn.fit(2, resume=path)):
        with pytest.raises(CheckpointError, match=re.escape(BAD_FILES[kind])) as error:
            attempt()
        assert str(path) in str(error.value)
    assert same(state_tensors(learn), before) and learn.history == []


def test_a_flipped_byte_is_detected_by_the_checksum(tmp_path):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(PATTERN)
    learn = learner(model)
    learn.save(tmp_path / "ckpt.pt")
    data = bytearray((tmp_path / "ckpt.pt").read_bytes())
    where = data.find(struct.pack("<f", PATTERN) * 6)
    assert where > 0
    data[where + 9] ^= 0x01  # the lowest bit of the third weight's second byte: a tiny, plausible change
    (tmp_path / "ckpt.pt").write_bytes(bytes(data))
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # torch itself reads the changed value
    assert not torch.equal(state["model"]["weight"], torch.full((2, 3), PATTERN))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match the checksum"):
        learner().load(tmp_path / "ckpt.pt")


def test_checkpoints_of_format_1_without_a_checksum_still_load(tmp_path):
    path = saved_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    for key in ("checksum", "opt_type", "n_epochs"):
        del state[key]
    torch.save({**state, "format": 1}, tmp_path / "old.pt")
    learn = learner().load(tmp_path / "old.pt")
    assert torch.equal(learn.model.weight, state["model"]["weight"])


def test_a_write_under_a_file_tells_the_real_error_and_does_not_blame_the_disk(tmp_path):
    (tmp_path / "file.pt").write_text("not a folder")
    with pytest.raises(OSError) as error:
        write_atomically({"weight": torch.zeros(1)}, tmp_path / "file.pt" / "best.pt")
    message = str(error.value)
    assert message.startswith(f"[Errno 17] Could not write the checkpoint {tmp_path / 'file.pt' / 'best.pt'}: ")
    assert "File exists" in message and "Give the checkpoint a path that can be written" in message
    assert "space" not in message and "disk" not in message


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EDQUOT, "the disk quota is used up")])
def test_only_a_full_disk_or_quota_asks_for_space(tmp_path, monkeypatch, code, cause):
    def fail(state, path):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(checkpoint_io.torch, "save", fail)
    with pytest.raises(OSError, match=f"{cause}; no checkpoint was written at .*Free some space"):
        write_atomically({}, tmp_path / "ckpt.pt")
    assert list(tmp_path.iterdir()) == []

