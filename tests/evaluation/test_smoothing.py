"""Centred smoothing of point scores, against hand-computed means."""

from __future__ import annotations

import numpy as np

from tsmoe.evaluation.smoothing import smooth_points


def test_centred_mean_over_the_window_inside_the_segment():
    scores = np.array([[0.0, 3.0, 6.0, 9.0, 12.0]])
    # Window 3: each point with its neighbours; the ends average the two points they have.
    np.testing.assert_allclose(smooth_points(scores, 3), [[1.5, 3.0, 6.0, 9.0, 10.5]])
    # Window 4: one point before, two after.
    np.testing.assert_allclose(smooth_points(scores, 4), [[3.0, 4.5, 7.5, 9.0, 10.5]])


def test_undefined_points_are_left_out_of_each_mean():
    scores = np.array([[np.nan, 2.0, 4.0, np.nan, np.nan]])
    np.testing.assert_allclose(smooth_points(scores, 3), [[2.0, 3.0, 3.0, 4.0, np.nan]])


def test_window_one_changes_nothing():
    scores = np.array([[np.nan, 1.0, 2.0]])
    assert smooth_points(scores, 1) is scores
