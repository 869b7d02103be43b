import dataclasses
from pathlib import Path

import pytest
import torch

from slowlearn import DataLoaders, TensorLoader, hardware
from slowlearn.recipes import (
    CIFAR10,
    FASHION_MNIST,
    RECIPES,
    RecipeResult,
    fashion_mnist_recipe,
    run_recipe,
    triangular_lr,
)


def image_dls(n=64, channels=1, size=28, bs=16):
    """Images whose class is a bright quadrant: learnable in a few steps."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(0, 60, (n, channels, size, size), generator=g, dtype=torch.uint8)
    half = size // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 150
    train = TensorLoader(x[:48], y[:48], bs, shuffle=True, device="cpu", mean=0.3, std=0.3, seed=0)
    valid = TensorLoader(x[48:], y[48:], bs, device="cpu", mean=0.3, std=0.3)
    return DataLoaders(train, valid, classes=list("abcd"))


def tiny(config, **changes):
    return dataclasses.replace(config, widths=(8, 16, 16), bs=16, **changes)


@pytest.mark.parametrize("config,channels,size", [(FASHION_MNIST, 1, 28), (CIFAR10, 3, 32)])
def test_each_recipe_runs_end_to_end(config, channels, size, capsys, monkeypatch):
    monkeypatch.setattr(hardware, "_announced", set())
    result = run_recipe(tiny(config, epochs=2), image_dls(channels=channels, size=size), precision="fp32")
    assert isinstance(result, RecipeResult) and 0 <= result.accuracy <= 1 and result.seconds > 0
    assert result.learn.epoch == 1 and len(result.learn.recorder.recs["lr"]) == 2 * 3
    assert "Training in fp32" in capsys.readouterr().out


def test_the_recipe_learns_and_validates_when_asked():
    result = fashion_mnist_recipe(dls=image_dls(), precision="fp32", valid=True, quiet=True,
                                  config=tiny(FASHION_MNIST, epochs=4, lr=0.2))
    evals = [row for row in result.learn.history if row["phase"] == "valid"]
    assert len(evals) == 4 and result.accuracy > 0.5


def test_loaders_that_would_not_take_the_recipes_augmentation_or_have_their_own_are_refused():
    """run_recipe set `dls.train.aug`: over the user's own augmentation (replaced silently), and on a torch
    DataLoader, which ignores the attribute (the recipe trained without its augmentation, silently)."""
    from torch.utils.data import DataLoader, TensorDataset

    from slowlearn import BatchAugment
    own = image_dls()
    own.train.aug = BatchAugment(pad=0, flip=False, cutout=8)
    with pytest.raises(ValueError, match=r"the training loader has another \(BatchAugment\(pad=0, flip=False, "
                                         r"cutout=8\)\) that it would replace: make the loaders with aug=None"):
        run_recipe(tiny(FASHION_MNIST, epochs=1), own, precision="fp32", quiet=True)
    assert repr(own.train.aug) == "BatchAugment(pad=0, flip=False, cutout=8)"
    torch_loaders = DataLoaders(DataLoader(TensorDataset(torch.zeros(8, 1, 28, 28), torch.zeros(8).long()), 4),
                                image_dls().valid)
    with pytest.raises(TypeError, match=r"which only slowlearn's loaders apply, not a DataLoader"):
        run_recipe(tiny(FASHION_MNIST, epochs=1), torch_loaders, precision="fp32", quiet=True)


def test_same_seed_same_result():
    runs = [run_recipe(tiny(FASHION_MNIST, epochs=1), image_dls(), seed=3, precision="fp32", quiet=True)
            for _ in range(2)]
    assert runs[0].learn.recorder.losses == runs[1].learn.recorder.losses
    assert runs[0].accuracy == runs[1].accuracy


def test_triangular_lr_warms_up_then_decays():
    sched = triangular_lr(1.0, pct_warmup=0.25, start=0.2, end=0.1)
    assert sched(0.) == pytest.approx(0.2) and sched(0.25) == pytest.approx(1.0)
    assert sched(0.625) == pytest.approx(0.55) and sched(0.999) == pytest.approx(0.1, abs=1e-2)


def test_recipes_are_listed_by_name():
    assert set(RECIPES) == {"fashion_mnist", "cifar10"}


def test_cli_trains_a_recipe_and_writes_the_demo_outputs(tmp_path, monkeypatch, capsys):
    from functools import partial

    from slowlearn import cli, recipes
    small = partial(fashion_mnist_recipe, dls=image_dls(), config=tiny(FASHION_MNIST, epochs=2))
    monkeypatch.setitem(recipes.RECIPES, "fashion_mnist", small)
    assert cli.main(["train", "--recipe", "fashion_mnist", "--precision", "fp32", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Recipe fashion_mnist: test accuracy" in out and "with flip TTA" in out
    for name in ("metrics.csv", "checkpoint.pt", "schedule.png", "loss.png", "metrics.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 2 * 2  # train and valid rows


def test_cli_refuses_to_resume_a_recipe(tmp_path, capsys):
    from slowlearn import cli
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    assert cli.main(["train", "--recipe", "fashion_mnist", "--resume", str(ckpt)]) == 2
    assert "--resume does not work with --recipe" in capsys.readouterr().err


def test_the_plain_loop_of_the_benchmarks_is_the_cifar_recipe_step_for_step(monkeypatch):
    """`benchmarks/plain_recipe.py` (the framework ratio's baseline) follows every choice of the CIFAR-10 recipe,
    the BatchNorm shifts' lr multiplier and Lookahead included: same seed, bitwise the same weights."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from plain_recipe import plain_recipe
    config = tiny(CIFAR10, epochs=2)  # 3 steps an epoch: Lookahead pulls after step 5, and at the end
    assert config.bn_shift_lr_mult != 1 and config.lookahead
    framework = run_recipe(config, image_dls(channels=3, size=32), seed=1, precision="fp32", quiet=True)
    plain = plain_recipe(config, image_dls(channels=3, size=32), seed=1, precision="fp32")
    for (name, a), b in zip(framework.learn.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert framework.accuracy == plain.accuracy
