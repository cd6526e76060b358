"""The model's point scores: forecast error, cross-channel error distance and hidden-state density combined.

Each component is measured against normal data the model was not fit on where the dataset holds some
(its `holdout` split; else the training split, which makes normal errors look smaller than they are):

- forecast: per-channel errors z-scored by the reference errors' statistics per context length, then
  combined over channels; with `error_direction: both`, |mean z| over the smoothing window, so a stretch of
  errors far below normal counts too;
- cross_channel: Mahalanobis distance of a point's vector of per-channel z-scores from the reference
  vectors (covariance shrunk, so one channel or a frozen one never divides by zero);
- density: distance of a point's hidden state (the final one, or an earlier layer's: `density_layer`) from the
  training split's states, per channel and combined as the forecast component is (`channel_aggregate`), or
  all channels' states side by side (`density_scope: joint`); Mahalanobis or nearest neighbours. With
  `normal_reference: run`, a run's points are measured against the training states of that run's own normal
  rows where it has any (a labelled run's normal prefix), so each recording is compared with its own operating
  point;
- reconstruction: each point's error from the masked-reconstruction pass that hid it (models with the
  reconstruction path only), z-scored per channel by the reference errors, combined by `channel_aggregate`.

Every component is standardised by its mean and std over the reference points, weighted, summed, and the
sum smoothed over `smoothing_window` points.

With `context_window`, the model's forecasts and hidden states come from a pass whose attention sees each point
and the few before it, for the reference, training and scored segments alike: after an anomaly ends, the points
that follow it are measured on their own recent past rather than on a context that still holds the anomaly.

A model trained with extra views (`data.views`) is scored with them: every segment gets the same extra
series as in training (with `residual_reference: run`, the residual series on its own run's directions), and
"channel" above means every series the model sees.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from tsmoe.data.loader import normalized_segments
from tsmoe.data.meta import Normalization
from tsmoe.data.store import SegmentDataset, SegmentSplit
from tsmoe.data.views import SeriesViews
from tsmoe.evaluation.config import WEIGHT_FIELDS, EvaluationConfig
from tsmoe.evaluation.distances import NearestNeighbourDistance, ShrunkMahalanobis
from tsmoe.evaluation.grouping import run_blocks
from tsmoe.evaluation.scoring import (
    ChannelStatistics,
    ErrorStatistics,
    embedding_states,
    forecast_errors_and_states,
    reconstruction_errors,
)
from tsmoe.evaluation.smoothing import smooth_points
from tsmoe.model.timemoe import TimeMoE

Progress = Callable[[str, int, int], None] | None
MIN_STD = 1e-12
# Training states kept for the nearest-neighbour density: enough to cover normal operation, few enough
# that scoring every point of a split stays seconds, not minutes.
MAX_NEIGHBOUR_STATES = 8_192
# Runs whose own state estimators are kept at once (normal_reference run). A split holds each run's segments
# together, so a few suffice, and each can hold MAX_NEIGHBOUR_STATES joint states: about 140 MB at 67 series of
# 64 features, which for every machine of a 28-machine test split would be gigabytes.
RUN_STATE_MODELS_KEPT = 4


class Batch(NamedTuple):
    """One batch of segments as the components see it, over the S series the views make: forecast errors
    [B, S, L] (None where no component reads them), hidden states [B, S, L, H], reconstruction errors [B, S, L]
    when that component is on, and the segments' run ids [B] where the split has them."""

    errors: np.ndarray | None
    states: np.ndarray
    reconstruction: np.ndarray | None
    runs: np.ndarray | None


def reference_split(dataset: SegmentDataset, config: EvaluationConfig) -> SegmentSplit:
    """Normal segments the score statistics come from: the held-out split when asked for and present."""
    if config.statistics_split == "holdout" and "holdout" in dataset.splits:
        return dataset.split("holdout")
    return dataset.split("train")


def reads_forecast_errors(config: EvaluationConfig) -> bool:
    """Whether a detector reads forecast errors. One that weighs only the density of input-embedding states
    does not, and so skips the decoder layers: each point's embedding is its own value's alone."""
    density_alone = (
        config.forecast_weight == 0 and config.cross_channel_weight == 0 and config.reconstruction_weight == 0
    )
    return not (density_alone and config.density_layer == 0)


def _batches(
    model: TimeMoE,
    split: SegmentSplit,
    normalization: Normalization,
    config: EvaluationConfig,
    count: int,
    progress: Progress,
    views: SeriesViews,
    first: int = 0,
) -> Iterator[Batch]:
    """Segments [first, count), batch by batch, over the S series the views make of each segment's channels
    (reconstruction errors only with reconstruction_weight > 0)."""
    device = next(model.parameters()).device
    split_runs = split.runs  # opened once, not per batch
    for start in range(first, count, config.batch_size):
        stop = min(start + config.batch_size, count)
        # A copy of the memory-mapped ids: torch refuses to share a read-only array without a warning.
        runs = None if split_runs is None else np.array(split_runs[start:stop])
        segments = torch.from_numpy(normalized_segments(split, normalization, start, stop)).to(device)
        segments = views(segments, None if runs is None else torch.from_numpy(runs).to(device))
        errors: torch.Tensor | None = None
        if reads_forecast_errors(config):
            errors, states = forecast_errors_and_states(
                model, segments, config.heads, config.error, config.density_layer, config.context_window
            )
        else:
            states = embedding_states(model, segments)
        reconstruction = None
        if config.reconstruction_weight > 0:
            reconstruction = reconstruction_errors(model, segments, config.error).numpy()
        yield Batch(None if errors is None else errors.numpy(), states.numpy(), reconstruction, runs)
        if progress is not None:
            progress(split.name, stop, count)


def combine_channels(scores: np.ndarray, method: str) -> np.ndarray:
    """Point scores [N, L] from channel scores [N, C, L]."""
    return scores.mean(axis=1) if method == "mean" else scores.max(axis=1)


def point_vectors(values: np.ndarray) -> np.ndarray:
    """Per-point vectors [N * L, C] of channel values [N, C, L]."""
    return values.transpose(0, 2, 1).reshape(-1, values.shape[1])


def joint_states(states: np.ndarray) -> np.ndarray:
    """Every point's channel states side by side: [N, L, C * H] from [N, C, L, H]."""
    count, channels, length, hidden = states.shape
    return states.transpose(0, 2, 1, 3).reshape(count, length, channels * hidden)


class ModelDetector:
    """The model's scoring rule, fitted on a dataset's normal data; `score` gives point scores [N, L]."""

    def __init__(
        self,
        model: TimeMoE,
        dataset: SegmentDataset,
        config: EvaluationConfig,
        progress: Progress = None,
        views: SeriesViews | None = None,
    ):
        self.model = model
        self.views = (views or SeriesViews()).to(next(model.parameters()).device)
        self.normalization = dataset.normalization
        self.config = config
        self.progress = progress
        if config.reconstruction_weight > 0 and not model.config.reconstruction_head:
            raise ValueError(
                f"evaluation.reconstruction_weight is {config.reconstruction_weight} but the model has no "
                "reconstruction path (it was trained with training.loss forecast): set it to 0, or train with "
                "training.loss masked_reconstruction or both"
            )
        model.eval()
        self.train = dataset.split("train")
        # Per labelled run id: estimators of that run's own normal states (normal_reference run), fitted when the
        # run is first scored (a validation split holds a share of the runs), None for a run without them; the
        # RUN_STATE_MODELS_KEPT most recently used.
        self.run_state_models: OrderedDict[int, list[ShrunkMahalanobis | NearestNeighbourDistance] | None] = (
            OrderedDict()
        )
        if config.density_weight > 0:
            self.state_models = self._fit_states(self.train)
        reference = reference_split(dataset, config)
        count = min(len(reference), config.statistics_segments)
        errors, states, reconstruction = self._collect(reference, count)
        # None for a detector that reads no forecast errors (`reads_forecast_errors`).
        self.statistics = None if errors is None else ErrorStatistics.from_errors(errors)
        z = self._normalized_errors(errors)
        if reconstruction is not None:
            self.reconstruction_statistics = ChannelStatistics.from_errors(reconstruction)
        if config.cross_channel_weight > 0:
            assert z is not None
            self.cross_channel = ShrunkMahalanobis(config.covariance_shrinkage, config.seed).fit(
                point_vectors(z[:, :, 1:])
            )
        runs = None if reference.runs is None else np.asarray(reference.runs[:count])
        components = self._components(z, states, reconstruction, runs)
        self.location = {name: float(np.nanmean(values)) for name, values in components.items()}
        spread = {name: float(np.nanstd(values)) for name, values in components.items()}
        self.scale = {name: value if value > MIN_STD else 1.0 for name, value in spread.items()}

    def _normalized_errors(self, errors: np.ndarray | None) -> np.ndarray | None:
        """Forecast errors [N, S, L] as z-scores against the reference errors (None where none are read)."""
        if errors is None or self.statistics is None:
            return None
        return self.statistics.normalize(errors)

    def _collect(
        self, split: SegmentSplit, count: int, first: int = 0
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Forecast errors (where read), hidden states (density only) and reconstruction errors (reconstruction
        only) of segments [first, count)."""
        errors, states, reconstruction = [], [], []
        for batch in _batches(
            self.model, split, self.normalization, self.config, count, self.progress, self.views, first
        ):
            if batch.errors is not None:
                errors.append(batch.errors)
            if self.config.density_weight > 0:
                states.append(batch.states)
            if batch.reconstruction is not None:
                reconstruction.append(batch.reconstruction)
        return (
            np.concatenate(errors) if errors else None,
            np.concatenate(states) if states else None,
            np.concatenate(reconstruction) if reconstruction else None,
        )

    def _state_estimator(self) -> ShrunkMahalanobis | NearestNeighbourDistance:
        config = self.config
        if config.density_method == "nearest_neighbours":
            return NearestNeighbourDistance(config.density_neighbours, MAX_NEIGHBOUR_STATES, config.seed)
        return ShrunkMahalanobis(config.covariance_shrinkage, config.seed)

    def _fit_states(self, train: SegmentSplit) -> list[ShrunkMahalanobis | NearestNeighbourDistance]:
        """Estimators of the training split's first `statistics_segments` segments' states."""
        _, states, _ = self._collect(train, min(len(train), self.config.statistics_segments))
        assert states is not None
        return self._fit_estimators(states)

    def _run_states(self, run_id: int) -> list[ShrunkMahalanobis | NearestNeighbourDistance] | None:
        """Estimators of the training segments of a labelled run's own normal data (up to
        `statistics_segments` of them), fitted on first use; None where the run has none."""
        if run_id in self.run_state_models:
            self.run_state_models.move_to_end(run_id)
        else:
            runs = self.train.runs
            blocks = [] if runs is None else run_blocks(runs, run_id, self.config.statistics_segments)
            states = []
            for start, stop in blocks:
                _, block_states, _ = self._collect(self.train, stop, start)
                assert block_states is not None
                states.append(block_states)
            self.run_state_models[run_id] = self._fit_estimators(np.concatenate(states)) if states else None
            while len(self.run_state_models) > RUN_STATE_MODELS_KEPT:
                self.run_state_models.popitem(last=False)
        return self.run_state_models[run_id]

    def _fit_estimators(self, states: np.ndarray) -> list[ShrunkMahalanobis | NearestNeighbourDistance]:
        """One estimator per channel of states [N, C, L, H], or one for all channels' states side by side
        (`density_scope: joint`)."""
        if self.config.density_scope == "joint":
            return [self._state_estimator().fit(joint_states(states).reshape(-1, states.shape[1] * states.shape[-1]))]
        hidden = states.shape[-1]
        return [
            self._state_estimator().fit(states[:, channel].reshape(-1, hidden)) for channel in range(states.shape[1])
        ]

    def _density(self, states: np.ndarray, runs: np.ndarray | None) -> np.ndarray:
        """Point density scores [N, L] of hidden states [N, C, L, H] of segments from runs [N] (or None): against
        their own run's normal states where there are estimators of them, else the training split's."""
        if runs is None or self.config.normal_reference != "run":
            return self._density_against(self.state_models, states)
        scores = np.full((states.shape[0], states.shape[2]), np.nan)
        own = np.zeros(len(states), dtype=bool)
        for run_id in np.unique(runs[runs >= 0]):
            models = self._run_states(int(run_id))
            if models is not None:
                mine = runs == run_id
                scores[mine] = self._density_against(models, states[mine])
                own |= mine
        if not own.all():
            scores[~own] = self._density_against(self.state_models, states[~own])
        return scores

    def _density_against(
        self, models: list[ShrunkMahalanobis | NearestNeighbourDistance], states: np.ndarray
    ) -> np.ndarray:
        if self.config.density_scope == "joint":
            return models[0].score(joint_states(states))
        per_channel = np.stack([model.score(states[:, channel]) for channel, model in enumerate(models)], axis=1)
        return combine_channels(per_channel, self.config.channel_aggregate)

    def _components(
        self,
        z: np.ndarray | None,
        states: np.ndarray | None,
        reconstruction: np.ndarray | None,
        runs: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        config = self.config
        values = {}
        if config.forecast_weight > 0:
            assert z is not None
            values["forecast"] = combine_channels(self._forecast_deviation(z), config.channel_aggregate)
        if config.cross_channel_weight > 0:
            assert z is not None
            values["cross_channel"] = self.cross_channel.score(z.transpose(0, 2, 1))  # [N, L]
        if config.density_weight > 0:
            assert states is not None
            values["density"] = self._density(states, runs)
            values["density"][:, 0] = np.nan  # position 0 has no forecast; keep every component alike
        if config.reconstruction_weight > 0:
            assert reconstruction is not None
            normalized = self.reconstruction_statistics.normalize(reconstruction)
            values["reconstruction"] = combine_channels(normalized, config.channel_aggregate)
            values["reconstruction"][:, 0] = np.nan  # alike the others, although position 0 was reconstructed
        return values

    def _forecast_deviation(self, z: np.ndarray) -> np.ndarray:
        """Per-channel forecast deviations [N, C, L] of error z-scores [N, C, L]: z itself (upper), or how far
        the mean z over the smoothing window lies from normal, either way (both)."""
        if self.config.error_direction == "upper":
            return z
        # The window's mean, not each point's |z|: a squared error's distribution is skewed, so single points
        # far below the mean are common in normal operation, while a whole window of them is what a signal
        # turning flatter or more regular gives.
        length = z.shape[-1]
        return np.abs(smooth_points(z.reshape(-1, length), self.config.smoothing_window).reshape(z.shape))

    def standardized_components(self, split: SegmentSplit) -> dict[str, np.ndarray]:
        """Every component this detector computes, standardised by its reference mean and std: [N, L] each."""
        parts: dict[str, list[np.ndarray]] = {}
        for batch in _batches(
            self.model, split, self.normalization, self.config, len(split), self.progress, self.views
        ):
            z = self._normalized_errors(batch.errors)
            states = batch.states if self.config.density_weight > 0 else None
            for name, values in self._components(z, states, batch.reconstruction, batch.runs).items():
                parts.setdefault(name, []).append((values - self.location[name]) / self.scale[name])
        return {name: np.concatenate(values) for name, values in parts.items()}

    def combine(self, components: dict[str, np.ndarray], config: EvaluationConfig | None = None) -> np.ndarray:
        """Point scores [N, L]: the standardised components weighted by `config` (this detector's own by default;
        another may only weigh components this one computes), summed and smoothed."""
        config = config or self.config
        weights = config.weights()
        missing = sorted(name for name, weight in weights.items() if weight > 0 and name not in components)
        if missing:
            raise ValueError(f"the detector computed no {', '.join(missing)} component to weigh")
        if _window_shapes_components(config) and config.smoothing_window != self.config.smoothing_window:
            raise ValueError(
                f"the detector computed its forecast component over a smoothing window of "
                f"{self.config.smoothing_window} points, not {config.smoothing_window}"
            )
        total = sum(weights[name] * values for name, values in components.items() if weights[name] > 0)
        return smooth_points(np.asarray(total, dtype=np.float32), config.smoothing_window)

    def score(self, split: SegmentSplit) -> np.ndarray:
        """Point scores [N, L] of every segment of a split."""
        return self.combine(self.standardized_components(split))


def _shared_settings(config: EvaluationConfig) -> str:
    """What decides a detector's components, apart from their weights and the smoothing window: detectors alike
    in it can share one pass of the model."""
    return config.model_dump_json(exclude={*WEIGHT_FIELDS, "alternatives", "smoothing_window"})


def _window_shapes_components(config: EvaluationConfig) -> bool:
    """Whether a detector's components (not only its final sum) depend on its smoothing window: the forecast
    deviation in both directions is a window's mean z. Every other component is smoothed only once summed."""
    return config.forecast_weight > 0 and config.error_direction == "both"


def candidate_point_scores(
    model: TimeMoE,
    dataset: SegmentDataset,
    split: SegmentSplit,
    candidates: list[EvaluationConfig],
    progress: Progress = None,
    views: SeriesViews | None = None,
) -> list[np.ndarray]:
    """Point scores [N, L] of each candidate detector on a split. Candidates that differ only in their weights
    share one pass of the model and one fit of every component (a density's neighbours are most of the cost), and
    so do those that differ in their smoothing window too wherever the window only smooths the sum."""
    groups: dict[tuple[str, int | None], list[int]] = {}
    for index, candidate in enumerate(candidates):
        window = candidate.smoothing_window if _window_shapes_components(candidate) else None
        groups.setdefault((_shared_settings(candidate), window), []).append(index)
    # A candidate whose window only smooths the sum joins a group that computes its components anyway.
    for settings, window in [key for key in groups if key[1] is None]:
        host = next((key for key in groups if key[0] == settings and key[1] is not None), None)
        if host is not None:
            groups[host] += groups.pop((settings, window))
    scores: list[np.ndarray | None] = [None] * len(candidates)
    for members in groups.values():
        # One detector computing every component any member weighs, with the window its forecast component
        # needs (the first member's: any member whose components depend on it shares it).
        union = {field: max(getattr(candidates[index], field) for index in members) for field in WEIGHT_FIELDS}
        detector = ModelDetector(model, dataset, candidates[members[0]].model_copy(update=union), progress, views)
        components = detector.standardized_components(split)
        for index in members:
            scores[index] = detector.combine(components, candidates[index])
    return [score for score in scores if score is not None]
