"""The in-process loop: labels shifted by one point, accumulation, curriculum and falling loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model.tiny import TINY
from tsmoe.config import RunConfig
from tsmoe.data.config import DataConfig
from tsmoe.data.synth import generate_synthetic_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.model.config import TimeMoEConfig
from tsmoe.training.config import TrainingConfig
from tsmoe.training.loop import fit
from tsmoe.training.trainer import series_batch


def synthetic_data(directory, train=16, val=8, length=64):
    """The built-in dataset, small: 3 channels, no runs."""
    generate_synthetic_dataset(
        directory, train_segments=train, val_segments=val, test_segments=0, segment_length=length
    )
    return directory


def tiny_run(data_path, **training) -> RunConfig:
    """A run of the tiny model on a small dataset, without loader processes."""
    return RunConfig(
        model=TimeMoEConfig(**TINY),
        data=DataConfig(path=data_path, batch_size=4, num_workers=0),
        # float32 whatever the CPU: these tests compare runs exactly; tests/training/test_precision.py covers bf16.
        training=TrainingConfig(**{"epochs": 2, "warmup_steps": 1, "precision": "float32", **training}),
        evaluation=EvaluationConfig(statistics_segments=4, baselines=[]),
    )


def test_series_batch_shifts_labels_by_one_point():
    batch = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    inputs, labels = series_batch(batch, "cpu")
    assert inputs.shape == labels.shape == (6, 4)
    assert torch.equal(labels, inputs + 1)


def test_fit_lowers_the_loss_and_counts_accumulated_steps(tmp_path):
    run = tiny_run(
        synthetic_data(tmp_path / "data"),
        epochs=6,
        learning_rate=3e-3,
        gradient_accumulation=2,
        throughput_warmup_steps=0,
    )
    run.data.crop_schedule = "half_then_full"
    _, history = fit(run, validate=True)
    assert [metrics["step"] for metrics in history] == [2, 4, 6, 8, 10, 12]
    assert [metrics["crop_length"] for metrics in history] == [32, 32, 32, 64, 64, 64]
    assert history[-1]["loss"] < history[0]["loss"]
    for metrics in history:
        assert np.isfinite(metrics["tokens_s"]) and 0 <= metrics["data_wait_frac"] < 1
        assert metrics["samples_s"] == pytest.approx(metrics["tokens_s"] / (3 * metrics["crop_length"]))
        assert 0 <= metrics["val_auroc"] <= 1 and metrics["nan_steps"] == 0
        assert 0 < metrics["routing_entropy_min"] <= 1
