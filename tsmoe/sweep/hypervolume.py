"""Hypervolume over time: how much of the objective plane the sweep's front covers, as trials finish.

The hypervolume of a set of points (best validation AUROC, throughput; both maximised) is the area they
dominate above a reference point. The reference point is AUROC 0.5 (a detector no better than chance) and
throughput 0, so the figure is in AUROC x the throughput's unit (e.g. samples/s) and only grows while the
search still finds better trade-offs. It is computed from the sweep's Optuna study (which knows when each
trial finished): this sweep's completed, feasible trials only (trials added by a warm start, infeasible
ones and those stopped early do not count).

    SWEEP/hypervolume.png   the hypervolume after each finished trial, against the time since the sweep began
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tsmoe.sweep.pareto import format_figure
from tsmoe.sweep.searcher import study_storage
from tsmoe.sweep.warm_start import WARM_START_SOURCE

REFERENCE_AUROC, REFERENCE_THROUGHPUT = 0.5, 0.0
HYPERVOLUME_PNG = "hypervolume.png"


def hypervolume_2d(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by `points` (both coordinates maximised) and bounded below by `reference`."""
    inside = [(x, y) for x, y in points if x > reference[0] and y > reference[1]]
    area, highest = 0.0, reference[1]
    # Walk from the best first coordinate down: each point adds the strip above the highest one so far.
    for x, y in sorted(inside, key=lambda point: (-point[0], -point[1])):
        if y > highest:
            area += (x - reference[0]) * (y - highest)
            highest = y
    return area


@dataclass
class HypervolumeHistory:
    """The hypervolume after each of the sweep's finished trials, with seconds since its first trial began."""

    seconds: list[float]
    hypervolume: list[float]
    throughput: str

    def line(self) -> str:
        """One line for `tsmoe report`."""
        reference = f"reference AUROC {REFERENCE_AUROC:g}, {self.throughput} {REFERENCE_THROUGHPUT:g}"
        if not self.hypervolume:
            return f"hypervolume ({reference}): no completed feasible trial yet"
        return (
            f"hypervolume ({reference}): {format_figure(self.hypervolume[-1])} after {len(self.hypervolume)} "
            f"finished trials in {self.seconds[-1]:.0f} s"
        )


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def hypervolume_history(directory: Path, study_name: str, throughput: str) -> HypervolumeHistory:
    """The hypervolume over time of the sweep in `directory` (see the module docstring)."""
    history = HypervolumeHistory([], [], throughput)
    if not (Path(directory) / "optuna.db").is_file():
        return history
    study = optuna.load_study(study_name=study_name, storage=study_storage(directory))
    trials = [trial for trial in study.get_trials(deepcopy=False) if WARM_START_SOURCE not in trial.user_attrs]
    starts = [trial.datetime_start for trial in trials if trial.datetime_start is not None]
    if not starts:
        return history
    began = min(starts)
    finished = sorted(
        (trial.datetime_complete, trial.values)
        for trial in trials
        if trial.state == TrialState.COMPLETE and trial.datetime_complete is not None and _feasible(trial)
    )
    points: list[tuple[float, float]] = []
    for completed, values in finished:
        points.append((values[0], values[1]))
        history.seconds.append((completed - began).total_seconds())
        history.hypervolume.append(hypervolume_2d(points, (REFERENCE_AUROC, REFERENCE_THROUGHPUT)))
    return history


def plot_hypervolume(history: HypervolumeHistory, path: Path) -> Path:
    """Draw the history as a step line to `path` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if history.hypervolume:
        axes.step(history.seconds, history.hypervolume, where="post", marker="o")
    axes.set_xlabel("seconds since the sweep began")
    axes.set_ylabel(f"hypervolume (AUROC x {history.throughput})")
    axes.set_title(f"reference point: AUROC {REFERENCE_AUROC:g}, {history.throughput} {REFERENCE_THROUGHPUT:g}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_hypervolume(directory: Path, study_name: str, throughput: str) -> HypervolumeHistory:
    """Compute the sweep's hypervolume history and draw it to SWEEP/hypervolume.png."""
    history = hypervolume_history(directory, study_name, throughput)
    plot_hypervolume(history, Path(directory) / HYPERVOLUME_PNG)
    return history
