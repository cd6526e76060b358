"""Classical detectors scored beside the model on the same split, points and metrics.

Each baseline is fitted on normalised training segments [N, C, L] (normal data only) and gives every
point of a segment a score [N, L], NaN where it is undefined (the first points of a segment, before its
window fills). They are deliberately the detectors a reviewer would try first: if the model cannot beat
a moving variance, its forecasts are not what finds the anomalies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tsmoe.data.store import safe_std
from tsmoe.evaluation.config import EvaluationConfig

# Fitting PCA or a forest on every training point is slow and adds nothing past this many vectors.
MAX_TRAINING_VECTORS = 20_000


class Baseline(Protocol):
    """A detector fitted on normal segments that scores every point of other segments."""

    name: str

    def fit(self, segments: np.ndarray) -> None:
        """Learn normal behaviour from training segments [N, C, L]."""

    def score(self, segments: np.ndarray) -> np.ndarray:
        """Point scores [N, L]; higher is more anomalous."""


class _FeatureDeviation:
    """Scores a per-point feature [N, C, L] by its distance from training, in training std per channel."""

    name = ""

    def feature(self, segments: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, segments: np.ndarray) -> None:
        values = self.feature(segments.astype(np.float64))
        self.mean = np.nanmean(values, axis=(0, 2))[None, :, None]
        std = np.nanstd(values, axis=(0, 2))[None, :, None]
        self.std = safe_std(std)

    def score(self, segments: np.ndarray) -> np.ndarray:
        # A sag lowers a window's variance and a frozen sensor its differences: deviations either way count.
        deviation = np.abs(self.feature(segments.astype(np.float64)) - self.mean) / self.std
        return deviation.mean(axis=1)


class MovingVariance(_FeatureDeviation):
    """Variance over the trailing window of `window` points, per channel."""

    name = "moving_variance"

    def __init__(self, window: int):
        self.window = window

    def feature(self, segments: np.ndarray) -> np.ndarray:
        variance = np.full(segments.shape, np.nan)
        if segments.shape[-1] >= self.window:
            variance[..., self.window - 1 :] = sliding_window_view(segments, self.window, axis=-1).var(axis=-1)
        return variance


class FirstDifference(_FeatureDeviation):
    """Squared difference from the previous point, per channel."""

    name = "first_difference"

    def feature(self, segments: np.ndarray) -> np.ndarray:
        squared = np.full(segments.shape, np.nan)
        squared[..., 1:] = np.square(np.diff(segments, axis=-1))
        return squared


def lag_vectors(segments: np.ndarray, window: int) -> np.ndarray:
    """Every point's trailing `window` values of all channels: [N, L - window + 1, C * window]."""
    windows = sliding_window_view(segments, window, axis=-1)  # [N, C, L-w+1, w]
    count, channels, positions, _ = windows.shape
    return windows.transpose(0, 2, 1, 3).reshape(count, positions, channels * window)


class _EmbeddingDetector:
    """Fits an sklearn model on lag vectors of training points and scores each point's vector."""

    name = ""

    def __init__(self, window: int, seed: int):
        self.window = window
        self.seed = seed

    def build(self):
        raise NotImplementedError

    def vector_scores(self, vectors: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, segments: np.ndarray) -> None:
        vectors = lag_vectors(segments, self.window).reshape(-1, segments.shape[1] * self.window)
        if len(vectors) > MAX_TRAINING_VECTORS:
            rng = np.random.default_rng(self.seed)
            vectors = vectors[rng.choice(len(vectors), MAX_TRAINING_VECTORS, replace=False)]
        self.model = self.build().fit(vectors)

    def score(self, segments: np.ndarray) -> np.ndarray:
        count, channels, length = segments.shape
        scores = np.full((count, length), np.nan)
        vectors = lag_vectors(segments, self.window)
        flat = vectors.reshape(-1, channels * self.window)
        scores[:, self.window - 1 :] = self.vector_scores(flat).reshape(count, vectors.shape[1])
        return scores


class PcaReconstruction(_EmbeddingDetector):
    """Squared error of reconstructing each lag vector from the components holding 95% of training variance."""

    name = "pca"

    def build(self):
        from sklearn.decomposition import PCA  # imported on use: training workers never need it

        return PCA(n_components=0.95, svd_solver="full", random_state=self.seed)

    def vector_scores(self, vectors: np.ndarray) -> np.ndarray:
        reconstructed = self.model.inverse_transform(self.model.transform(vectors))
        return np.square(vectors - reconstructed).sum(axis=1)


class IsolationForestDetector(_EmbeddingDetector):
    """Isolation Forest on lag vectors; the score is the negated sklearn `score_samples` (higher = rarer)."""

    name = "isolation_forest"

    def build(self):
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=100, random_state=self.seed)

    def vector_scores(self, vectors: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(vectors)


class KMeansDistance(_EmbeddingDetector):
    """Distance of each lag vector to the nearest of `clusters` k-means centroids of training vectors."""

    name = "kmeans"

    def __init__(self, window: int, clusters: int, seed: int):
        super().__init__(window, seed)
        self.clusters = clusters

    def build(self):
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=self.clusters, n_init=4, random_state=self.seed)

    def fit(self, segments: np.ndarray) -> None:
        # Fewer distinct training vectors than clusters would leave empty clusters: ask for no more.
        vectors = lag_vectors(segments, self.window).reshape(-1, segments.shape[1] * self.window)
        self.clusters = max(1, min(self.clusters, len(np.unique(vectors, axis=0))))
        super().fit(segments)

    def vector_scores(self, vectors: np.ndarray) -> np.ndarray:
        return self.model.transform(vectors).min(axis=1)


def build_baselines(config: EvaluationConfig) -> list[Baseline]:
    """The baselines named in the config, in its order."""
    builders: dict[str, Callable[[], Baseline]] = {
        "moving_variance": lambda: MovingVariance(config.moving_window),
        "first_difference": FirstDifference,
        "pca": lambda: PcaReconstruction(config.embedding_window, config.seed),
        "isolation_forest": lambda: IsolationForestDetector(config.embedding_window, config.seed),
        "kmeans": lambda: KMeansDistance(config.embedding_window, config.kmeans_clusters, config.seed),
    }
    return [builders[name]() for name in config.baselines]
