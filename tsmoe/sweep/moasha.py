"""Multi-objective asynchronous successive halving (MOASHA): early stopping on both of a sweep's objectives.

ASHA ranks the trials at a rung by one metric, so a fast trial whose AUROC is a little lower is stopped
although it may be the throughput end of the Pareto front the sweep asks for. Here the trials that reached a
rung (epochs grace_period * reduction_factor^k, below the last epoch) are ranked by non-dominated sorting
on the sweep's two objectives (best validation AUROC so far and the throughput figure, both maximised),
ties within a front by crowding distance (the extremes of a front first), as in Schmucker et al., "Multi-
objective Asynchronous Successive Halving" (2021). A trial continues when it is among the top
1/reduction_factor of the trials recorded at that rung so far (at least one; a trial tied with the last one
kept is kept too), otherwise it stops and the stop ledger says which Pareto rank it had.

The rung history lives in SWEEP/moasha_rungs.jsonl, rewritten atomically on every change and read back
when a resumed sweep's scheduler first sees a trial: Tune itself restores schedulers as they were when
the sweep started.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from tsmoe.sweep.persisted import read_json, write_json_atomically
from tsmoe.sweep.stopping import EPOCH, EPOCHS_PLANNED, StopLedger

RUNGS_FILE = "moasha_rungs.jsonl"


def pareto_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of rows of `points` (every column maximised): 1 for the front, 2 for the
    front of the rest, and so on."""
    count = len(points)
    at_least = (points[:, None, :] >= points[None, :, :]).all(axis=2)
    better = (points[:, None, :] > points[None, :, :]).any(axis=2)
    dominates = np.asarray(at_least & better)  # dominates[i, j]: row i dominates row j
    ranks = np.zeros(count, dtype=int)
    remaining = np.ones(count, dtype=bool)
    rank = 0
    while remaining.any():
        rank += 1
        dominated = (dominates[remaining][:, remaining]).any(axis=0)
        members = np.flatnonzero(remaining)[~dominated]
        ranks[members] = rank
        remaining[members] = False
    return ranks


def crowding_distances(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its set: the extremes of each objective get
    infinity, the others the sum over objectives of the gap between their neighbours, scaled by the
    objective's range."""
    count, objectives = points.shape
    distances = np.zeros(count)
    if count <= 2:
        return np.full(count, math.inf)
    for column in range(objectives):
        values = points[:, column]
        order = np.argsort(values, kind="stable")
        distances[order[0]] = distances[order[-1]] = math.inf
        spread = values[order[-1]] - values[order[0]]
        if not math.isfinite(spread) or spread <= 0:
            continue
        gaps = (values[order[2:]] - values[order[:-2]]) / spread
        distances[order[1:-1]] += gaps
    return distances


def promotion_order(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order best first, Pareto rank, crowding distance) of the rows: by rank, then by crowding within it."""
    ranks = pareto_ranks(points)
    crowding = np.zeros(len(points))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distances(points[members])
    order = np.lexsort((-crowding, ranks))
    return order, ranks, crowding


class MOASHA(FIFOScheduler):
    """Successive halving on two maximised objectives by Pareto rank; see the module docstring."""

    def __init__(
        self,
        ledger: StopLedger,
        objectives: tuple[str, str],
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 2.0,
        state_file: Path | None = None,
    ):
        super().__init__()
        self.ledger = ledger
        self.objectives = objectives
        self.reduction_factor = reduction_factor
        # Rungs below the last epoch only: the last epoch ends a trial anyway.
        self.milestones: list[int] = []
        milestone = float(grace_period)
        while milestone < max_t:
            self.milestones.append(math.ceil(milestone))
            milestone *= reduction_factor
        self.milestones = sorted(set(self.milestones))
        self.state_file = Path(state_file) if state_file is not None else ledger.path.parent / RUNGS_FILE
        # Tune wants one metric name; the first objective stands for both (it is never used to rank).
        self._metric = objectives[0]
        self._rungs: dict[int, dict[str, list[float]]] = {milestone: {} for milestone in self.milestones}
        self._loaded = False

    def __getstate__(self) -> dict:
        # Whoever unpickles this scheduler (Tune, on --resume) reads the rung history from disk again.
        state = self.__dict__.copy()
        state["_loaded"] = False
        return state

    @property
    def rungs(self) -> dict[int, dict[str, list[float]]]:
        """milestone epoch -> trial id -> its objective values when it reached that rung."""
        self._load()
        return self._rungs

    def _load(self) -> None:
        if self._loaded:
            return
        stored = read_json(self.state_file, {"rungs": {}})
        for milestone, recorded in stored["rungs"].items():
            self._rungs.setdefault(int(milestone), {}).update(recorded)
        self._loaded = True

    def save_rungs(self) -> None:
        """Write the rung history to the sweep directory (atomically)."""
        rungs = {str(milestone): recorded for milestone, recorded in self.rungs.items()}
        write_json_atomically(self.state_file, {"objectives": list(self.objectives), "rungs": rungs})

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Accept Tune's search properties without letting them replace the two objectives."""
        return True

    def _point(self, result: dict) -> list[float] | None:
        reported = [result.get(name) for name in self.objectives]
        if any(not isinstance(value, (int, float)) for value in reported):
            return None
        values = [float(value) for value in reported if isinstance(value, (int, float))]
        # A trial with a non-finite figure is broken: it ranks below every other, on both objectives.
        if not all(math.isfinite(value) for value in values):
            return [-math.inf] * len(values)
        return values

    def _rung_to_record(self, trial_id: str, epoch: int) -> int | None:
        """The highest rung the trial has reached, if it has not been judged there yet."""
        for milestone in reversed(self.milestones):
            if epoch >= milestone:
                return None if trial_id in self.rungs[milestone] else milestone
        return None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """Record the trial at a rung it has just reached and say whether it may go on."""
        point = self._point(result)
        epoch = result.get(EPOCH)
        if point is None or epoch is None:
            return TrialScheduler.CONTINUE
        milestone = self._rung_to_record(trial.trial_id, epoch)
        if milestone is None:
            return TrialScheduler.CONTINUE
        recorded = self.rungs[milestone]
        recorded[trial.trial_id] = point
        self.save_rungs()
        return self._judge(trial.trial_id, recorded, epoch, result)

    def _judge(self, trial_id: str, recorded: dict[str, list[float]], epoch: int, result: dict) -> str:
        trial_ids = list(recorded)
        points = np.array([recorded[name] for name in trial_ids], dtype=np.float64)
        order, ranks, crowding = promotion_order(points)
        keep = max(1, math.ceil(len(trial_ids) / self.reduction_factor))
        position = trial_ids.index(trial_id)
        last_kept = order[keep - 1]
        tied = ranks[position] == ranks[last_kept] and crowding[position] == crowding[last_kept]
        if position in order[:keep] or tied:
            return TrialScheduler.CONTINUE
        if epoch >= result.get(EPOCHS_PLANNED, math.inf):
            return TrialScheduler.CONTINUE  # its last epoch: it ends as completed anyway
        figures = ", ".join(
            f"{name} {value:.4g}" for name, value in zip(self.objectives, points[position], strict=True)
        )
        reason = (
            f"moasha: Pareto rank {ranks[position]} of {ranks.max()} at epoch {epoch} ({figures}); "
            f"the top {keep} of {len(trial_ids)} trials at this rung go on"
        )
        if ranks[position] == ranks[last_kept]:
            # Its front is wider than the places left: say why it lost to trials it does not trail.
            front = int((ranks == ranks[position]).sum())
            reason += (
                f"; its front holds {front} of them and it lies where the front is most crowded "
                f"(crowding distance {crowding[position]:.3g}), so trials that spread the front further went on"
            )
        self.ledger.record(trial_id, epoch, reason)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        """A trial that ended at a rung it had not been judged at still counts there for later trials."""
        point = self._point(result or {})
        epoch = (result or {}).get(EPOCH)
        if point is None or epoch is None:
            return
        milestone = self._rung_to_record(trial.trial_id, epoch)
        if milestone is not None:
            self.rungs[milestone][trial.trial_id] = point
            self.save_rungs()

    def debug_string(self) -> str:
        """How many trials each rung has recorded."""
        counts = ", ".join(f"epoch {milestone}: {len(recorded)}" for milestone, recorded in self.rungs.items())
        return f"MOASHA on {' and '.join(self.objectives)} ({counts})"

    def save(self, checkpoint_path: str) -> None:
        """Tune's own checkpoint of the scheduler: the rung history as JSON."""
        self.save_rungs()
        write_json_atomically(Path(checkpoint_path), {str(key): value for key, value in self.rungs.items()})

    def restore(self, checkpoint_path: str) -> None:
        """Read back a rung history written by `save`."""
        for milestone, recorded in read_json(Path(checkpoint_path), {}).items():
            self.rungs.setdefault(int(milestone), {}).update(recorded)
