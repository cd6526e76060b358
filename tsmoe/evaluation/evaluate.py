"""Score a split with the model and with the baselines, and measure each at point and segment level.

Metrics are averaged per run when the split records runs (runs of different offset or scale are not
comparable), and computed over the whole split otherwise. Every detector is scored on the same split,
with the same grouping, aggregation and metrics, so the model's figures stand beside the baselines'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tsmoe.data.loader import normalized_segments
from tsmoe.data.store import SegmentDataset, SegmentSplit
from tsmoe.data.views import SeriesViews
from tsmoe.evaluation.baselines import Baseline, build_baselines
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.detector import ModelDetector, candidate_point_scores
from tsmoe.evaluation.grouping import (
    aggregate_segments,
    index_blocks,
    point_groups,
    run_blocks,
    run_scores,
    segment_groups,
)
from tsmoe.evaluation.metrics import AveragedMetrics, average_over_groups, detection_metrics
from tsmoe.evaluation.uncertainty import headline_resamples, standard_error
from tsmoe.model.timemoe import TimeMoE

MODEL_NAME = "time-moe"
CHUNK_SEGMENTS = 64


@dataclass
class DetectionResult:
    """One detector's metrics on one split, at each level its labels allow."""

    detector: str
    segment: AveragedMetrics
    point: AveragedMetrics | None = None  # only where the split has point labels
    run: AveragedMetrics | None = None  # only where segment labels come in runs (files labelled as a whole)

    def rows(self) -> list[dict]:
        """Table rows, one per level."""
        levels = [("segment", self.segment), ("point", self.point), ("run", self.run)]
        return [
            {"detector": self.detector, "level": level, **asdict(metrics)}
            for level, metrics in levels
            if metrics is not None
        ]

    @property
    def headline(self) -> tuple[str, AveragedMetrics]:
        """The level a split is judged at: points where labelled so, else runs (files), else segments."""
        if self.point is not None:
            return "point", self.point
        if self.run is not None:
            return "run", self.run
        return "segment", self.segment


def run_level_metrics(point_scores: np.ndarray, split: SegmentSplit, config: EvaluationConfig) -> AveragedMetrics:
    """AUROC over runs: each run one sample, scored by aggregating its points, anomalous if any segment is."""
    runs = split.runs
    assert runs is not None, "run-level metrics need the split's run ids"
    scores, labels = run_scores(point_scores, split.segment_labels(), runs, split.starts, config)
    if np.unique(labels).size < 2:
        return AveragedMetrics(math.nan, math.nan, math.nan, 0, 1)
    metrics = detection_metrics(scores, labels)
    return AveragedMetrics(metrics.auroc, metrics.auprc, metrics.best_f1, 1, 0)


def measure(detector: str, point_scores: np.ndarray, split: SegmentSplit, config: EvaluationConfig) -> DetectionResult:
    """Metrics of point scores [N, L] against the split's labels."""
    segment_scores = aggregate_segments(point_scores, config.segment_aggregate, config.segment_quantile)
    runs = split.runs
    result = DetectionResult(
        detector, average_over_groups(segment_groups(segment_scores, split.segment_labels(), runs))
    )
    if split.label_level == "point":
        groups = point_groups(point_scores, np.asarray(split.labels), runs, split.starts)
        result.point = average_over_groups(groups)
    elif runs is not None and np.unique(runs).size > 1:
        result.run = run_level_metrics(point_scores, split, config)
    return result


def model_point_scores(
    model: TimeMoE,
    dataset: SegmentDataset,
    split: SegmentSplit,
    config: EvaluationConfig,
    progress: Callable[[str, int, int], None] | None = None,
    views: SeriesViews | None = None,
) -> np.ndarray:
    """The model's point scores [N, L] under the config's scoring rule (see `detector.py`), seeing the
    series `views` makes of each segment (those it trained on; the time series alone when None)."""
    return ModelDetector(model, dataset, config, progress, views).score(split)


def baseline_point_scores(
    dataset: SegmentDataset, split: SegmentSplit, config: EvaluationConfig
) -> dict[str, np.ndarray]:
    """Every configured baseline's point scores [N, L], fitted on the normalised training split; with
    `normal_reference: run`, a run's segments are scored by baselines fitted on that run's own normal training
    segments where it has any, as the model's density is."""
    own = _own_normal_segments(dataset, split, config)
    # Segments of a run with its own normal segments are scored by that run's baselines only.
    shared = np.ones(len(split), dtype=bool)
    if own:
        shared[np.isin(np.asarray(split.runs), list(own))] = False
    scores: dict[str, np.ndarray] = {
        name: np.full((len(split), dataset.meta.segment_length), np.nan) for name in config.baselines
    }

    def score_blocks(baseline: Baseline, blocks: list[tuple[int, int]]) -> None:
        for start, stop in blocks:
            for chunk in range(start, stop, CHUNK_SEGMENTS):
                end = min(chunk + CHUNK_SEGMENTS, stop)
                scores[baseline.name][chunk:end] = baseline.score(
                    normalized_segments(split, dataset.normalization, chunk, end)
                )

    if shared.any():
        train = dataset.split("train")
        train_segments = normalized_segments(
            train, dataset.normalization, 0, min(len(train), config.statistics_segments)
        )
        for baseline in build_baselines(config):
            baseline.fit(train_segments)
            score_blocks(baseline, index_blocks(np.flatnonzero(shared)))
    for run_id, segments in own.items():
        for baseline in build_baselines(config):
            baseline.fit(segments)
            score_blocks(baseline, run_blocks(np.asarray(split.runs), run_id))
    return scores


def _own_normal_segments(
    dataset: SegmentDataset, split: SegmentSplit, config: EvaluationConfig
) -> dict[int, np.ndarray]:
    """Per run of `split` (by id): the normalised training segments cut from its own normal rows, with
    `normal_reference: run`; empty otherwise, or where neither split has run ids."""
    train = dataset.split("train")
    if config.normal_reference != "run" or train.runs is None or split.runs is None:
        return {}
    own = {}
    for run_id in np.intersect1d(np.unique(train.runs), np.unique(split.runs)):
        blocks = run_blocks(np.asarray(train.runs), int(run_id), config.statistics_segments)
        own[int(run_id)] = np.concatenate(
            [normalized_segments(train, dataset.normalization, start, stop) for start, stop in blocks]
        )
    return own


def score_detectors(
    dataset: SegmentDataset,
    split_name: str,
    config: EvaluationConfig,
    model: TimeMoE | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    views: SeriesViews | None = None,
) -> dict[str, np.ndarray]:
    """Point scores [N, L] of the model (if given, seeing `views`) and of each configured baseline (on the
    time series alone) on one split, by name."""
    split = dataset.split(split_name)
    scores = {}
    if model is not None:
        scores[MODEL_NAME] = model_point_scores(model, dataset, split, config, progress, views)
    scores.update(baseline_point_scores(dataset, split, config))
    return scores


def evaluate_detectors(
    dataset: SegmentDataset,
    split_name: str,
    config: EvaluationConfig,
    model: TimeMoE | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    views: SeriesViews | None = None,
) -> pd.DataFrame:
    """A table of AUROC, AUPRC and best F1 for the model (if given) and each baseline on one split."""
    split = dataset.split(split_name)
    scores = score_detectors(dataset, split_name, config, model, progress, views)
    results = [measure(name, point_scores, split, config) for name, point_scores in scores.items()]
    return pd.DataFrame([row for result in results for row in result.rows()])


def rows_with_figures(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a table of `DetectionResult.rows()` that have figures, and the levels left out: a level none of
    whose groups holds both classes has none (the segments of files labelled as a whole are one class per file)."""
    unscored = table.groups_scored == 0
    return table[~unscored], list(table.level[unscored].unique())


@dataclass
class DetectorChoice:
    """The detector validation chose among a config's candidates, with every candidate's result on that split and
    the standard error of its headline AUROC (NaN where the split is too small to resample)."""

    index: int  # 0: the evaluation section as written; i: its alternative i - 1
    config: EvaluationConfig
    results: list[DetectionResult]
    standard_errors: list[float]

    @property
    def result(self) -> DetectionResult:
        """The chosen detector's result."""
        return self.results[self.index]

    @property
    def standard_error(self) -> float:
        """The standard error of the chosen detector's headline AUROC."""
        return self.standard_errors[self.index]


def choose_detector(
    model: TimeMoE,
    dataset: SegmentDataset,
    config: EvaluationConfig,
    split_name: str = "val",
    views: SeriesViews | None = None,
) -> DetectorChoice:
    """Score the split with each of `config.candidates()` and keep the first listed (the section as written, then
    its alternatives in order) whose headline AUROC is within one standard error of the highest, the paired
    standard error of their difference (`uncertainty.py`): an alternative replaces the section only where
    validation can tell them apart. A candidate without a finite AUROC is never chosen over one with."""
    split = dataset.split(split_name)
    candidates = config.candidates()
    scores = candidate_point_scores(model, dataset, split, candidates, views=views)
    results = [
        measure(MODEL_NAME, point_scores, split, candidate)
        for point_scores, candidate in zip(scores, candidates, strict=True)
    ]
    aurocs = [result.headline[1].auroc for result in results]
    resamples = headline_resamples(scores, split, config, results[0].headline[0])
    best = max(
        range(len(results)),
        key=lambda i: (math.isfinite(aurocs[i]), aurocs[i] if math.isfinite(aurocs[i]) else 0.0, -i),
    )
    index = best
    if math.isfinite(aurocs[best]):
        index = next(
            i
            for i in range(len(results))
            if math.isfinite(aurocs[i])
            and aurocs[best] - aurocs[i] <= _zero_if_nan(standard_error(resamples[best] - resamples[i]))
        )
    return DetectorChoice(index, candidates[index], results, [standard_error(row) for row in resamples])


def _zero_if_nan(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def validation_metrics(
    model: TimeMoE,
    dataset: SegmentDataset,
    config: EvaluationConfig,
    split_name: str = "val",
    views: SeriesViews | None = None,
) -> dict[str, float]:
    """The model's figures on a split for a training run's metrics: val_auroc (the headline), val_auprc,
    val_best_f1 at point level where the split has point labels, else at run level where its segments come
    in labelled runs (files), else at segment level, plus each level's AUROC, and val_auroc_se, the headline AUROC's
    standard error (which the epoch a run keeps is chosen with). With alternatives, the figures
    are the chosen detector's, `val_detector` says which (0: the section as written), and
    `val_auroc_detector_I` gives every candidate's headline AUROC."""
    choice = choose_detector(model, dataset, config, split_name, views)
    result = choice.result
    metrics = {f"{split_name}_segment_auroc": result.segment.auroc}
    if result.point is not None:
        metrics[f"{split_name}_point_auroc"] = result.point.auroc
    if result.run is not None:
        metrics[f"{split_name}_run_auroc"] = result.run.auroc
    headline = result.headline[1]
    metrics.update(
        {
            f"{split_name}_auroc": headline.auroc,
            f"{split_name}_auprc": headline.auprc,
            f"{split_name}_best_f1": headline.best_f1,
        }
    )
    metrics[f"{split_name}_auroc_se"] = choice.standard_error
    if len(choice.results) > 1:
        metrics[f"{split_name}_detector"] = float(choice.index)
        for index, candidate in enumerate(choice.results):
            metrics[f"{split_name}_auroc_detector_{index}"] = candidate.headline[1].auroc
    return metrics
