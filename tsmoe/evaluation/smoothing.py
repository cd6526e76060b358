"""Smoothing point scores over a window: a sustained fault outscores a single noisy point.

The window is centred on each point (scoring is offline, so a centred window does not delay a fault's
onset as a trailing one would) and undefined (NaN) points are left out of each mean. Windows stop at a
segment's ends: points near an end are averaged over the part of the window inside the segment.
"""

from __future__ import annotations

import numpy as np


def smooth_points(scores: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean of point scores [N, L] over `window` points; window 1 returns them unchanged."""
    if window <= 1:
        return scores
    defined = ~np.isnan(scores)
    values = np.where(defined, scores, 0.0).astype(np.float64)
    before = (window - 1) // 2
    after = window - 1 - before
    padded_values = np.pad(values, ((0, 0), (before + 1, after)))
    padded_counts = np.pad(defined.astype(np.float64), ((0, 0), (before + 1, after)))
    sums = np.cumsum(padded_values, axis=1)
    counts = np.cumsum(padded_counts, axis=1)
    window_sums = sums[:, window:] - sums[:, :-window]
    window_counts = counts[:, window:] - counts[:, :-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = np.where(window_counts > 0, window_sums / window_counts, np.nan)
    return smoothed.astype(scores.dtype)
