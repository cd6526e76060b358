"""The weight average: the EMA rule on hand-computed numbers, what a run validates and saves, and resume."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.model.tiny import TINY
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.model.checkpoint import load_pretrained
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.finetune import base_model
from tsmoe.training.trainer import MODEL_DIR, Trainer
from tsmoe.training.weight_average import WeightAverage, build_weight_average


def _model() -> TimeMoE:
    torch.manual_seed(0)
    return TimeMoE(TimeMoEConfig(**TINY))


def test_the_average_starts_as_a_copy_then_follows_the_ema_rule():
    model = _model()
    average = WeightAverage(model, decay=0.75)
    name, weight = next(iter(model.named_parameters()))
    with torch.no_grad():
        weight.fill_(2.0)
    average.update(model)  # first update: a copy
    with torch.no_grad():
        weight.fill_(6.0)
    average.update(model)  # 0.75 * 2 + 0.25 * 6
    averaged = dict(average.model.named_parameters())[name]
    assert torch.allclose(averaged, torch.full_like(averaged, 3.0))
    assert torch.all(weight == 6.0)  # the trained weights are untouched


def test_no_average_without_a_decay_and_none_with_lora():
    assert build_weight_average(_model(), 0.0) is None
    with pytest.raises(ValidationError, match="ema_decay: a weight average of LoRA adapters"):
        TrainingConfig(ema_decay=0.9, finetune={"mode": "lora", "checkpoint": "somewhere"})


def test_a_run_saves_the_average_and_a_resumed_run_ends_with_the_same_one(tmp_path):
    run = tiny_run(synthetic_data(tmp_path / "data"), epochs=3, ema_decay=0.9)
    uninterrupted = Trainer(run)
    for _ in range(3):
        uninterrupted.train_epoch()
    averaged = dict(uninterrupted.trained_model().named_parameters())
    trained = dict(base_model(uninterrupted.module).named_parameters())
    assert any(not torch.equal(averaged[name], trained[name]) for name in trained)

    first = Trainer(run)
    first.train_epoch()
    first.save_checkpoint(tmp_path / "checkpoint")
    resumed = Trainer(run)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    for _ in range(2):
        resumed.train_epoch()
    got = dict(resumed.trained_model().named_parameters())
    for name, value in averaged.items():
        assert torch.equal(got[name], value), name

    resumed.save_checkpoint(tmp_path / "final")
    saved = dict(load_pretrained(tmp_path / "final" / MODEL_DIR).named_parameters())
    for name, value in averaged.items():
        assert torch.equal(saved[name], value), name
