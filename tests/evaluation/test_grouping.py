"""Segment aggregation and the reassembly of overlapping windows into runs."""

from __future__ import annotations

import numpy as np
import pytest

from tsmoe.evaluation.grouping import aggregate_segments, point_groups, reassemble_run, segment_groups


def test_aggregates_ignore_undefined_points():
    scores = np.array([[np.nan, 1.0, 3.0], [np.nan, 2.0, 2.0]])
    assert aggregate_segments(scores, "max").tolist() == [3.0, 2.0]
    assert aggregate_segments(scores, "mean").tolist() == [2.0, 2.0]
    assert aggregate_segments(scores, "quantile", 0.5).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="max, mean or quantile"):
        aggregate_segments(scores, "median")


def test_each_point_comes_from_the_earliest_covering_window():
    # Run of 8 points cut into windows of 4 at starts 0, 2, 4; window k scores every point 10 * k + position.
    starts = np.array([4, 0, 2])  # stored out of order on purpose
    scores = np.array([[10.0 * k + p for p in range(4)] for k in (2, 0, 1)])
    labels = np.zeros((3, 4), dtype=np.int8)
    labels[0, 3] = 1  # point 7
    run_scores, run_labels = reassemble_run(scores, labels, starts)
    # Points 0-3 from window 0, 4-5 from window 1 (positions 2-3), 6-7 from window 2 (positions 2-3).
    assert run_scores.tolist() == [0, 1, 2, 3, 12, 13, 22, 23]
    assert run_labels.tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_point_groups_split_by_run_and_pool_without_runs():
    scores = np.arange(12, dtype=float).reshape(3, 4)
    labels = np.zeros((3, 4), dtype=np.int8)
    runs = np.array([0, 1, 0])
    groups = list(point_groups(scores, labels, runs, starts=None))
    assert [group[0].tolist() for group in groups] == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7]]
    assert len(list(point_groups(scores, labels, None, None))) == 1
    segments = list(segment_groups(np.array([0.5, 0.6, 0.7]), np.array([0, 1, 1]), runs))
    assert [group[1].tolist() for group in segments] == [[0, 1], [1]]
