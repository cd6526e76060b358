"""Distances from normal data (shrunk Mahalanobis, nearest neighbours), against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsmoe.evaluation.distances import NearestNeighbourDistance, ShrunkMahalanobis


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


def test_nearest_neighbour_distance_is_the_mean_over_the_nearest_scaled_vectors():
    # Two clouds of normal operation at x = -1 and x = +1; per-dimension std is 1 in x and 2 in y.
    normal = np.array([[-1.0, 2.0], [-1.0, -2.0], [1.0, 2.0], [1.0, -2.0]])
    distance = NearestNeighbourDistance(neighbours=2, max_fit_vectors=100).fit(normal)
    # Scaled, the normal vectors are (+-1, +-1); the point (1, 0) scales to (1, 0): both nearest at 1.
    assert distance.score(np.array([1.0, 0.0])) == pytest.approx(1.0)
    # The origin lies between the clouds: distance sqrt(2) to every normal vector, though it is their mean.
    assert distance.score(np.zeros((3, 2))) == pytest.approx(np.full(3, math.sqrt(2)))


def test_nearest_neighbour_distance_of_nan_is_nan_and_a_constant_dimension_is_not_scaled():
    normal = np.column_stack([np.arange(6.0), np.full(6, 3.0)])
    distance = NearestNeighbourDistance(neighbours=1, max_fit_vectors=100).fit(normal)
    scores = distance.score(np.array([[2.5, 3.0], [np.nan, 3.0], [2.0, 5.0]]))
    # x is scaled by std(0..5); y never moved, so it keeps its units.
    assert scores[0] == pytest.approx(0.5 / np.std(np.arange(6.0)))
    assert math.isnan(scores[1])
    assert scores[2] == pytest.approx(2.0)


def test_nearest_neighbour_fit_keeps_a_seeded_sample_and_needs_more_vectors_than_neighbours():
    vectors = np.random.default_rng(0).normal(size=(500, 3))
    first = NearestNeighbourDistance(neighbours=3, max_fit_vectors=50, seed=1).fit(vectors)
    second = NearestNeighbourDistance(neighbours=3, max_fit_vectors=50, seed=1).fit(vectors)
    assert first.index.n_samples_fit_ == 50
    probe = np.ones((4, 3))
    np.testing.assert_array_equal(first.score(probe), second.score(probe))
    with pytest.raises(ValueError, match="more than 3 normal vectors"):
        NearestNeighbourDistance(neighbours=3, max_fit_vectors=50).fit(vectors[:3])
