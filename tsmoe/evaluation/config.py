"""How anomaly scores are computed and aggregated: the evaluation part of a run's config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BaselineName = Literal["moving_variance", "first_difference", "pca", "isolation_forest"]
BASELINE_NAMES: tuple[BaselineName, ...] = ("moving_variance", "first_difference", "pca", "isolation_forest")


class EvaluationConfig(BaseModel):
    """Settings for scoring points and segments by forecast error, and for the baselines beside them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Horizons whose forecast errors score a point; each must be one of the model's horizon_lengths.
    heads: list[int] = Field(default_factory=lambda: [1], min_length=1)
    error: Literal["squared", "absolute"] = "squared"
    # Channels are scored separately, normalised by their own training-error statistics, then combined.
    channel_aggregate: Literal["mean", "max"] = "mean"
    # A segment's score from its point scores.
    segment_aggregate: Literal["max", "mean", "quantile"] = "quantile"
    segment_quantile: float = Field(0.99, gt=0, lt=1)
    # Training segments used to estimate the error statistics (all of them when fewer).
    statistics_segments: int = Field(256, gt=0)
    batch_size: int = Field(8, gt=0)
    # Baselines reported beside the model, on the same split and metrics.
    baselines: list[BaselineName] = Field(default_factory=lambda: list(BASELINE_NAMES))
    moving_window: int = Field(16, gt=1)  # points in the moving-variance window
    embedding_window: int = Field(4, gt=0)  # points per PCA / Isolation Forest feature vector
    seed: int = 0
