"""Choosing a detector on validation: the section as written unless an alternative leads it by more than one
standard error of their difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsmoe.data.store import DatasetWriter, open_dataset
from tsmoe.evaluation import evaluate
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.evaluate import choose_detector, validation_metrics

LENGTH = 8
LABELS = [0, 0, 1, 1, 0, 1]


@pytest.fixture
def dataset(tmp_path):
    writer = DatasetWriter(tmp_path / "data", LENGTH, ["a"], sampling_rate_hz=1.0)
    writer.add_split("train", 2).segments[:] = 0.0
    val = writer.add_split("val", len(LABELS), label_level="segment")
    val.labels[:] = LABELS
    writer.finish()
    return open_dataset(tmp_path / "data")


def _scores(separation: float) -> np.ndarray:
    """Point scores [N, L]: anomalous segments `separation` above normal ones, except one normal segment 1 above
    the others (AUROC 1/3 at separation 0, 2/3 at 0.5, 1 above 1)."""
    labels = np.asarray(LABELS, dtype=float)
    scores = np.repeat((labels * separation)[:, None], LENGTH, axis=1)
    scores[0] += 1.0  # a normal segment above every anomalous one unless `separation` lifts them past it
    return scores


SECTION = EvaluationConfig(density_weight=1.0, alternatives=[{"density_weight": 0.0}, {"forecast_weight": 0.0}])


def _given_scores(monkeypatch, scores: list[np.ndarray]) -> None:
    monkeypatch.setattr(evaluate, "candidate_point_scores", lambda model, dataset, split, candidates, **_: scores)


def test_the_candidate_with_the_highest_validation_auroc_is_chosen(monkeypatch, dataset):
    _given_scores(monkeypatch, [_scores(0.0), _scores(2.0), _scores(0.5)])
    choice = choose_detector(None, dataset, SECTION)
    assert choice.index == 1 and choice.config == SECTION.candidates()[1]
    assert [round(result.segment.auroc, 3) for result in choice.results] == [0.333, 1.0, 0.667]


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_the_section_as_written_wins_a_tie_and_an_undefined_auroc_never_wins(monkeypatch, dataset):
    _given_scores(monkeypatch, [_scores(2.0), _scores(2.0), _scores(2.0)])
    assert choose_detector(None, dataset, SECTION).index == 0
    undefined = np.full((len(LABELS), LENGTH), np.nan)
    _given_scores(monkeypatch, [undefined, _scores(0.0), undefined])
    choice = choose_detector(None, dataset, SECTION)
    assert math.isnan(choice.results[0].segment.auroc) and choice.index == 1


def test_validation_metrics_are_the_chosen_detectors_and_name_every_candidates_auroc(monkeypatch, dataset):
    _given_scores(monkeypatch, [_scores(0.0), _scores(0.5), _scores(2.0)])
    metrics = validation_metrics(None, dataset, SECTION)
    assert metrics["val_detector"] == 2 and metrics["val_auroc"] == 1.0
    assert [round(metrics[f"val_auroc_detector_{index}"], 3) for index in range(3)] == [0.333, 0.667, 1.0]
    _given_scores(monkeypatch, [_scores(0.5)])
    alone = validation_metrics(None, dataset, EvaluationConfig())
    assert "val_detector" not in alone and round(alone["val_auroc"], 3) == 0.667
    assert alone["val_auroc_se"] > 0


def test_an_alternative_replaces_the_section_only_when_it_leads_by_more_than_one_standard_error(monkeypatch, tmp_path):
    rng = np.random.default_rng(4)
    labels = np.tile([0, 1], 20)
    writer = DatasetWriter(tmp_path / "data", LENGTH, ["a"], sampling_rate_hz=1.0)
    writer.add_split("train", 2).segments[:] = 0.0
    writer.add_split("val", len(labels), label_level="segment").labels[:] = labels
    writer.finish()
    dataset = open_dataset(tmp_path / "data")
    section = labels + rng.normal(0.0, 1.0, len(labels))
    # The section's scores with more noise, which happen to score a little higher (0.8125 against 0.805).
    slightly_better = section + rng.normal(0.0, 0.5, len(labels))
    section, slightly_better = (np.repeat(scores[:, None], LENGTH, axis=1) for scores in (section, slightly_better))
    perfect = np.repeat(labels[:, None].astype(float), LENGTH, axis=1)

    _given_scores(monkeypatch, [section, slightly_better, section])
    choice = choose_detector(None, dataset, SECTION)
    aurocs = [result.segment.auroc for result in choice.results]
    assert aurocs[1] - aurocs[0] == pytest.approx(0.0075) and choice.index == 0

    _given_scores(monkeypatch, [section, slightly_better, perfect])
    choice = choose_detector(None, dataset, SECTION)
    assert choice.results[2].segment.auroc == 1.0 and choice.index == 2
    assert choice.standard_error == 0.0 and 0.03 < choice.standard_errors[0] < 0.15


def test_two_validation_runs_that_score_alike_do_not_make_a_small_lead_certain(monkeypatch, tmp_path):
    # Two runs with the same points: resampling the runs alone gave their difference no spread at all, and any
    # lead replaced the section. Each run's own anomalies leave doubt (uncertainty.py's two-stage bootstrap).
    labels = np.zeros((12, LENGTH), dtype=np.int8)
    labels[1::6, 3:] = 1
    labels[4::6, :5] = 1
    writer = DatasetWriter(tmp_path / "data", LENGTH, ["a"], sampling_rate_hz=1.0)
    writer.add_split("train", 2).segments[:] = 0.0
    val = writer.add_split("val", len(labels), label_level="point", with_runs=True)
    val.labels[:] = labels
    val.runs[:] = np.repeat([0, 1], 6)
    writer.finish()
    rng = np.random.default_rng(4)
    one_run = labels[:6] + rng.normal(0.0, 1.0, (6, LENGTH))
    noisier = one_run + rng.normal(0.0, 0.5, (6, LENGTH))  # happens to score a little higher
    section, alternative = np.concatenate([one_run, one_run]), np.concatenate([noisier, noisier])

    _given_scores(monkeypatch, [section, alternative, section])
    choice = choose_detector(None, open_dataset(tmp_path / "data"), SECTION)
    aurocs = [result.point.auroc for result in choice.results]
    assert aurocs[1] - aurocs[0] == pytest.approx(0.0158, abs=1e-4) and choice.index == 0
    assert choice.standard_error > 0.0
