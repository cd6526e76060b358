"""Mahalanobis distance with a shrunk covariance, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsmoe.evaluation.distances import ShrunkMahalanobis


def test_distance_uses_the_shrunk_covariance():
    # Mean 0, covariance diag(0.5, 2); shrunk by 0.1 towards 1.25 * I: diag(0.575, 1.925).
    vectors = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    distance = ShrunkMahalanobis(shrinkage=0.1).fit(vectors)
    expected = math.sqrt(1 / 0.575 + 1 / 1.925)
    assert distance.score(np.array([1.0, 1.0])) == pytest.approx(expected)
    np.testing.assert_allclose(distance.score(np.zeros((2, 3, 2))), np.zeros((2, 3)), atol=1e-12)


def test_identical_vectors_fall_back_to_euclidean_distance():
    distance = ShrunkMahalanobis(shrinkage=0.1).fit(np.ones((5, 2)))
    assert distance.score(np.array([4.0, 5.0])) == pytest.approx(5.0)


def test_a_constant_channel_never_divides_by_zero():
    vectors = np.column_stack([np.array([1.0, -1.0, 1.0, -1.0]), np.zeros(4)])
    distance = ShrunkMahalanobis(shrinkage=0.5).fit(vectors)
    # Covariance diag(1, 0) shrunk by 0.5 towards 0.5 * I: diag(0.75, 0.25).
    assert distance.score(np.array([0.0, 1.0])) == pytest.approx(2.0)


def test_nan_rows_are_left_out_of_the_fit_and_score_nan():
    vectors = np.array([[1.0, 0.0], [-1.0, 0.0], [np.nan, 3.0], [0.0, 2.0], [0.0, -2.0]])
    distance = ShrunkMahalanobis(shrinkage=0.1).fit(vectors)
    assert distance.score(np.array([1.0, 1.0])) == pytest.approx(math.sqrt(1 / 0.575 + 1 / 1.925))
    assert math.isnan(distance.score(np.array([np.nan, 1.0])))


def test_fewer_than_two_vectors_is_an_error():
    with pytest.raises(ValueError, match="at least 2 normal vectors"):
        ShrunkMahalanobis(shrinkage=0.1).fit(np.ones((1, 3)))
