"""summary: a model's layers, shapes, parameters and FLOPs."""

import pytest
import torch
from conftest import image_dls
from torch import nn

from slowlearn import Learner, get_kaiming_initialized_model, resnet, summary


def test_summary_rows(capsys):
    model = get_kaiming_initialized_model()
    model.train()
    rows = summary(model, torch.randn(4, 1, 28, 28))
    assert [r["output"] for r in rows[:5]] == ["8x14x14", "16x7x7", "32x4x4", "64x2x2", "10x1x1"]
    assert rows[-1]["params"] == sum(p.numel() for p in model.parameters())
    assert rows[0]["MFLOPs"] == pytest.approx(2 * 8 * 14 * 14 * 25 / 1e6)  # 2 flops per multiply-add
    assert model.training and "MFLOPs" in capsys.readouterr().out


def test_summary_shows_nested_modules_and_frozen_parameters(capsys):
    model = resnet(nfs=(8, 16), n_classes=3)
    for p in model[0].parameters():
        p.requires_grad_(False)
    rows = summary(model, torch.randn(2, 1, 28, 28), depth=2)
    layers = [r["layer"] for r in rows]
    assert layers[:3] == ["0: ResBlock", "  convs: Sequential", "  idconv: Sequential"]
    assert "    0: Conv2d" not in layers  # depth 3 is not shown
    block = rows[0]
    assert block["frozen"] == block["params"] == sum(p.numel() for p in model[0].parameters())
    assert block["trainable"] == 0 and rows[-1]["trainable"] == sum(p.numel() for p in model[1:].parameters())
    assert rows[1]["output"] == "8x28x28" and rows[1]["MFLOPs"] > 0
    children = rows[1:rows.index(next(r for r in rows if r["layer"] == "1: ResBlock"))]
    assert sum(r["MFLOPs"] for r in children) == pytest.approx(block["MFLOPs"])  # the pool and ReLU cost none
    assert "  convs: Sequential" in capsys.readouterr().out


def test_learner_summary_leaves_the_training_trajectory_alone():
    """Looking at the model draws no random numbers that training would (the loader's order, its augmentation):
    a seeded fit is the same with or without a summary first, as with show_batch."""
    def fit(look: bool):
        torch.manual_seed(0)
        learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(36, 3)), image_dls(), lr=0.1)
        if look:
            learn.summary(print_table=False)
        return learn.fit(1).model[1].weight

    assert torch.equal(fit(look=True), fit(look=False))
