"""Bootstrap resamples of the headline AUROC: what is resampled at each level, and the standard errors they give."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tsmoe.data.store import DatasetWriter, open_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.uncertainty import RESAMPLES, aurocs_by_row, headline_resamples, standard_error

LENGTH = 8
CONFIG = EvaluationConfig()


def _split(tmp_path, labels: np.ndarray, level: str, runs: list[int] | None = None):
    """A validation split of len(labels) one-channel segments labelled per point [N, L] or per segment [N]."""
    writer = DatasetWriter(tmp_path / "data", LENGTH, ["a"], sampling_rate_hz=1.0)
    writer.add_split("train", 2).segments[:] = 0.0
    val = writer.add_split("val", len(labels), label_level=level, with_runs=runs is not None)
    val.labels[:] = labels
    if runs is not None:
        val.runs[:] = runs
    writer.finish()
    return open_dataset(tmp_path / "data").split("val")


def test_pooled_points_are_resampled_by_segment_and_a_perfect_detector_has_no_spread(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((40, LENGTH), dtype=np.int8)
    labels[::4, 2:6] = 1  # 10 segments with an anomaly
    split = _split(tmp_path, labels, "point")
    perfect = labels.astype(float)
    noisy = labels + rng.normal(0.0, 0.8, labels.shape)
    resamples = headline_resamples([perfect, noisy, noisy.copy()], split, CONFIG, "point")
    assert resamples.shape == (3, RESAMPLES)
    assert np.all(resamples[0] == 1.0) and standard_error(resamples[0]) == 0.0
    # A noisy detector varies from resample to resample around its AUROC on the whole split.
    assert 0.01 < standard_error(resamples[1]) < 0.1
    assert resamples[1].mean() == pytest.approx(0.77, abs=0.05)
    # Candidates share the resamples: two identical detectors differ by exactly nothing on every one.
    assert standard_error(resamples[1] - resamples[2]) == 0.0


def _runs_of_six_segments(tmp_path, runs: int):
    """A point-labelled split of `runs` runs of six segments, segments 1 and 4 of each with anomalous points."""
    labels = np.zeros((6 * runs, LENGTH), dtype=np.int8)
    labels[1::6, 3:] = 1
    labels[4::6, :5] = 1
    return labels, _split(tmp_path, labels, "point", list(np.repeat(np.arange(runs), 6)))


def test_averaged_over_runs_a_perfect_detector_has_no_spread(tmp_path):
    labels, split = _runs_of_six_segments(tmp_path, 3)
    resamples = headline_resamples([labels.astype(float)], split, CONFIG, "point")[0]
    assert np.all(resamples == 1.0)


def test_two_runs_that_score_alike_still_leave_the_doubt_of_each_runs_own_anomalies(tmp_path):
    # Resampling the runs alone gave no spread here: every draw of two equal AUROCs has the same mean.
    rng = np.random.default_rng(1)
    labels, split = _runs_of_six_segments(tmp_path, 2)
    one_run = labels[:6] + rng.normal(0.0, 1.5, (6, LENGTH))
    scores = np.concatenate([one_run, one_run])
    resamples = headline_resamples([scores], split, CONFIG, "point")[0]
    # The same run's stretches, pooled on their own: each draw of a run in the two-stage bootstrap is one of these.
    alone = headline_resamples([one_run], _split(tmp_path / "alone", labels[:6], "point"), CONFIG, "point")[0]
    assert standard_error(alone) > 0.02
    assert standard_error(resamples) == pytest.approx(standard_error(alone) / math.sqrt(2), rel=0.25)
    assert resamples.mean() == pytest.approx(roc_auc_score(labels[:6].ravel(), one_run.ravel()), abs=0.03)


def test_averaged_over_runs_the_error_is_at_least_the_runs_spread_over_root_n(tmp_path):
    # Five runs, each run's anomalous points lifted by its own amount above noise.
    rng = np.random.default_rng(1)
    labels, split = _runs_of_six_segments(tmp_path, 5)
    lift = np.repeat([0.0, 0.5, 1.0, 2.0, 4.0], 6)[:, None]
    scores = rng.normal(0.0, 1.0, labels.shape) + lift * labels
    per_run = np.array(
        [
            roc_auc_score(labels[6 * run : 6 * run + 6].ravel(), scores[6 * run : 6 * run + 6].ravel())
            for run in range(5)
        ]
    )
    resamples = headline_resamples([scores], split, CONFIG, "point")[0]
    assert resamples.mean() == pytest.approx(per_run.mean(), abs=0.03)
    runs_alone = per_run.std() / math.sqrt(5)
    assert runs_alone < standard_error(resamples) < 1.5 * runs_alone


def test_files_labelled_as_a_whole_are_resampled_as_files(tmp_path):
    # Eight files of two segments; the anomalous files (odd) score 1 above the normal ones except file 1.
    file_labels = np.repeat([0, 1, 0, 1, 0, 1, 0, 1], 2).astype(np.int8)
    runs = list(np.repeat(np.arange(8), 2))
    split = _split(tmp_path, file_labels, "segment", runs)
    scores = np.repeat(file_labels[:, None].astype(float), LENGTH, axis=1)
    scores[2:4] = -1.0  # file 1, anomalous, below every normal file: AUROC 0.75 over the files
    resamples = headline_resamples([scores], split, CONFIG, "run")[0]
    # Each resample draws 4 anomalous and 4 normal files: the file below the others appears 0 to 4 times.
    assert set(np.round(resamples, 4)) <= {1.0, 0.75, 0.5, 0.25, 0.0}
    assert resamples.mean() == pytest.approx(0.75, abs=0.05)
    assert standard_error(resamples) > 0.1


def test_a_split_with_fewer_than_two_units_of_a_class_gives_no_resamples(tmp_path):
    labels = np.zeros((6, LENGTH), dtype=np.int8)
    labels[0, 3] = 1  # one anomalous segment
    split = _split(tmp_path, labels, "point")
    resamples = headline_resamples([labels.astype(float)], split, CONFIG, "point")
    assert np.isnan(resamples).all() and math.isnan(standard_error(resamples[0]))


def test_resampled_aurocs_equal_scikit_learns_with_ties_and_undefined_scores():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(30, 40)).astype(float)  # many ties
    scores[rng.random(scores.shape) < 0.1] = np.nan
    labels = rng.random(scores.shape) < 0.3
    expected = [
        roc_auc_score(row_labels[~np.isnan(row)], row[~np.isnan(row)])
        for row, row_labels in zip(scores, labels, strict=True)
    ]
    np.testing.assert_allclose(aurocs_by_row(scores, labels), expected, rtol=1e-12)
    assert np.isnan(aurocs_by_row(np.ones((1, 4)), np.zeros((1, 4), dtype=bool))).all()  # one class: undefined
