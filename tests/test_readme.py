"""The code of README.md and of the documentation pages (docs/**/*.md) runs as written: every ```python block of a
page, in order, in one namespace per page (so a block may use what an earlier one of its page made), with a
smoke setting (256 Fashion-MNIST images in batches of 64, at most one epoch per fit)."""
import importlib
import re
from pathlib import Path

import pytest

import slowlearn
from slowlearn import Learner, LRFinderCB

train_module = importlib.import_module("slowlearn.train")  # `slowlearn.train` is the function
recipes_module = importlib.import_module("slowlearn.recipes")

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if python_blocks(p.read_text()))]


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and blocks[0].startswith("from slowlearn import *")


def test_the_docs_have_code_to_run():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"docs/index.md", "docs/guides/own-images.md", "docs/guides/use-your-model.md"} <= names


@pytest.fixture
def smoke(fashion_folder, tmp_path, monkeypatch):
    """Fashion-MNIST cut to 256 training images, every fit cut to one epoch, run in a temporary folder."""
    real = slowlearn.fashion_mnist

    def small(bs=512, **kwargs):
        return real(bs=min(bs, 64), n_train=256, n_valid=128)
    for module in (slowlearn, train_module, recipes_module):
        monkeypatch.setattr(module, "fashion_mnist", small)
    fit = Learner.fit

    def one_epoch_fit(self, n_epochs=1, *args, **kwargs):  # lr_find's sweep: 12 batches, over several epochs
        sweeps = [cb for cb in kwargs.get("cbs", ()) if isinstance(cb, LRFinderCB)]
        for cb in sweeps:
            cb.num_it = 12
        smoke_epochs = 2 if kwargs.get("resume") else 1  # a resumed run continues past its checkpoint's epoch
        return fit(self, n_epochs if sweeps else min(n_epochs, smoke_epochs), *args, **kwargs)
    monkeypatch.setattr(Learner, "fit", one_epoch_fit)
    monkeypatch.chdir(tmp_path)  # the pages write runs/ckpt.pt, model.pt2, pets/...


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(page, smoke):
    text = page.read_text()
    namespace = {}
    for i, block in enumerate(python_blocks(text)):
        try:
            exec(compile(block, f"{page.name} python block {i + 1}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{page.relative_to(ROOT)} python block {i + 1} fails: {e!r}\n{block}")
    shown = set(re.findall(r"name='([^']+)'", text))
    if shown:  # every prediction shown is of the first validation image
        dls = namespace["learn"].dls
        assert shown == {dls.classes[dls.valid.y[0]]}


def test_readme_links_point_at_files():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_readme_code_reads_tensors_back_from_any_device():
    """`.numpy()` fails on a GPU tensor: the code of the pages, run on a GPU machine, moves it to the CPU first."""
    for page in PAGES:
        for block in python_blocks(page.read_text()):
            for call in re.findall(r"\S+\.numpy\(\)", block):
                assert call.endswith(".cpu().numpy()"), f"{page.name}: {call}"
