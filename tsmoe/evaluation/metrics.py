"""Detection metrics from scikit-learn: AUROC (the headline), AUPRC and the best F1 over thresholds.

Scores are compared within a group (a run, or the whole split when it records no runs) and the groups'
metrics are averaged: runs recorded at different offsets or gains put their scores on different scales,
and one threshold over all of them would measure the scale, not the detector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


@dataclass(frozen=True)
class DetectionMetrics:
    """Metrics of one group of scores against its labels."""

    auroc: float
    auprc: float
    best_f1: float


@dataclass(frozen=True)
class AveragedMetrics:
    """Mean metrics over the groups that hold both classes, and how many groups were (not) scored."""

    auroc: float
    auprc: float
    best_f1: float
    groups_scored: int
    groups_skipped: int  # groups with one class only, where AUROC is undefined


def detection_metrics(scores: np.ndarray, labels: np.ndarray) -> DetectionMetrics:
    """AUROC, AUPRC and best F1 of scores against 0/1 labels; NaN scores (undefined points) are left out."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores have {scores.size} values but labels {labels.size}")
    defined = ~np.isnan(scores)
    scores, labels = scores[defined], labels[defined]
    if np.isinf(scores).any():
        raise ValueError("scores hold inf values; a detector must produce finite scores")
    if np.unique(labels).size < 2:
        raise ValueError("labels hold one class only; AUROC needs normal and anomalous points")
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return DetectionMetrics(
        auroc=float(roc_auc_score(labels, scores)),
        auprc=float(average_precision_score(labels, scores)),
        best_f1=float(f1.max()),
    )


def has_both_classes(labels: np.ndarray, scores: np.ndarray) -> bool:
    """Whether the points with a defined score hold both normal and anomalous labels."""
    defined = np.asarray(labels).ravel()[~np.isnan(np.asarray(scores, dtype=np.float64).ravel())]
    return np.unique(defined).size == 2


def average_over_groups(groups: Iterable[tuple[np.ndarray, np.ndarray]]) -> AveragedMetrics:
    """Mean metrics over (scores, labels) groups; groups with one class only are counted and skipped."""
    scored: list[DetectionMetrics] = []
    skipped = 0
    for scores, labels in groups:
        if has_both_classes(labels, scores):
            scored.append(detection_metrics(scores, labels))
        else:
            skipped += 1
    if not scored:
        return AveragedMetrics(math.nan, math.nan, math.nan, 0, skipped)
    return AveragedMetrics(
        auroc=float(np.mean([metrics.auroc for metrics in scored])),
        auprc=float(np.mean([metrics.auprc for metrics in scored])),
        best_f1=float(np.mean([metrics.best_f1 for metrics in scored])),
        groups_scored=len(scored),
        groups_skipped=skipped,
    )
