"""Which trial of a sweep an export takes: the most accurate, the fastest, or the front's knee.

Every policy chooses among eligible trials only (completed, feasible, both objectives finite; see
`tsmoe.sweep.pareto`), and a failed choice says why and how far the sweep fell short, so the user can
lower the floor or run more trials.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tsmoe.sweep.pareto import (
    COMPLETED,
    ERROR,
    PENDING,
    QUALITY,
    RUNNING,
    STATUS,
    STOPPED,
    TRIAL_ID,
    eligible,
    format_figure,
    is_feasible,
    knee,
    objective_values,
    pareto_front,
)

POLICIES = ("best_auroc", "best_throughput", "knee")


def choose_trial(
    table: pd.DataFrame,
    policy: str,
    throughput: str = "samples_s",
    min_throughput: float | None = None,
    min_auroc: float | None = None,
    quality: str = QUALITY,
) -> pd.Series:
    """The row of the trial a policy picks; a ValueError says why when none qualifies.

    best_auroc: highest quality among eligible trials whose throughput >= min_throughput (if given);
    best_throughput: highest throughput among eligible trials with quality >= min_auroc (if given);
    knee: the knee of the Pareto front of the eligible trials that meet both floors (if given).
    Ties are broken by the other objective, then by the smaller trial_id.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    candidates = eligible(table, quality, throughput)
    if candidates.empty:
        raise ValueError(_nothing_eligible(table, quality, throughput))
    # Each floor is checked against every eligible trial, so that the message names the floor the
    # sweep fell short of and its best figure, not one already narrowed by the other floor.
    meets = np.ones(len(candidates), dtype=bool)
    if min_throughput is not None:
        meets &= _meets(candidates, throughput, min_throughput, "fastest", "--min-throughput")
    if min_auroc is not None:
        meets &= _meets(candidates, quality, min_auroc, "best", "--min-auroc")
    # Each floor alone has passed _meets, so nothing left means the two together rule every trial out.
    if min_throughput is not None and min_auroc is not None and not meets.any():
        accurate_enough = objective_values(candidates, quality) >= min_auroc
        fastest = objective_values(candidates, throughput)[accurate_enough].max()
        raise ValueError(
            f"no completed feasible trial reaches both {throughput} >= {format_figure(min_throughput)} "
            f"and {quality} >= {format_figure(min_auroc)} (the fastest with {quality} >= "
            f"{format_figure(min_auroc)} reaches {format_figure(fastest)}); "
            "lower --min-throughput or --min-auroc"
        )
    candidates = candidates[meets]
    if policy == "knee":
        return knee(pareto_front(candidates, quality, throughput), quality, throughput)
    first, second = (quality, throughput) if policy == "best_auroc" else (throughput, quality)
    order = np.lexsort(
        (
            candidates[TRIAL_ID].astype(str).to_numpy(),
            -objective_values(candidates, second),
            -objective_values(candidates, first),
        )
    )
    return candidates.iloc[order[0]]


def _meets(candidates: pd.DataFrame, column: str, floor: float, superlative: str, option: str) -> np.ndarray:
    """Which candidates reach the floor; a ValueError with the best figure there is when none does."""
    values = objective_values(candidates, column)
    meets = values >= floor
    if not meets.any():
        raise ValueError(
            f"no completed feasible trial reaches {column} >= {format_figure(floor)} "
            f"(the {superlative} reaches {format_figure(values.max())}); lower {option}"
        )
    return meets


def _nothing_eligible(table: pd.DataFrame, quality: str, throughput: str) -> str:
    """Why no trial is eligible: how many trials there are and what became of each."""
    if table.empty:
        return "the sweep has no trials"
    status = table[STATUS].astype(str)
    completed = status.eq(COMPLETED).to_numpy(dtype=bool)
    feasible = is_feasible(table)
    finite = np.isfinite(objective_values(table, quality)) & np.isfinite(objective_values(table, throughput))
    missing = f"completed without a finite {quality} and {throughput}"
    counts = [
        (int(status.eq(STOPPED).sum()), "stopped early"),
        (int(status.eq(ERROR).sum()), "errored"),
        (int(status.isin([RUNNING, PENDING]).sum()), "still running or pending"),
        (int((completed & ~feasible).sum()), "completed but infeasible"),
        (int((completed & feasible & ~finite).sum()), missing),
    ]
    others = len(table) - sum(count for count, _ in counts)
    if others:
        counts.append((others, "with another status"))
    described = ", ".join(f"{count} {what}" for count, what in counts if count)
    return (
        f"no trial is eligible (completed, feasible, finite {quality} and {throughput}): "
        f"of {len(table)} trials, {described}"
    )
