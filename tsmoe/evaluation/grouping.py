"""From per-segment scores to the groups metrics are computed over.

Segments cut from one run by overlapping windows cover most points several times. Point metrics must
count every point of a run once, so a run is reassembled: each point takes its score from the covering
window that starts earliest. That window saw the point with the most context behind it, and the choice
is fixed, so every detector is measured on the same points.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tsmoe.evaluation.config import EvaluationConfig


def aggregate_segments(point_scores: np.ndarray, method: str, quantile: float = 0.99) -> np.ndarray:
    """One score per segment [N] from point scores [N, L], ignoring undefined (NaN) points."""
    if method == "max":
        return np.nanmax(point_scores, axis=1)
    if method == "mean":
        return np.nanmean(point_scores, axis=1)
    if method == "quantile":
        return np.nanquantile(point_scores, quantile, axis=1)
    raise ValueError(f"segment aggregate must be max, mean or quantile, got {method!r}")


def _run_ids(runs: np.ndarray | None, count: int) -> np.ndarray:
    return np.zeros(count, dtype=np.int64) if runs is None else np.asarray(runs, dtype=np.int64)


def segment_groups(
    segment_scores: np.ndarray, segment_labels: np.ndarray, runs: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scores, labels) per run, or one group for the whole split when it records no runs."""
    run_ids = _run_ids(runs, len(segment_scores))
    for run in np.unique(run_ids):
        members = run_ids == run
        yield segment_scores[members], np.asarray(segment_labels)[members]


def reassemble_run(
    point_scores: np.ndarray, point_labels: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A run's points once each, [T] scores and labels, from its windows [n, L] starting at `starts` [n]."""
    length = point_scores.shape[1]
    total = int(starts.max()) + length
    scores = np.full(total, np.nan, dtype=np.float64)
    labels = np.zeros(total, dtype=np.int8)
    covered = np.zeros(total, dtype=bool)
    # Latest start first, so the earliest window covering a point writes last and wins.
    for index in np.argsort(starts, kind="stable")[::-1]:
        start = int(starts[index])
        scores[start : start + length] = point_scores[index]
        labels[start : start + length] = point_labels[index]
        covered[start : start + length] = True
    return scores[covered], labels[covered]


def point_groups(
    point_scores: np.ndarray, point_labels: np.ndarray, runs: np.ndarray | None, starts: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scores, labels) of every point per run; overlapping windows are reassembled when starts are known."""
    run_ids = _run_ids(runs, len(point_scores))
    for run in np.unique(run_ids):
        members = run_ids == run
        if starts is None:
            yield point_scores[members].ravel(), np.asarray(point_labels)[members].ravel()
        else:
            yield reassemble_run(point_scores[members], np.asarray(point_labels)[members], np.asarray(starts)[members])


def run_scores(
    point_scores: np.ndarray,
    segment_labels: np.ndarray,
    runs: np.ndarray,
    starts: np.ndarray | None,
    config: EvaluationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """One score and one label per run: its points (each once) aggregated as a segment's are; anomalous
    when any of its segments is. For files labelled as a whole, where each file is one sample."""
    scores, labels = [], []
    for run in np.unique(runs):
        members = runs == run
        run_points = point_scores[members]
        if starts is not None:
            point_labels = np.zeros(run_points.shape, dtype=np.int8)
            run_points, _ = reassemble_run(run_points, point_labels, np.asarray(starts)[members])
        aggregate = aggregate_segments(run_points.reshape(1, -1), config.segment_aggregate, config.segment_quantile)
        scores.append(float(aggregate[0]))
        labels.append(int(np.asarray(segment_labels)[members].max()))
    return np.asarray(scores), np.asarray(labels, dtype=np.int8)


def index_blocks(indices: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) ranges of consecutive values in sorted segment indices: what they are read in."""
    indices = np.asarray(indices)
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return [(int(block[0]), int(block[-1]) + 1) for block in np.split(indices, breaks)]


def run_blocks(runs: np.ndarray, run_id: int, limit: int | None = None) -> list[tuple[int, int]]:
    """The ranges of consecutive segments whose run id is `run_id` (the first `limit` of them)."""
    return index_blocks(np.flatnonzero(np.asarray(runs) == run_id)[:limit])
