"""How much a trial's figures move with the seed, and whether its lead on the Pareto front outlasts that.

A sweep scores every trial with one seed, and the export picks the trial whose figures came out best: some
of its lead is luck. `tsmoe export --verify-seeds N` retrains the pick with N new seeds; this module turns
their figures into a spread per objective (mean, sample standard deviation, min, max) and compares the
pick's lead over each neighbour on the front with the spread of the objective it leads in.

The front is sorted by throughput. The neighbour on the slower side is more accurate (else it would be
dominated), so the pick leads it in throughput; the neighbour on the faster side is faster, so the pick
leads it in quality. A lead no larger than one seed standard deviation could vanish with another seed: the
two trials are then not told apart by the sweep, and the export warns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsmoe.sweep.pareto import TRIAL_ID, format_figure, objective_values

MIN_SEEDS = 2  # a standard deviation needs two values


@dataclass(frozen=True)
class Spread:
    """One objective over the seed runs: mean, sample standard deviation (ddof 1), min and max."""

    mean: float
    std: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of the finite values; a ValueError when fewer than two are finite."""
        array = np.asarray([float(value) for value in values], dtype=np.float64)
        finite = array[np.isfinite(array)]
        if len(finite) < MIN_SEEDS:
            raise ValueError(f"a spread needs at least {MIN_SEEDS} finite values, got {len(finite)}")
        return cls(
            mean=float(finite.mean()),
            std=float(finite.std(ddof=1)),
            min=float(finite.min()),
            max=float(finite.max()),
            count=len(finite),
        )


@dataclass(frozen=True)
class Lead:
    """The pick's lead over one neighbour on the front, in the objective the pick is better at."""

    neighbour: str  # the neighbour's trial id
    side: str  # "slower" (more accurate) or "faster" (less accurate) than the pick
    objective: str  # the column the pick leads in
    lead: float  # the pick's sweep figure minus the neighbour's, in that column
    spread: float  # the seed standard deviation of that column

    @property
    def within_spread(self) -> bool:
        """Whether another seed could erase the lead: it is no larger than one standard deviation."""
        return self.lead <= self.spread

    def line(self, pick: str) -> str:
        """One line saying whether the lead holds, or a warning when it is within the spread."""
        figures = f"{self.objective} +{format_figure(self.lead)} against a seed std of {format_figure(self.spread)}"
        if self.within_spread:
            return (
                f"warning: trial {pick}'s lead over its {self.side} neighbour {self.neighbour} on the front "
                f"({figures}) is within the seed spread: another seed may swap them; verify "
                f"{self.neighbour} too, or treat the two as equal"
            )
        return f"lead over the {self.side} neighbour {self.neighbour}: {figures}: holds"


def leads_over_neighbours(
    front: pd.DataFrame, pick: str, spreads: dict[str, Spread], quality: str, throughput: str
) -> list[Lead]:
    """The pick's leads over its neighbours on the front (sorted by throughput, as `pareto_front` returns
    it); none when the front holds the pick alone. A ValueError when the pick is not on the front."""
    ids = front[TRIAL_ID].astype(str).tolist()
    if pick not in ids:
        raise ValueError(f"trial {pick} is not on the Pareto front ({', '.join(ids) or 'empty'})")
    position = ids.index(pick)
    quality_values = objective_values(front, quality)
    throughput_values = objective_values(front, throughput)
    leads = []
    if position > 0:
        slower = position - 1
        lead = throughput_values[position] - throughput_values[slower]
        leads.append(Lead(ids[slower], "slower", throughput, float(lead), spreads[throughput].std))
    if position < len(ids) - 1:
        faster = position + 1
        lead = quality_values[position] - quality_values[faster]
        leads.append(Lead(ids[faster], "faster", quality, float(lead), spreads[quality].std))
    return leads


def spread_table(spreads: dict[str, Spread], sweep_figures: dict[str, float]) -> str:
    """Each objective's figure in the sweep beside its mean, std, min and max over the seeds, as text."""
    rows = {
        objective: {
            "sweep": sweep_figures.get(objective, math.nan),
            "mean": spread.mean,
            "std": spread.std,
            "min": spread.min,
            "max": spread.max,
        }
        for objective, spread in spreads.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").to_string(float_format=lambda value: f"{value:.4g}")
