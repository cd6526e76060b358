"""Distances from normal data: Mahalanobis with a shrunk covariance, and mean distance to the nearest neighbours.

Used twice by the detector: on the vector of per-channel forecast-error z-scores of a point (a correlation
break between channels moves it off the normal cloud even when no channel errs much alone), and on the
model's hidden state of a point (a state the model never produced on normal data).

The covariance is sklearn's shrunk estimate, (1 - s) * S + s * trace(S) / d * I, which keeps every
eigenvalue positive when S is singular (fewer vectors than dimensions, a channel that never moves). When
S is zero altogether (every vector identical), the identity stands in for it: the distance is then the
Euclidean one, never a division by zero.
"""

from __future__ import annotations

import numpy as np

# Fitting on more vectors than this changes nothing the distance can show, and costs memory.
MAX_FIT_VECTORS = 20_000
MIN_VARIANCE = 1e-12


class ShrunkMahalanobis:
    """Distance of vectors [..., d] from the mean of normal vectors, in the metric of their covariance."""

    def __init__(self, shrinkage: float, seed: int = 0):
        self.shrinkage = shrinkage
        self.seed = seed

    def fit(self, vectors: np.ndarray) -> ShrunkMahalanobis:
        """Learn mean and covariance from normal vectors [n, d] (NaN rows are dropped)."""
        from sklearn.covariance import ShrunkCovariance  # imported on use: training workers rarely need it

        vectors = np.asarray(vectors, dtype=np.float64)
        vectors = vectors[np.isfinite(vectors).all(axis=1)]
        if len(vectors) < 2:
            raise ValueError(f"Mahalanobis distance: need at least 2 normal vectors to fit, got {len(vectors)}")
        if len(vectors) > MAX_FIT_VECTORS:
            rng = np.random.default_rng(self.seed)
            vectors = vectors[rng.choice(len(vectors), MAX_FIT_VECTORS, replace=False)]
        estimate = ShrunkCovariance(shrinkage=self.shrinkage).fit(vectors)
        covariance = estimate.covariance_
        if np.trace(covariance) / covariance.shape[0] <= MIN_VARIANCE:
            covariance = np.eye(covariance.shape[0])
        self.mean = estimate.location_
        self.precision = np.linalg.pinv(covariance, hermitian=True)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Distances [...] of vectors [..., d]; NaN where a vector holds NaN."""
        centred = np.asarray(vectors, dtype=np.float64) - self.mean
        # A matrix product, not a three-operand einsum: einsum contracts it in a plain loop, minutes for the
        # thousands of dimensions of many channels' joint states.
        squared = ((centred @ self.precision) * centred).sum(axis=-1)
        return np.sqrt(np.maximum(squared, 0.0))


class NearestNeighbourDistance:
    """Mean Euclidean distance of vectors [..., d] to their `neighbours` nearest normal vectors.

    Unlike Mahalanobis, this makes no single-cloud assumption: normal operation at several distinct
    operating points forms several clouds, and a vector between them is far from all of them. Each
    dimension is scaled by its normal std first, so no dimension dominates by its units.
    """

    def __init__(self, neighbours: int, max_fit_vectors: int, seed: int = 0):
        self.neighbours = neighbours
        self.max_fit_vectors = max_fit_vectors
        self.seed = seed

    def fit(self, vectors: np.ndarray) -> NearestNeighbourDistance:
        """Remember (a seeded sample of) normal vectors [n, d]; NaN rows are dropped."""
        from sklearn.neighbors import NearestNeighbors  # imported on use: training workers rarely need it

        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors[np.isfinite(vectors).all(axis=1)]
        if len(vectors) <= self.neighbours:
            raise ValueError(
                f"nearest-neighbour distance: need more than {self.neighbours} normal vectors, got {len(vectors)}"
            )
        if len(vectors) > self.max_fit_vectors:
            rng = np.random.default_rng(self.seed)
            vectors = vectors[rng.choice(len(vectors), self.max_fit_vectors, replace=False)]
        self.mean = vectors.mean(axis=0)
        std = vectors.std(axis=0)
        self.scale = np.where(std > MIN_VARIANCE, std, 1.0).astype(np.float32)
        self.index = NearestNeighbors(n_neighbors=self.neighbours).fit((vectors - self.mean) / self.scale)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Distances [...] of vectors [..., d]; NaN where a vector holds NaN."""
        vectors = np.asarray(vectors, dtype=np.float32)
        flat = vectors.reshape(-1, vectors.shape[-1])
        finite = np.isfinite(flat).all(axis=1)
        distances = np.full(len(flat), np.nan)
        if finite.any():
            found, _ = self.index.kneighbors((flat[finite] - self.mean) / self.scale)
            distances[finite] = found.mean(axis=1)
        return distances.reshape(vectors.shape[:-1])
