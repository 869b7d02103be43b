"""README.md's code runs as written: every ```python block, in order, in one namespace (so a block may use
what an earlier one made), with a smoke setting (64 Fashion-MNIST images in one batch of 64 per epoch, and
12 batches for lr_find's sweep); every fit trains as many epochs as it asks for."""
import importlib
import re
from pathlib import Path

import pytest

import slowlearn
from slowlearn import Learner, LRFinderCB

train_module = importlib.import_module("slowlearn.train")  # `slowlearn.train` is the function
recipes_module = importlib.import_module("slowlearn.recipes")

README = Path(__file__).parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and blocks[0].startswith("from slowlearn import *")


def test_readme_python_blocks_run(fashion_folder, tmp_path, monkeypatch):
    real = slowlearn.fashion_mnist

    def small(bs=512, **kwargs):  # one batch per epoch: every fit trains the epochs it asks for, as written
        return real(bs=64, n_train=64, n_valid=64)
    monkeypatch.setattr(slowlearn, "fashion_mnist", small)
    monkeypatch.setattr(train_module, "fashion_mnist", small)
    monkeypatch.setattr(recipes_module, "fashion_mnist", small)
    fit = Learner.fit

    def short_sweep_fit(self, *args, **kwargs):  # lr_find's sweep: 12 batches instead of 100
        for cb in kwargs.get("cbs", ()):
            if isinstance(cb, LRFinderCB):
                cb.num_it = 12
        return fit(self, *args, **kwargs)
    monkeypatch.setattr(Learner, "fit", short_sweep_fit)
    monkeypatch.chdir(tmp_path)  # the README writes runs/ckpt.pt
    namespace = {}
    for i, block in enumerate(python_blocks(README.read_text())):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"README.md python block {i + 1} fails: {e!r}\n{block}")
    dls = namespace["learn"].dls  # both predictions shown are of the first validation image
    assert set(re.findall(r"name='([^']+)'", README.read_text())) == {dls.classes[dls.valid.y[0]]}


def test_readme_code_reads_tensors_back_from_any_device():
    """`.numpy()` fails on a GPU tensor: the README's code, run on a GPU machine, moves it to the CPU first."""
    for block in python_blocks(README.read_text()):
        for call in re.findall(r"\S+\.numpy\(\)", block):
            assert call.endswith(".cpu().numpy()"), call
