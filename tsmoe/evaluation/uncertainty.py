"""How far a validation AUROC can be trusted: bootstrap resamples of the headline AUROC, shared by candidates.

A validation split is small (14 files, 10 runs, 32 segments), and choosing the highest of several AUROCs on
it picks noise as often as a better detector. The resamples give the standard error that model selection
(`choose_detector`, and the epoch a run keeps) weighs a difference against.

What is resampled is what the headline AUROC treats as independent: the files where each file is one sample,
the segments where the split's points are pooled (points within a segment are not independent), and, where
AUROC is averaged over runs, the runs and within each drawn run its stretches of one segment's length (a
two-stage bootstrap). Resampling the runs alone would say that two validation runs which score alike leave no
doubt, when each holds a handful of anomalies. Units are drawn stratified, anomalous units apart from normal
ones, so every resample holds both classes. Every candidate is measured on the same resamples, so the
difference of two candidates has its own, paired, standard error.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from tsmoe.data.store import SegmentSplit
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.grouping import aggregate_segments, point_groups, run_scores, segment_groups

RESAMPLES = 200
# Points per pooled resample: neighbouring points of a segment carry nearly the same (smoothed) score, so a
# regular subsample keeps the AUROC's spread, and the resamples of a long split cost a fraction of a second.
MAX_POOLED_POINTS = 4_096


def headline_resamples(
    point_scores: list[np.ndarray], split: SegmentSplit, config: EvaluationConfig, level: str
) -> np.ndarray:
    """Each candidate's headline AUROC (at `level`: point, run or segment, as `DetectionResult.headline`) on
    the same bootstrap resamples of the split: [K, RESAMPLES] for K candidates' point scores [N, L]. NaN rows for a
    split with fewer than two independent units of each class (or of runs to average over)."""
    rng = np.random.default_rng(config.seed)
    runs = split.runs
    labels = np.asarray(split.labels)
    if level == "run":
        assert runs is not None, "run-level AUROC needs the split's run ids"
        per_run = [run_scores(scores, split.segment_labels(), runs, split.starts, config) for scores in point_scores]
        run_labels = per_run[0][1]
        return _pooled([scores[:, None] for scores, _ in per_run], run_labels[:, None], rng)
    grouped = runs is not None and np.unique(runs).size > 1
    if level == "point":
        if grouped:
            # Each run's points in order, cut into stretches of one segment's length.
            groups = [list(point_groups(scores, labels, runs, split.starts)) for scores in point_scores]
            return _two_stage(groups, point_scores[0].shape[1], rng)
        # Pooled points: each segment is a unit.
        return _pooled(point_scores, labels, rng)
    segment_scores = [
        aggregate_segments(scores, config.segment_aggregate, config.segment_quantile) for scores in point_scores
    ]
    segment_labels = np.asarray(split.segment_labels())
    if grouped:
        return _two_stage([list(segment_groups(scores, segment_labels, runs)) for scores in segment_scores], 1, rng)
    return _pooled([scores[:, None] for scores in segment_scores], segment_labels[:, None], rng)


def _two_stage(groups: list[list[tuple[np.ndarray, np.ndarray]]], stretch: int, rng: np.random.Generator) -> np.ndarray:
    """Mean AUROC over resampled groups, each drawn group's AUROC itself taken over its resampled stretches of
    `stretch` values, per candidate, for groups [K][G] of (scores, labels) in order. Only groups whose labels hold
    both classes count, as in `average_over_groups`; a class with one stretch in a group is kept as it is."""
    scored = [index for index, (_, labels) in enumerate(groups[0]) if np.unique(labels).size == 2]
    if not scored:
        return np.full((len(groups), RESAMPLES), np.nan)
    within = np.stack(  # [K, G, RESAMPLES]: every candidate's AUROC of each group on the same stretches
        [
            _pooled(
                [_stretches(candidate[index][0], stretch, np.nan) for candidate in groups],
                _stretches(groups[0][index][1], stretch, 0),
                rng,
                min_units=1,
            )
            for index in scored
        ],
        axis=1,
    )
    # Each draw of a group takes its own resample of that group's stretches, so a group drawn twice is not
    # counted twice with the same stretches.
    picks = rng.integers(0, len(scored), size=(RESAMPLES, len(scored)))
    columns = rng.integers(0, RESAMPLES, size=(RESAMPLES, len(scored)))
    return within[:, picks, columns].mean(axis=2)


def _stretches(values: np.ndarray, stretch: int, fill: float) -> np.ndarray:
    """Consecutive pieces of `stretch` values [U, stretch], the last padded with `fill` (NaN scores are left out of
    AUROCs, and padded labels are then never counted)."""
    count = math.ceil(len(values) / stretch)
    padded = np.full(count * stretch, fill, dtype=np.float64)
    padded[: len(values)] = values
    return padded.reshape(count, stretch)


def _pooled(units: list[np.ndarray], labels: np.ndarray, rng: np.random.Generator, min_units: int = 2) -> np.ndarray:
    """AUROC over the points of resampled units, per candidate: each candidate's scores [U, m] of U units of m
    points, labels [U, m] alike, each resample drawing as many anomalous units (any point anomalous) and normal
    units as the split has. NaN rows where either class has fewer than `min_units` units."""
    unit_labels = np.asarray(labels)
    anomalous = unit_labels.any(axis=1)
    strata = [np.flatnonzero(anomalous), np.flatnonzero(~anomalous)]
    if min(len(stratum) for stratum in strata) < min_units:
        return np.full((len(units), RESAMPLES), np.nan)
    stride = max(1, math.ceil(unit_labels.size / MAX_POOLED_POINTS))
    chosen = np.concatenate([rng.choice(stratum, size=(RESAMPLES, len(stratum))) for stratum in strata], axis=1)
    drawn_labels = unit_labels[:, ::stride][chosen].reshape(RESAMPLES, -1).astype(bool)  # [B, n]
    resamples = np.empty((len(units), RESAMPLES))
    for candidate, candidate_units in enumerate(units):
        scores = np.asarray(candidate_units, dtype=np.float64)[:, ::stride]
        resamples[candidate] = aurocs_by_row(scores[chosen].reshape(RESAMPLES, -1), drawn_labels)
    return resamples


def aurocs_by_row(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores [B, n] against labels [B, n], NaN scores left out, by the Mann-Whitney identity
    (ties ranked by their average): sklearn's `roc_auc_score` row by row costs milliseconds each, and a validation
    draws hundreds of rows per candidate."""
    ranks = rankdata(scores, axis=1, nan_policy="omit")
    defined = ~np.isnan(scores)
    positives = (labels & defined).sum(axis=1)
    negatives = (~labels & defined).sum(axis=1)
    rank_sum = np.where(labels & defined, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aurocs = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), aurocs, np.nan)


def standard_error(resamples: np.ndarray) -> float:
    """The standard error a row of resamples gives (NaN where they are undefined)."""
    finite = resamples[np.isfinite(resamples)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
