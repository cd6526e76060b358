"""Parameter importance: how much of each objective's variation across a sweep's trials each sampled
parameter explains (fANOVA, as Optuna computes it for a study).

Computed from the trial table, so it works on a finished or copied sweep without its Optuna study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tsmoe.sweep.pareto import PARAM_PREFIX, QUALITY, eligible, parameter_columns

Direction = Literal["minimize", "maximize"]  # of an objective, as Optuna names it


def parameter_importances(
    table: pd.DataFrame,
    quality: str = QUALITY,
    throughput: str = "samples_s",
    distributions: Mapping[str, BaseDistribution] | None = None,
    directions: Sequence[Direction] = ("maximize", "maximize"),
) -> dict[str, dict[str, float]] | None:
    """fANOVA importance of each parameter for each objective (objective -> field -> share), or None.

    Computed over the eligible trials, as Optuna would over the sweep's study; rows with a parameter
    missing or outside its distribution are left out, and so are parameters without a distribution.
    None when fewer than two trials remain or no parameter varies among them. An objective that does
    not vary gets zero importance everywhere (fANOVA has no variance to explain).
    """
    rows = eligible(table, quality, throughput)
    if distributions is None:
        distributions = infer_distributions(rows)
    fields = [
        field
        for field in distributions
        if f"{PARAM_PREFIX}{field}" in rows.columns and rows[f"{PARAM_PREFIX}{field}"].notna().any()
    ]
    if not fields:
        return None
    used = {field: distributions[field] for field in fields}
    trials = []
    for _, row in rows.iterrows():
        params = _optuna_params(row, used)
        if params is None:
            continue
        try:
            trials.append(
                optuna.trial.create_trial(
                    params=params,
                    distributions=used,
                    values=[float(row[quality]), float(row[throughput])],
                )
            )
        except ValueError:
            continue  # a value outside its distribution: the search space changed since the trial ran
    if len(trials) < 2 or not any(len({trial.params[field] for trial in trials}) > 1 for field in fields):
        return None
    verbosity = optuna.logging.get_verbosity()
    # create_study announces every in-memory study at INFO; this one is an implementation detail.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=list(directions))
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    importances: dict[str, dict[str, float]] = {}
    for index, objective in enumerate((quality, throughput)):
        values = [trial.values[index] for trial in trials]
        if max(values) == min(values):
            importances[objective] = {field: 0.0 for field in fields}
            continue
        found = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=partial(_objective_value, index=index),
        )
        importances[objective] = {field: float(found.get(field, 0.0)) for field in fields}
    return importances


def infer_distributions(rows: pd.DataFrame) -> dict[str, BaseDistribution]:
    """Distributions spanning the values of the `param.*` columns, for a table without its search space.

    Whole numbers become an IntDistribution, other numbers a FloatDistribution, anything else a
    CategoricalDistribution of the values seen; columns with no value are left out.
    """
    distributions: dict[str, BaseDistribution] = {}
    for column in parameter_columns(rows):
        values = rows[column].dropna()
        if values.empty:
            continue
        field = column.removeprefix(PARAM_PREFIX)
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64)
            if np.all(numbers == np.round(numbers)):
                distributions[field] = IntDistribution(int(numbers.min()), int(numbers.max()))
            else:
                distributions[field] = FloatDistribution(float(numbers.min()), float(numbers.max()))
        else:
            choices = sorted({_native(value) for value in values}, key=str)
            distributions[field] = CategoricalDistribution(choices)
    return distributions


def _optuna_params(row: pd.Series, distributions: Mapping[str, BaseDistribution]) -> dict[str, Any] | None:
    """A row's parameters as Optuna stores them, or None when one is missing or not among its choices."""
    params: dict[str, Any] = {}
    for field, distribution in distributions.items():
        value = _native(row[f"{PARAM_PREFIX}{field}"])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(distribution, IntDistribution):
            value = int(value)
        elif isinstance(distribution, FloatDistribution):
            value = float(value)
        elif isinstance(distribution, CategoricalDistribution):
            # The table may hold 16.0 for the choice 16 (a column with NaN is float); take the choice itself.
            matches = [choice for choice in distribution.choices if choice == value]
            if not matches:
                return None
            value = matches[0]
        params[field] = value
    return params


def _native(value: Any) -> Any:
    # Optuna accepts only Python scalars as choices and parameter values, not numpy ones.
    return value.item() if isinstance(value, np.generic) else value


def _objective_value(trial: optuna.trial.FrozenTrial, index: int) -> float:
    """One objective of a multi-objective trial, the target fANOVA explains."""
    return trial.values[index]
