"""The code of README.md and of the documentation pages (docs/**/*.md) runs as written: every ```python block of a
page, in order, in one namespace per page (so a block may use what an earlier one of its page made), with a
smoke setting (64 Fashion-MNIST images in one batch of 64 per epoch, and 12 batches for lr_find's sweep;
every fit trains as many epochs as it asks for; the pretrained weights are random ones in a temporary
offline torchvision cache)."""
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
def smoke(fashion_folder, tmp_path, monkeypatch, torchvision_cache):
    """Fashion-MNIST cut to one batch of 64 images per epoch, run in a temporary folder."""
    torchvision_cache("resnet18")  # vision_learner's weights, in a temporary offline torchvision cache
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


def test_readme_says_where_every_module_is():
    """"Where things are" names every module of the package and every benchmark script, so a new one is placed."""
    where = README.read_text().split("## Where things are", 1)[1]
    named = set(re.findall(r"`([\w.]+)`", where))
    package = ROOT / "slowlearn"
    modules = [p for p in package.rglob("*.py") if p.stem not in ("__init__", "__main__")]
    missing = [p.relative_to(ROOT).as_posix() for p in modules
               if (p.name if p.parent == package else p.stem) not in named]
    missing += [p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").glob("*.py") if p.name not in named]
    assert missing == []
