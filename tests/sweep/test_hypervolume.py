"""Hypervolume over time: the area the sweep's feasible, finished trials dominate, as they finish."""

from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.trial import TrialState

from tsmoe.sweep.hypervolume import HYPERVOLUME_PNG, hypervolume_2d, write_hypervolume
from tsmoe.sweep.searcher import study_storage
from tsmoe.sweep.warm_start import WARM_START_SOURCE

BEGAN = datetime.datetime(2026, 1, 1, 12, 0, 0)


def test_hypervolume_adds_the_strip_each_non_dominated_point_covers():
    reference = (0.5, 0.0)
    assert hypervolume_2d([], reference) == 0.0
    # (0.9 - 0.5) * 100 + (0.8 - 0.5) * (300 - 100); a dominated point and one below chance add nothing.
    points = [(0.9, 100.0), (0.8, 300.0), (0.7, 50.0), (0.4, 1000.0)]
    assert hypervolume_2d(points, reference) == pytest.approx(100.0)


def _add(study, values, finished_after_s, constraints=None, user_attrs=None, state=TrialState.COMPLETE):
    trial = optuna.trial.create_trial(
        params={},
        distributions={},
        values=values,
        state=state,
        user_attrs=user_attrs or {},
        system_attrs={f"constraints:{name}": value for name, value in (constraints or {}).items()},
    )
    trial.datetime_start = BEGAN
    trial.datetime_complete = BEGAN + datetime.timedelta(seconds=finished_after_s)
    study.add_trial(trial)


def test_history_counts_only_this_sweeps_feasible_completed_trials_in_finishing_order(tmp_path):
    study = optuna.create_study(study_name="s", storage=study_storage(tmp_path), directions=["maximize"] * 2)
    _add(study, [0.8, 300.0], 60)
    _add(study, [0.9, 100.0], 30)
    _add(study, [0.99, 900.0], 45, constraints={"out_of_memory": 1.0})  # infeasible
    _add(study, [0.99, 900.0], 10, user_attrs={WARM_START_SOURCE: "old trial 3"})
    _add(study, None, 20, state=TrialState.PRUNED)

    history = write_hypervolume(tmp_path, "s", "samples_s")
    assert history.seconds == [30.0, 60.0]
    assert history.hypervolume == pytest.approx([40.0, 100.0])
    assert history.line() == ("hypervolume (reference AUROC 0.5, samples_s 0): 100 after 2 finished trials in 60 s")
    assert (tmp_path / HYPERVOLUME_PNG).stat().st_size > 0


def test_a_sweep_without_finished_trials_says_so(tmp_path):
    history = write_hypervolume(tmp_path, "none", "tokens_s")
    assert history.line() == "hypervolume (reference AUROC 0.5, tokens_s 0): no completed feasible trial yet"
