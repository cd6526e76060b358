"""The Optuna searcher of a sweep: two objectives, honest about trials that did not finish.

Tune's `OptunaSearch` tells Optuna every trial that ends without an error as COMPLETE with its last
figures, so a trial ASHA stopped after one epoch would enter Optuna's Pareto front half-trained and steer
the sampler. `SweepSearch` tells such trials as PRUNED, and so trials whose routing collapsed (one expert
over `early_stopping.max_load_share` of the tokens), trials with a non-finite objective as FAIL, and records
the sweep's constraints (throughput floor, memory ceiling) on each trial, which both TPE and
NSGA-II read to prefer feasible regions. The study lives in SWEEP/optuna.db, which optuna-dashboard opens.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tsmoe.sweep.definition import SweepConfig
from tsmoe.sweep.failures import DIVERGED, OUT_OF_MEMORY, diverged, read_failure, teaching_values
from tsmoe.sweep.object_storage import is_uri, join
from tsmoe.sweep.pareto import MEMORY, QUALITY
from tsmoe.sweep.space import SearchSpace
from tsmoe.sweep.stopping import EPOCH, EPOCHS_PLANNED, collapsed
from tsmoe.sweep.trial import TRIALS_DIR

STUDY_FILE = "optuna.db"
TUNE_TRIAL_ID = "tune_trial_id"

logger = logging.getLogger(__name__)


def study_storage(directory: Path) -> str:
    """The SQLite URL of a sweep's Optuna study."""
    return f"sqlite:///{Path(directory).resolve() / STUDY_FILE}"


def constraint_values(
    result: dict, throughput: str, min_throughput: float | None, max_memory_mib: float | None
) -> dict[str, float]:
    """Optuna's constraint values for a trial's figures, by name: each <= 0 when satisfied."""
    values = {}
    if min_throughput is not None:
        figure = result.get(throughput, math.nan)
        values["min_throughput"] = min_throughput - figure if math.isfinite(figure) else math.inf
    if max_memory_mib is not None:
        figure = result.get(MEMORY, math.nan)
        values["max_memory_mib"] = figure - max_memory_mib if math.isfinite(figure) else math.inf
    return values


class SweepSearch(OptunaSearch):
    """OptunaSearch that tells unfinished trials as PRUNED and records constraints; see the module doc."""

    def __init__(
        self,
        config: SweepConfig,
        space: SearchSpace,
        directory: Path,
        points_to_evaluate: list[dict] | None = None,
        routing: dict[str, int] | None = None,
    ):
        self.throughput = config.objectives.throughput
        # A trial whose routing collapsed is PRUNED even when it ran all its epochs (see stopping.py).
        # `routing`: the base config's top-k and expert count (stopping.TOP_K, NUM_EXPERTS).
        self.max_load_share, self.routing = config.early_stopping.max_load_share, routing
        self.min_throughput = config.constraints.min_throughput
        self.max_memory_mib = config.constraints.max_memory_mib
        # Where trials record their failures: under the sweep directory, or under STORAGE_URI/NAME.
        self.trials_directory = join(config.experiment_location if is_uri(config.storage) else directory, TRIALS_DIR)
        self._last_results: dict[str, dict] = {}  # Tune trial id -> its latest result, for failed trials
        sampler: optuna.samplers.BaseSampler
        if config.sampler == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(seed=config.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=config.seed, multivariate=True)
        super().__init__(
            space=space.optuna_distributions(),
            metric=[QUALITY, self.throughput],
            mode=["max", "max"],
            sampler=sampler,
            study_name=config.name,
            storage=optuna.storages.RDBStorage(study_storage(directory)),
            points_to_evaluate=points_to_evaluate,  # enqueued in the study, sampled first
        )

    @property
    def study(self) -> optuna.Study:
        """The sweep's Optuna study (in SWEEP/optuna.db)."""
        assert self._ot_study is not None  # made in __init__: the space is always given
        return self._ot_study

    def suggest(self, trial_id: str):
        """Sample a trial's parameters and remember which Tune trial the Optuna trial is."""
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Keep the trial's latest figures: Tune reports an errored trial's end without them."""
        self._last_results[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna how the trial ended: COMPLETE only when it ran all its epochs with finite figures,
        or as an infeasible COMPLETE when it ran out of memory or diverged (see tsmoe.sweep.failures)."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        result = result or {}
        if self._tell_failure(trial_id, trial, result or self._last_results.get(trial_id, {}), error):
            return
        figures = [result.get(QUALITY, math.nan), result.get(self.throughput, math.nan)]
        values: list[float] | None
        finished = result.get(EPOCH, 0) >= result.get(EPOCHS_PLANNED, math.inf)
        if self.routing is not None:
            finished = (
                finished and collapsed(result | {"config": trial.params}, self.routing, self.max_load_share) is None
            )
        finite = all(isinstance(value, (int, float)) and math.isfinite(value) for value in figures)
        if error or not result or not finite:
            state, values = TrialState.FAIL, None
        else:
            state = TrialState.COMPLETE if finished else TrialState.PRUNED
            values = figures if finished else None
            # The samplers read constraints of completed and pruned trials alike.
            for name, value in constraint_values(
                result, self.throughput, self.min_throughput, self.max_memory_mib
            ).items():
                trial.set_constraint(name, value)
        assert self._ot_study is not None  # OptunaSearch creates the study before it suggests any trial
        try:
            self._ot_study.tell(trial, values, state=state)
        except (ValueError, RuntimeError) as told:  # already told, e.g. by a driver that died right after
            logger.warning("optuna: %s", told)
        self._completed_trials.add(trial_id)

    def _tell_failure(self, trial_id: str, trial: optuna.Trial, result: dict, error: bool) -> bool:
        """Tell a trial that ran out of memory or diverged as COMPLETE with a violated constraint named for
        it and the figures it reached; whether it was such a trial."""
        recorded = read_failure(join(self.trials_directory, trial_id)) if error else None
        if recorded is not None and recorded["kind"] in (OUT_OF_MEMORY, DIVERGED):
            kind, reason = recorded["kind"], recorded["reason"]
        elif not error and diverged(result):
            kind, reason = DIVERGED, f"loss is {result.get('loss')} at epoch {result.get(EPOCH)}"
        else:
            return False
        trial.set_user_attr("failure", kind)
        trial.set_user_attr("failure_reason", reason[:500])
        trial.set_constraint(kind, 1.0)
        study = self._ot_study
        assert study is not None  # OptunaSearch made it before the first suggest
        try:
            study.tell(trial, teaching_values(result, (QUALITY, self.throughput)), state=TrialState.COMPLETE)
        except (ValueError, RuntimeError) as told:
            logger.warning("optuna: %s", told)
        self._completed_trials.add(trial_id)
        self._last_results.pop(trial_id, None)
        return True
