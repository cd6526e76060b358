"""Mahalanobis distance from normal data, with a shrunk covariance that is never singular.

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
        squared = np.einsum("...i,ij,...j->...", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))
