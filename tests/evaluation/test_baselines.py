"""The baselines score by definition on small hand-checkable inputs, and find an obvious anomaly."""

from __future__ import annotations

import numpy as np
import pytest

from tsmoe.evaluation.baselines import (
    FirstDifference,
    IsolationForestDetector,
    KMeansDistance,
    MovingVariance,
    PcaReconstruction,
    build_baselines,
    lag_vectors,
)
from tsmoe.evaluation.config import BASELINE_NAMES, EvaluationConfig
from tsmoe.evaluation.metrics import detection_metrics


def _sines(count, length=64, seed=0):
    rng = np.random.default_rng(seed)
    time = np.arange(length)
    phases = rng.uniform(0, 2 * np.pi, size=(count, 2, 1))
    return (np.sin(2 * np.pi * time / 16 + phases) + 0.05 * rng.normal(size=(count, 2, length))).astype(np.float32)


def test_lag_vectors_hold_every_channels_trailing_window():
    segments = np.arange(2 * 2 * 5, dtype=float).reshape(2, 2, 5)
    vectors = lag_vectors(segments, 3)
    assert vectors.shape == (2, 3, 6)
    # Segment 0 at the last position: channel 0 points 2..4, then channel 1 points 2..4.
    assert vectors[0, 2].tolist() == [2, 3, 4, 7, 8, 9]


def test_moving_variance_is_the_trailing_window_variance_in_training_std():
    detector = MovingVariance(window=3)
    train = np.zeros((1, 1, 6))
    train[0, 0] = [0, 1, 0, 1, 0, 1]
    detector.fit(train)
    feature = detector.feature(train)
    assert np.isnan(feature[0, 0, :2]).all()
    assert feature[0, 0, 2] == pytest.approx(np.var([0, 1, 0]))
    # A flat segment has variance 0, |0 - mean| / std away from training.
    flat = detector.score(np.zeros((1, 1, 6)))
    expected = abs(0 - detector.mean.item()) / detector.std.item()
    assert flat[0, 2:] == pytest.approx([expected] * 4)


def test_first_difference_is_undefined_at_the_first_point_only():
    detector = FirstDifference()
    detector.fit(_sines(4))
    scores = detector.score(_sines(2, seed=1))
    assert np.isnan(scores[:, 0]).all() and np.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize(
    "detector",
    [
        MovingVariance(8),
        FirstDifference(),
        PcaReconstruction(4, 0),
        IsolationForestDetector(4, 0),
        KMeansDistance(4, 8, 0),
    ],
    ids=lambda d: d.name,
)
def test_every_baseline_finds_a_burst_of_noise(detector):
    detector.fit(_sines(16))
    test = _sines(4, seed=1)
    labels = np.zeros((4, 64), dtype=np.int8)
    test[1:3, :, 30:50] += np.random.default_rng(2).normal(scale=1.5, size=(2, 2, 20))
    labels[1:3, 30:50] = 1
    scores = detector.score(test)
    assert scores.shape == (4, 64)
    assert detection_metrics(scores, labels).auroc > 0.9


def test_build_baselines_follows_the_config_order():
    config = EvaluationConfig(baselines=["pca", "moving_variance"])
    assert [baseline.name for baseline in build_baselines(config)] == ["pca", "moving_variance"]
    assert [baseline.name for baseline in build_baselines(EvaluationConfig())] == list(BASELINE_NAMES)


def test_kmeans_scores_the_distance_to_the_nearest_centroid():
    # Two clusters of one-point, one-channel windows at 0 and 10: centroids 0 and 10.
    training = np.array([[[0.0, 0.0, 10.0, 10.0]]])
    detector = KMeansDistance(window=1, clusters=2, seed=0)
    detector.fit(training)
    np.testing.assert_allclose(detector.score(np.array([[[1.0, 9.0, 5.0, -2.0]]])), [[1.0, 1.0, 5.0, 2.0]])


def test_kmeans_asks_for_no_more_clusters_than_distinct_vectors():
    detector = KMeansDistance(window=1, clusters=8, seed=0)
    detector.fit(np.ones((1, 1, 6)))
    assert detector.clusters == 1
    np.testing.assert_allclose(detector.score(np.array([[[4.0, 1.0]]])), [[3.0, 0.0]])
