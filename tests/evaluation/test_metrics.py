"""Detection metrics against hand-computed values, and averaging over runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsmoe.evaluation.metrics import average_over_groups, detection_metrics


def test_perfect_ranking_scores_one_everywhere():
    metrics = detection_metrics(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1]))
    assert metrics.auroc == 1.0 and metrics.auprc == 1.0 and metrics.best_f1 == 1.0


def test_values_match_a_hand_count():
    # Pairs (anomalous, normal): (0.8 > 0.1), (0.8 > 0.5), (0.3 > 0.1), (0.3 < 0.5): AUROC 3/4.
    # Best F1: threshold 0.3 flags {0.8, 0.5, 0.3}: precision 2/3, recall 1, F1 0.8.
    metrics = detection_metrics(np.array([0.1, 0.5, 0.3, 0.8]), np.array([0, 0, 1, 1]))
    assert metrics.auroc == pytest.approx(0.75)
    assert metrics.best_f1 == pytest.approx(0.8)
    # Average precision: recall 0.5 at precision 1 (0.8), recall 1 at precision 2/3 (0.3).
    assert metrics.auprc == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_nan_scores_are_left_out():
    with_nan = detection_metrics(np.array([np.nan, 0.1, 0.9]), np.array([1, 0, 1]))
    assert with_nan.auroc == 1.0


def test_one_class_is_an_error_naming_the_reason():
    with pytest.raises(ValueError, match="one class only"):
        detection_metrics(np.array([0.1, 0.2]), np.array([0, 0]))


def test_runs_are_averaged_not_pooled():
    # Each run ranks perfectly, but run 1 sits on a higher scale: pooled AUROC would be below 1.
    run0 = (np.array([0.0, 0.1, 1.0]), np.array([0, 0, 1]))
    run1 = (np.array([5.0, 5.1, 6.0]), np.array([0, 0, 1]))
    pooled = detection_metrics(np.concatenate([run0[0], run1[0]]), np.concatenate([run0[1], run1[1]]))
    averaged = average_over_groups([run0, run1])
    assert pooled.auroc < 1.0
    assert averaged.auroc == 1.0 and averaged.groups_scored == 2 and averaged.groups_skipped == 0


def test_groups_with_one_class_are_counted_as_skipped():
    averaged = average_over_groups([(np.array([0.0, 1.0]), np.array([0, 1])), (np.array([0.0, 1.0]), np.array([0, 0]))])
    assert averaged.groups_scored == 1 and averaged.groups_skipped == 1 and averaged.auroc == 1.0
    nothing = average_over_groups([(np.array([0.0]), np.array([1]))])
    assert nothing.groups_scored == 0 and math.isnan(nothing.auroc)
