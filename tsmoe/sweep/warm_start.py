"""Warm starts: earlier sweeps' finished trials told to today's study, and given configs run first.

`tsmoe sweep DEF --warm-start OLD_SWEEP_DIR` adds every finished trial of the old sweep's Optuna study
(SWEEP/optuna.db) whose parameters fit today's search space, with its objective values and constraints,
to the new study before the first trial is sampled, so TPE and NSGA-II start from what is known. A trial
is skipped, and the reason reported, when it sets a parameter today's space does not sample, lacks one it
does, holds a value outside today's distribution, or makes a config today's base rejects. An old sweep
scored on another throughput figure is skipped whole: its values are in another unit.

`enqueue: [best.yaml, ...]` in a definition runs the given run configs first: their values of the space's
sampled fields become the first trials' parameters (Tune's OptunaSearch enqueues them in the study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tsmoe.config import RunConfig, load_run_config, read_yaml
from tsmoe.sweep.definition import parse_sweep_config
from tsmoe.sweep.distributions import Fixed, encode_choice
from tsmoe.sweep.searcher import study_storage
from tsmoe.sweep.space import SearchSpace

WARM_START_SOURCE = "warm_start_from"  # user attribute naming the sweep a warm-started trial came from
_CONSTRAINT_KEY_PREFIX = "constraints"  # where Optuna keeps Trial.set_constraint values among system attrs


@dataclass
class WarmStart:
    """What a warm start added to the study, and what it skipped and why."""

    added: int = 0
    skipped: list[str] = field(default_factory=list)

    def lines(self) -> str:
        """A summary for the terminal: how many trials came in, then each skipped one with its reason."""
        return "\n".join([f"warm start: {self.added} earlier trials added", *(f"  skipped {s}" for s in self.skipped)])


def _old_study(directory: Path) -> tuple[optuna.Study, str]:
    """The Optuna study of a sweep directory and its throughput objective."""
    stored = directory / "sweep.yaml"
    if not stored.is_file() or not (directory / "optuna.db").is_file():
        raise FileNotFoundError(f"{directory}: not a sweep directory (it needs sweep.yaml and optuna.db)")
    config = parse_sweep_config(read_yaml(stored, "sweep definition"), str(stored))
    study = optuna.load_study(study_name=config.name, storage=study_storage(directory))
    return study, config.objectives.throughput


def inside(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether an Optuna-side value is one `distribution` can produce: a choice, or in range and on its step."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(distribution, optuna.distributions.IntDistribution):
        on_grid = float(value).is_integer() and (int(value) - distribution.low) % distribution.step == 0
        return on_grid and distribution.low <= value <= distribution.high
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        in_range = distribution.low <= value <= distribution.high
        if distribution.step is None:
            return in_range
        steps = (value - distribution.low) / distribution.step
        return in_range and abs(steps - round(steps)) < 1e-8
    return False


def _misfit(params: dict[str, Any], space: SearchSpace, base: RunConfig) -> str | None:
    """Why a trial's parameters do not fit today's space, or None when they do."""
    distributions = space.optuna_distributions()
    unknown = sorted(set(params) - set(distributions))
    if unknown:
        return f"parameters no longer in the space: {', '.join(unknown)}"
    missing = sorted(set(distributions) - set(params))
    if missing:
        return f"no value for {', '.join(missing)}"
    for name, value in params.items():
        if not inside(distributions[name], value):
            return f"{name} = {value!r} is outside today's {distributions[name]}"
    try:
        space.apply(base, params)
    except ValueError as error:
        return str(error)
    return None


def add_earlier_trials(
    study: optuna.Study, directories: list[Path], space: SearchSpace, base: RunConfig, throughput: str
) -> WarmStart:
    """Add the finished trials of the sweeps in `directories` that fit `space` to `study`."""
    outcome = WarmStart()
    distributions = space.optuna_distributions()
    for directory in directories:
        directory = Path(directory).resolve()
        old, old_throughput = _old_study(directory)
        if old_throughput != throughput:
            outcome.skipped.append(f"{directory}: scored on {old_throughput}, this sweep on {throughput}")
            continue
        for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            reason = _misfit(trial.params, space, base)
            if reason is not None:
                outcome.skipped.append(f"{directory} trial {trial.number}: {reason}")
                continue
            constraints = {
                key: value for key, value in trial.system_attrs.items() if key.startswith(_CONSTRAINT_KEY_PREFIX)
            }
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial.params,
                    distributions={name: distributions[name] for name in trial.params},
                    values=trial.values,
                    user_attrs=trial.user_attrs | {WARM_START_SOURCE: f"{directory} trial {trial.number}"},
                    system_attrs=constraints,
                )
            )
            outcome.added += 1
    return outcome


def _config_value(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def enqueued_points(paths: list[Path], space: SearchSpace) -> list[dict[str, Any]]:
    """The space's sampled values of each run config in `paths`, Optuna-side, to run first; a value outside
    the space raises ValueError naming the file and the field."""
    distributions = space.optuna_distributions()
    points = []
    for path in paths:
        values = load_run_config(path).model_dump(mode="json")
        point = {}
        for name, parameter in space.parameters.items():
            if isinstance(parameter, Fixed):
                continue
            value = encode_choice(_config_value(values, name))
            if not inside(distributions[name], value):
                raise ValueError(f"{path}: field {name}: {value!r} is outside the search space's {distributions[name]}")
            point[name] = value
        points.append(point)
    return points
