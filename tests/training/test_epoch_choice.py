"""The epoch a run keeps: the latest within one standard error of the highest validation AUROC."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.epoch_choice import describe_kept_epoch, kept_epoch, selection_score
from tsmoe.training.launch import RUN_NAME, collect_outputs
from tsmoe.training.trainer import Trainer


def _history(*figures: tuple[float, float | None]) -> list[dict]:
    history = []
    for epoch, (auroc, error) in enumerate(figures, start=1):
        metrics = {"epoch": epoch, "val_auroc": auroc}
        if error is not None:
            metrics["val_auroc_se"] = error
        history.append(metrics)
    return history


def test_the_latest_epoch_within_one_standard_error_of_the_highest_is_kept():
    # Highest 0.90 with a standard error of 0.1: epochs at 0.80 or above qualify, and the 4th (0.79) does not.
    assert kept_epoch(_history((0.90, 0.1), (0.86, 0.2), (0.88, 0.05), (0.79, 0.1))) == 3
    # The margin is the highest epoch's own standard error, not the candidate's.
    assert kept_epoch(_history((0.70, 0.3), (0.90, 0.01), (0.85, 0.3))) == 2


def test_without_standard_errors_the_highest_is_kept_and_the_latest_of_equals():
    assert kept_epoch(_history((0.8, None), (0.9, None), (0.85, None))) == 2
    assert kept_epoch(_history((0.9, None), (0.8, None), (0.9, None))) == 3
    assert kept_epoch(_history((0.9, float("nan")), (0.89, None))) == 1


def test_no_epoch_is_kept_without_a_validation_auroc():
    assert kept_epoch([]) is None
    assert kept_epoch([{"epoch": 1}, {"epoch": 2, "val_auroc": float("nan")}]) is None


def test_the_checkpoint_with_the_highest_selection_score_is_always_the_kept_epochs():
    # What lets Ray Train keep one checkpoint and lose none that matters: scored as each epoch ends, the kept
    # epoch of the whole run has the highest score of all.
    rng = np.random.default_rng(0)
    for _ in range(200):
        epochs = int(rng.integers(1, 9))
        history = _history(*zip(rng.uniform(0.5, 1.0, epochs).round(2), rng.uniform(0.0, 0.2, epochs), strict=True))
        scores = [selection_score(history[:end]) for end in range(1, epochs + 1)]
        assert int(np.argmax(scores)) + 1 == kept_epoch(history)


def _save_epoch(trainer: Trainer, directory, epoch: int, auroc: float, error: float) -> None:
    trainer.epoch = epoch
    trainer.history.append({"epoch": epoch, "val_auroc": auroc, "val_auroc_se": error})
    with torch.no_grad():
        next(trainer.module.parameters()).fill_(float(epoch))  # tells the epochs' models apart
    trainer.save_checkpoint(directory / RUN_NAME / f"checkpoint_{epoch:06d}")


def _first_weight(path) -> float:
    return float(next(TimeMoE.from_pretrained(path).parameters()).detach().flatten()[0])


def test_best_model_is_the_kept_epochs_and_a_run_that_lost_it_falls_back_to_its_highest_checkpoint(tmp_path):
    trainer = Trainer(tiny_run(synthetic_data(tmp_path / "data", train=4, val=4, length=32), epochs=4))
    output = tmp_path / "run"
    for epoch, (auroc, error) in enumerate([(0.90, 0.1), (0.86, 0.1), (0.88, 0.1), (0.70, 0.1)], start=1):
        _save_epoch(trainer, output, epoch, auroc, error)
    outcome = collect_outputs(output)
    assert outcome.best_model is not None and _first_weight(outcome.best_model) == pytest.approx(3.0)
    assert _first_weight(outcome.model) == pytest.approx(4.0)
    # A run whose checkpoints were kept by validation AUROC alone, before this rule: epoch 3's is gone.
    shutil.rmtree(output / RUN_NAME / "checkpoint_000003")
    assert _first_weight(collect_outputs(output).best_model) == pytest.approx(1.0)


def test_the_kept_epoch_is_described_with_the_highest_it_was_measured_against():
    history = _history((0.878, 0.108), (0.816, 0.14), (0.673, 0.148), (0.796, 0.12))
    assert describe_kept_epoch(history) == (
        "epoch 4 (val_auroc 0.796), the latest within one standard error (0.108) of the highest, 0.878 at epoch 1"
    )
    assert describe_kept_epoch(_history((0.7, 0.1), (0.9, 0.05))) == "epoch 2 (val_auroc 0.900), the highest"
    assert describe_kept_epoch(_history((0.9, None), (0.9, None))) == (
        "epoch 2 (val_auroc 0.900), level with the highest at epoch 1"
    )
    assert describe_kept_epoch([{"epoch": 1}]) == ""
