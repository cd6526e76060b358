"""Failures that teach the sampler: trials that ran out of memory or diverged.

A trial told to Optuna as FAIL is ignored by TPE and NSGA-II, so a sampler that drew a batch too large for
the card, or a learning rate that blows up, is free to draw the same region again. Such trials are told
as COMPLETE with the figures they reached (0 where they reached none) and a violated constraint named for
the failure (`out_of_memory` or `diverged`, 1 > 0): TPE puts infeasible trials in its bad group and
NSGA-II's constrained domination ranks them below every feasible trial, while Optuna's best trials (and
the sweep's own front, built from the results table) leave them out. Other errors stay FAIL: a bug says
nothing about the region it was drawn from.

A trial learns of its failure in its own process, where the worker's error text is, and writes it to
SWEEP/trials/TRIAL_ID/failure.jsonl; the searcher and the results table read it from there.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from tsmoe.sweep.object_storage import Location, join, read_text
from tsmoe.sweep.pareto import ERROR, STATUS, STOP_REASON, STOPPED, TRIAL_ID
from tsmoe.sweep.persisted import write_json_atomically

FAILURE_FILE = "failure.jsonl"
OUT_OF_MEMORY, DIVERGED, OTHER = "out_of_memory", "diverged", "error"
# What the worker's error says when memory ran out: torch on a GPU or a CPU allocator, Python itself, or
# Ray's memory monitor killing the worker.
_OUT_OF_MEMORY_PATTERNS = re.compile(
    r"OutOfMemoryError|out of memory|MemoryError|can't allocate memory|not enough memory|"
    r"running low on memory|Cannot allocate memory",
    re.IGNORECASE,
)
_DIVERGED_PATTERNS = re.compile(r"NonFiniteTrainingError|non-finite loss|loss is (nan|inf|-inf)", re.IGNORECASE)
DIVERGED_STOP_PREFIX = "loss is "  # how the non-finite rule in stopping.py words its stops


def classify_failure(text: str) -> str:
    """out_of_memory, diverged or error, from a trial's error text."""
    if _OUT_OF_MEMORY_PATTERNS.search(text):
        return OUT_OF_MEMORY
    if _DIVERGED_PATTERNS.search(text):
        return DIVERGED
    return OTHER


def record_failure(trial_directory: Path, error_text: str, reason: str) -> str:
    """Write the failure's kind and one-line reason into the trial's directory; returns the kind."""
    kind = classify_failure(error_text)
    write_json_atomically(Path(trial_directory) / FAILURE_FILE, {"kind": kind, "reason": reason})
    return kind


def read_failure(trial_directory: Location) -> dict[str, str] | None:
    """{kind, reason} of a trial that failed, or None; the trial's directory may be in object storage."""
    text = read_text(join(trial_directory, FAILURE_FILE))
    return json.loads(text) if text is not None else None


def diverged(result: dict) -> bool:
    """Whether a trial's last result shows a non-finite loss."""
    loss = result.get("loss")
    return isinstance(loss, (int, float)) and not math.isfinite(loss)


def teaching_values(result: dict, objectives: tuple[str, str]) -> list[float]:
    """The objectives a failed trial reached, 0 (the worst of both, maximised) where none is finite."""
    values = []
    for name in objectives:
        value = result.get(name)
        values.append(float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0)
    return values


def mark_failures(table: pd.DataFrame, trials_directory: Path) -> pd.DataFrame:
    """Copy of the trial table with a `failure` column: out_of_memory, diverged, error, or empty."""
    marked = table.copy()
    kinds = []
    for _, row in marked.iterrows():
        kind = ""
        if row.get(STATUS) == ERROR:
            recorded = read_failure(Path(trials_directory) / str(row[TRIAL_ID]))
            kind = recorded["kind"] if recorded else classify_failure(str(row.get(STOP_REASON, "")))
        elif row.get(STATUS) == STOPPED and str(row.get(STOP_REASON, "")).startswith(DIVERGED_STOP_PREFIX):
            kind = DIVERGED
        kinds.append(kind)
    marked["failure"] = kinds
    return marked
