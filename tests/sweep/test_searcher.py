"""What the sweep's Optuna study is told about each trial: finished, stopped early, failed, infeasible."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.searcher import TUNE_TRIAL_ID, SweepSearch, study_storage


@pytest.fixture
def sweep(tmp_path):
    path = write_sweep(
        tmp_path, synthetic_data(tmp_path / "data"), constraints={"min_throughput": 100.0, "max_memory_mib": 1000.0}
    )
    return load_sweep(path)


def _search(sweep, directory, sampler="tpe"):
    sweep.config.sampler = sampler
    directory.mkdir(parents=True, exist_ok=True)
    routing = {"model.num_experts_per_tok": 1, "model.num_experts": 4}
    return SweepSearch(sweep.config, sweep.space, directory, routing=routing)


def _result(epoch, planned=2, auroc=0.8, samples_s=150.0, memory=500.0):
    return {
        "epoch": epoch,
        "epochs_planned": planned,
        "best_val_auroc": auroc,
        "samples_s": samples_s,
        "peak_memory_mib": memory,
    }


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_only_trials_that_ran_every_epoch_are_told_complete(sweep, tmp_path, sampler):
    search = _search(sweep, tmp_path / "sweep", sampler)
    for trial_id in ("finished", "stopped", "diverged", "crashed"):
        params = search.suggest(trial_id)
        assert set(params) == set(sweep.space.optuna_distributions())
    search.on_trial_complete("finished", _result(2, auroc=0.81, samples_s=150.0))
    search.on_trial_complete("stopped", _result(1, auroc=0.99, samples_s=900.0))  # best figures, half-trained
    search.on_trial_complete("diverged", _result(2, auroc=math.nan))
    search.on_trial_complete("crashed", None, error=True)

    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "sweep"))
    by_tune_id = {trial.user_attrs[TUNE_TRIAL_ID]: trial for trial in study.trials}
    assert by_tune_id["finished"].state == TrialState.COMPLETE
    assert by_tune_id["finished"].values == [0.81, 150.0]
    assert by_tune_id["stopped"].state == TrialState.PRUNED and by_tune_id["stopped"].values is None
    assert by_tune_id["diverged"].state == TrialState.FAIL
    assert by_tune_id["crashed"].state == TrialState.FAIL
    assert [trial.user_attrs[TUNE_TRIAL_ID] for trial in study.best_trials] == ["finished"]


def test_a_trial_whose_routing_collapsed_is_pruned_even_when_it_ran_every_epoch(sweep, tmp_path):
    search = _search(sweep, tmp_path / "sweep")
    for trial_id in ("collapsed", "balanced"):
        search.suggest(trial_id)
    search.on_trial_complete("collapsed", _result(2) | {"routing_max_load_share": 1.0})
    search.on_trial_complete("balanced", _result(2) | {"routing_max_load_share": 0.3})

    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "sweep"))
    by_tune_id = {trial.user_attrs[TUNE_TRIAL_ID]: trial for trial in study.trials}
    assert by_tune_id["collapsed"].state == TrialState.PRUNED and by_tune_id["collapsed"].values is None
    assert by_tune_id["balanced"].state == TrialState.COMPLETE


def test_constraints_are_recorded_as_optuna_reads_them(sweep, tmp_path):
    search = _search(sweep, tmp_path / "sweep")
    search.suggest("slow")
    search.suggest("fits")
    search.on_trial_complete("slow", _result(2, samples_s=40.0, memory=1500.0))
    search.on_trial_complete("fits", _result(2, samples_s=120.0, memory=800.0))
    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "sweep"))
    constraints = {trial.user_attrs[TUNE_TRIAL_ID]: trial.constraints for trial in study.trials}
    # Each value is <= 0 when satisfied: floor 100 samples/s, ceiling 1000 MiB.
    assert constraints == {
        "slow": {"min_throughput": 60.0, "max_memory_mib": 500.0},
        "fits": {"min_throughput": -20.0, "max_memory_mib": -200.0},
    }


def test_a_trial_told_twice_is_told_once(sweep, tmp_path):
    search = _search(sweep, tmp_path / "sweep")
    search.suggest("a")
    search.on_trial_complete("a", _result(2))
    search.on_trial_complete("a", _result(1))
    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "sweep"))
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE]
