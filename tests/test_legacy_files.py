"""Files written by an older slowlearn (tests/fixtures, made by make_legacy.py before the package layout
moved) still load and give the outputs they gave then."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slowlearn import Learner, MetricsCB, load_learner

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_legacy import legacy_dls, legacy_model, probe_images  # noqa: E402

EXPECTED = json.loads((FIXTURES / "legacy_expected.json").read_text())


def test_an_old_export_loads_and_predicts_as_before():
    probs = load_learner(FIXTURES / "legacy_export.pt2").predict_batch(list(probe_images())).probs
    torch.testing.assert_close(probs, torch.tensor(EXPECTED["export_probs"]), rtol=1e-5, atol=1e-6)


def test_an_old_export_loads_in_a_process_without_training_code():
    code = ("import sys, torch; from slowlearn import load_learner; "
            "p = load_learner(sys.argv[1]); print(p.classes)")
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "legacy_export.pt2")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "zero" in out and "two" in out


def test_an_old_checkpoint_resumes_to_the_same_weights():
    learn = Learner(legacy_model(), legacy_dls(), lr=0.1, cbs=[MetricsCB()])
    learn.fit(3, resume=FIXTURES / "legacy_checkpoint.pt")
    # The fixture's first two epochs ran on another CPU, whose kernels round differently (3e-8 apart here): so
    # the resumed weights are compared with a run of all three epochs on this CPU, closely (a resume with the
    # wrong epoch or batch order is 1e-2 off), and their sum with the one recorded then.
    uninterrupted = Learner(legacy_model(), legacy_dls(), lr=0.1, cbs=[MetricsCB()]).fit(3)
    for resumed, whole in zip(learn.model.parameters(), uninterrupted.model.parameters()):
        torch.testing.assert_close(resumed, whole, rtol=0, atol=1e-6)
    total = sum(p.double().sum().item() for p in learn.model.parameters())
    assert total == pytest.approx(EXPECTED["resumed_weights_sum"], rel=1e-6)
    assert learn.history[:4] == EXPECTED["history"]


def test_an_old_checkpoint_loads_its_history():
    learn = Learner(legacy_model(), legacy_dls(), lr=0.1).load(FIXTURES / "legacy_checkpoint.pt")
    assert learn.history == EXPECTED["history"]
