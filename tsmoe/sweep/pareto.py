"""Constraints, the Pareto front and its knee over a sweep's trials table (both objectives maximised).

The table holds one row per trial, as the sweep runner builds it: its `status`, its `param.*` values
and the metrics of its last epoch. Only completed, feasible trials with both objectives finite may enter
the front: a trial stopped early reports the figures of a half-trained model, and its throughput comes
from fewer epochs, so neither figure is comparable with those of trials that ran to the end.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

QUALITY = "best_val_auroc"
MEMORY = "peak_memory_mib"
PARAM_PREFIX = "param."  # the table's columns of sampled values: param.<dotted config field>
# The trial table's own columns, and the statuses a trial can have in it.
TRIAL_ID, STATUS, STOP_REASON, OUTPUT = "trial_id", "status", "stop_reason", "output"
FEASIBLE, INFEASIBLE_REASON = "feasible", "infeasible_reason"
COMPLETED, STOPPED, ERROR, RUNNING, PENDING = "completed", "stopped", "error", "running", "pending"


def format_figure(value: float) -> str:
    """A metric as messages print it: six significant digits, whole numbers from a million up."""
    value = float(value)
    if math.isfinite(value) and abs(value) >= 1e6:
        return f"{value:.0f}"
    return f"{value:.6g}"


def objective_values(table: pd.DataFrame, column: str) -> np.ndarray:
    """A column as floats, NaN where missing or not a number; a KeyError names the columns there are."""
    if column not in table.columns:
        present = ", ".join(map(str, table.columns))
        raise KeyError(f"the trials table has no column {column!r}; it has {present}")
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)


def mark_feasibility(
    table: pd.DataFrame, min_throughput: float | None, throughput: str, max_memory_mib: float | None
) -> pd.DataFrame:
    """Copy of the table with `feasible` and `infeasible_reason` set.

    A trial is infeasible below the throughput floor, above the memory ceiling (`peak_memory_mib`), or
    when the constrained figure is missing; the reason reads e.g. 'samples_s 12.3 < floor 20', several
    joined by '; '. A bound of None is no constraint.
    """
    marked = table.copy()
    reasons: list[list[str]] = [[] for _ in range(len(marked))]
    if min_throughput is not None:
        for position, value in enumerate(_values_or_missing(marked, throughput)):
            # A trial that never reported the constrained figure cannot be shown to meet it.
            if not math.isfinite(value):
                reasons[position].append(f"{throughput} missing")
            elif value < min_throughput:
                reasons[position].append(f"{throughput} {format_figure(value)} < floor {format_figure(min_throughput)}")
    if max_memory_mib is not None:
        for position, value in enumerate(_values_or_missing(marked, MEMORY)):
            if not math.isfinite(value):
                reasons[position].append(f"{MEMORY} missing")
            elif value > max_memory_mib:
                reasons[position].append(f"{MEMORY} {format_figure(value)} > ceiling {format_figure(max_memory_mib)}")
    marked[FEASIBLE] = [not found for found in reasons]
    marked[INFEASIBLE_REASON] = ["; ".join(found) for found in reasons]
    return marked


def _values_or_missing(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return objective_values(table, column)


def is_feasible(table: pd.DataFrame) -> np.ndarray:
    """The `feasible` column as booleans; a table never marked has no constraints, so every row is."""
    if FEASIBLE not in table.columns:
        return np.ones(len(table), dtype=bool)
    return table[FEASIBLE].eq(True).to_numpy(dtype=bool)


def eligible(table: pd.DataFrame, quality: str = QUALITY, throughput: str = "samples_s") -> pd.DataFrame:
    """Rows that may enter the front: status completed, feasible, both objectives finite.

    Stopped-early trials never do: their figures are half-trained.
    """
    completed = table[STATUS].eq(COMPLETED).to_numpy(dtype=bool)
    finite = np.isfinite(objective_values(table, quality)) & np.isfinite(objective_values(table, throughput))
    return table[completed & is_feasible(table) & finite]


def pareto_front(table: pd.DataFrame, quality: str = QUALITY, throughput: str = "samples_s") -> pd.DataFrame:
    """Non-dominated eligible rows (maximise both), sorted by throughput; ties (identical points) both kept.

    Rows keep the table's index, so a caller can find them in the table; equal throughputs on the
    front are identical points, ordered by trial_id.
    """
    candidates = eligible(table, quality, throughput)
    quality_values = objective_values(candidates, quality)
    throughput_values = objective_values(candidates, throughput)
    # dominates[i, j]: row i is at least as good as row j in both objectives and better in one.
    at_least = (quality_values[:, None] >= quality_values[None, :]) & (
        throughput_values[:, None] >= throughput_values[None, :]
    )
    better = (quality_values[:, None] > quality_values[None, :]) | (
        throughput_values[:, None] > throughput_values[None, :]
    )
    dominated = (at_least & better).any(axis=0)
    front = candidates[~dominated]
    order = np.lexsort((front[TRIAL_ID].astype(str).to_numpy(), objective_values(front, throughput)))
    return front.iloc[order]


def knee(front: pd.DataFrame, quality: str = QUALITY, throughput: str = "samples_s") -> pd.Series:
    """The front's knee: each objective scaled to [0, 1] over the front; the point nearest the ideal (1, 1).

    Scaling maps the front's worst value of an objective to 0 and its best to 1, so neither unit
    (AUROC near 1, throughput in the hundreds) outweighs the other; an objective that does not vary
    over the front scales to 1 everywhere. The nearest point by Euclidean distance wins; equal
    distances (a two-point front, identical points) go to the higher quality, then the smaller trial_id.
    """
    if front.empty:
        raise ValueError("the Pareto front is empty: no completed feasible trial with both objectives finite")
    distance_squared = np.zeros(len(front))
    for column in (quality, throughput):
        values = objective_values(front, column)
        spread = values.max() - values.min()
        scaled = (values - values.min()) / spread if spread > 0 else np.ones_like(values)
        distance_squared += (1.0 - scaled) ** 2
    # Round so that distances equal but for floating-point noise count as ties.
    distance = np.round(np.sqrt(distance_squared), 12)
    order = np.lexsort(
        (
            front[TRIAL_ID].astype(str).to_numpy(),
            -objective_values(front, quality),
            distance,
        )
    )
    return front.iloc[order[0]]


def parameter_columns(table: pd.DataFrame) -> list[str]:
    """The table's `param.*` columns, in table order."""
    return [column for column in table.columns if str(column).startswith(PARAM_PREFIX)]
