"""README.md's code runs as written: every ```python block, in order, in one namespace (so a block may use
what an earlier one made), with a smoke setting (256 Fashion-MNIST images in batches of 64, at most one
epoch per fit; the pretrained weights are random ones in a temporary cache)."""
import importlib
import re
from pathlib import Path

import pytest

import slowlearn
from slowlearn import Learner, LRFinderCB

train_module = importlib.import_module("slowlearn.train")  # `slowlearn.train` is the function

README = Path(__file__).parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and blocks[0].startswith("from slowlearn import *")


def test_readme_python_blocks_run(fashion_folder, tmp_path, monkeypatch, torchvision_cache):
    torchvision_cache("resnet18")  # vision_learner's weights, in a temporary offline torchvision cache
    real = slowlearn.fashion_mnist

    def small(bs=512, **kwargs):
        return real(bs=min(bs, 64), n_train=256, n_valid=128)
    monkeypatch.setattr(slowlearn, "fashion_mnist", small)
    monkeypatch.setattr(train_module, "fashion_mnist", small)
    fit = Learner.fit

    def one_epoch_fit(self, n_epochs=1, *args, **kwargs):  # lr_find's sweep: 12 batches, over several epochs
        sweeps = [cb for cb in kwargs.get("cbs", ()) if isinstance(cb, LRFinderCB)]
        for cb in sweeps:
            cb.num_it = 12
        smoke_epochs = 2 if kwargs.get("resume") else 1  # a resumed run continues past its checkpoint's epoch
        return fit(self, n_epochs if sweeps else min(n_epochs, smoke_epochs), *args, **kwargs)
    monkeypatch.setattr(Learner, "fit", one_epoch_fit)
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
