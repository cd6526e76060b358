"""How anomaly scores are computed and aggregated: the evaluation part of a run's config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BaselineName = Literal["moving_variance", "first_difference", "pca", "isolation_forest", "kmeans"]
BASELINE_NAMES: tuple[BaselineName, ...] = ("moving_variance", "first_difference", "pca", "isolation_forest", "kmeans")
# The fields that make the model's point scores; an alternative detector may change these and nothing else.
DETECTOR_FIELDS = (
    "heads",
    "error",
    "error_direction",
    "channel_aggregate",
    "statistics_split",
    "forecast_weight",
    "cross_channel_weight",
    "density_weight",
    "reconstruction_weight",
    "density_method",
    "density_scope",
    "density_neighbours",
    "density_layer",
    "normal_reference",
    "covariance_shrinkage",
    "smoothing_window",
    "context_window",
    "segment_aggregate",
    "segment_quantile",
)
WEIGHT_FIELDS = ("forecast_weight", "cross_channel_weight", "density_weight", "reconstruction_weight")


class EvaluationConfig(BaseModel):
    """Settings for scoring points and segments with the model, and for the baselines beside them.

    A point's score is a weighted sum of up to four components, each standardised by its mean and std on
    the reference normal data (the dataset's `holdout` split, which the model never trained on, or the
    training split where there is none): forecast error, the cross-channel distance of the error vector,
    the density of the model's hidden state, and the masked-reconstruction error (models trained with a
    reconstruction objective only). It is then smoothed over `smoothing_window` points.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Horizons whose forecast errors score a point; each must be one of the model's horizon_lengths.
    heads: list[int] = Field(default_factory=lambda: [1], min_length=1)
    error: Literal["squared", "absolute"] = "squared"
    # upper: only errors above normal count; both: |mean z| over the smoothing window, so a stretch of errors
    # far below normal counts too (a signal that turns flatter or more regular than normal is forecast too well).
    error_direction: Literal["upper", "both"] = "upper"
    # Channels are scored separately, normalised by their own reference-error statistics, then combined.
    channel_aggregate: Literal["mean", "max"] = "mean"
    # Where normal score statistics come from: the held-out normal split when the dataset has one.
    statistics_split: Literal["holdout", "train"] = "holdout"
    # Weights of the score components; a weight of 0 leaves a component out (and its cost with it).
    forecast_weight: float = Field(1.0, ge=0)
    cross_channel_weight: float = Field(0.0, ge=0)  # Mahalanobis distance of the per-channel error z-scores
    density_weight: float = Field(0.0, ge=0)  # Mahalanobis distance of hidden states from training states
    # Each point's error reconstructed while hidden (training.loss masked_reconstruction or both), z-scored per
    # channel against the reference split's reconstruction errors.
    reconstruction_weight: float = Field(0.0, ge=0)
    # How far a hidden state lies from the training states: Mahalanobis from their mean (one cloud), or the
    # mean distance to the nearest training states (any number of operating points).
    density_method: Literal["mahalanobis", "nearest_neighbours"] = "mahalanobis"
    # channel: each channel's state alone, combined by channel_aggregate; joint: the channels' states side by
    # side, so a combination of channel states never seen together in training scores even when each was.
    density_scope: Literal["channel", "joint"] = "channel"
    density_neighbours: int = Field(5, gt=0)
    # Which states the density reads: "final" (after the final norm, what the forecast heads read), 0 (the
    # input embedding: each point's own values, through the model's learned features) or i (decoder layer i's
    # output). The final states hold what forecasting needs; the early ones keep the level of each series, so
    # with density_scope joint they hold the joint operating point of the channels.
    density_layer: Literal["final"] | Annotated[int, Field(ge=0)] = "final"
    # The normal data a scored run's points are compared with, by the density component and the baselines: all
    # training segments, or "run": the training segments cut from that run's own normal rows (a labelled run's
    # normal prefix, `tsmoe data from-csv --normal-prefix`), so that each recording is compared with its own
    # operating point. A run without such segments, and a dataset without any, is compared with all of them.
    normal_reference: Literal["all", "run"] = "all"
    covariance_shrinkage: float = Field(0.1, gt=0, le=1)  # of both Mahalanobis covariances
    smoothing_window: int = Field(1, ge=1)  # points in the centred mean over the model's point scores
    # Points each attention layer lets a forecast and a hidden state see: the point itself and those just before
    # it; None: all of the segment before it. With a window, an anomaly stops shaping the scores of the normal
    # points after it once it lies num_hidden_layers * (window - 1) points behind them, instead of colouring them
    # to the end of the segment (docs/detection.md, fourteenth round). Reconstruction errors see the whole segment.
    context_window: int | None = Field(None, gt=1)
    # A segment's score from its point scores.
    segment_aggregate: Literal["max", "mean", "quantile"] = "quantile"
    segment_quantile: float = Field(0.99, gt=0, lt=1)
    # Reference segments used to estimate normal statistics (all of them when fewer).
    statistics_segments: int = Field(256, gt=0)
    batch_size: int = Field(8, gt=0)
    # Baselines reported beside the model, on the same split and metrics.
    baselines: list[BaselineName] = Field(default_factory=lambda: list(BASELINE_NAMES))
    moving_window: int = Field(16, gt=1)  # points in the moving-variance window
    embedding_window: int = Field(4, gt=0)  # points per PCA / Isolation Forest / k-means feature vector
    kmeans_clusters: int = Field(8, gt=0)
    seed: int = 0
    # Other detectors to weigh against this one on the validation split: each changes some of DETECTOR_FIELDS.
    # Which component carries depends on the trained model and the data (docs/detection.md, seventh round), so
    # training scores them all at each validation, keeps the one with the highest validation AUROC (this
    # section as written wins ties), and saves it beside the model (`evaluation.yaml`).
    alternatives: list[dict[str, Any]] = Field(default_factory=list)

    def candidates(self) -> list[EvaluationConfig]:
        """This detector, then each alternative: the detectors validation chooses among (none with alternatives)."""
        first = self.model_copy(update={"alternatives": []})
        base = first.model_dump()
        return [first, *(EvaluationConfig.model_validate(base | changes) for changes in self.alternatives)]

    def weights(self) -> dict[str, float]:
        """Each score component's weight, by component name."""
        return {field.removesuffix("_weight"): getattr(self, field) for field in WEIGHT_FIELDS}

    def density_layer_fits(self, num_hidden_layers: int) -> bool:
        """Whether a model of this many decoder layers has the states `density_layer` names."""
        return self.density_layer == "final" or self.density_layer <= num_hidden_layers

    @model_validator(mode="after")
    def _some_component(self) -> EvaluationConfig:
        if self.forecast_weight + self.cross_channel_weight + self.density_weight + self.reconstruction_weight <= 0:
            raise ValueError(
                "forecast_weight, cross_channel_weight, density_weight and reconstruction_weight: "
                "at least one must be > 0"
            )
        return self

    @model_validator(mode="after")
    def _alternatives_are_detectors(self) -> EvaluationConfig:
        base = self.model_dump(exclude={"alternatives"})
        for index, changes in enumerate(self.alternatives):
            where = f"alternatives[{index}]"
            unknown = sorted(set(changes) - set(DETECTOR_FIELDS))
            if unknown:
                raise ValueError(
                    f"{where}: {', '.join(unknown)} cannot differ between detectors (an alternative may change "
                    f"{', '.join(DETECTOR_FIELDS)})"
                )
            try:
                EvaluationConfig.model_validate(base | changes)
            except ValidationError as error:
                problems = (
                    f"{'.'.join([where, *map(str, problem['loc'])])}: "
                    + str(problem["msg"]).removeprefix("Value error, ")
                    for problem in error.errors()
                )
                raise ValueError("; ".join(problems)) from None
        return self
