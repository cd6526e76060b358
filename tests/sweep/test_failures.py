"""Trials that ran out of memory or diverged reach Optuna as infeasible, and the table says which."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.sweep.test_searcher import _result, _search, sweep  # noqa: F401  (a fixture)
from tsmoe.sweep.failures import (
    DIVERGED,
    OTHER,
    OUT_OF_MEMORY,
    classify_failure,
    mark_failures,
    read_failure,
    record_failure,
)
from tsmoe.sweep.searcher import TUNE_TRIAL_ID, study_storage
from tsmoe.sweep.trial import TRIALS_DIR


@pytest.mark.parametrize(
    "text, kind",
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", OUT_OF_MEMORY),
        ("RuntimeError: [enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory", OUT_OF_MEMORY),
        ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.", OUT_OF_MEMORY),
        ("tsmoe.training.guard.NonFiniteTrainingError: 5 optimizer steps in a row had a non-finite loss", DIVERGED),
        ("ValueError: no full batch of 32 in 16 segments", OTHER),
    ],
)
def test_failures_are_classified_from_the_workers_error_text(text, kind):
    assert classify_failure(text) == kind


def test_out_of_memory_and_divergence_reach_optuna_as_violated_constraints(sweep, tmp_path):  # noqa: F811
    directory = tmp_path / "sweep"
    search = _search(sweep, directory)
    for trial_id in ("oom", "nan_guard", "nan_epoch", "bug", "fine"):
        search.suggest(trial_id)
    search.on_trial_result("oom", _result(1, auroc=0.7, samples_s=300.0))
    record_failure(directory / TRIALS_DIR / "oom", "torch.OutOfMemoryError: CUDA out of memory", "CUDA out of memory")
    search.on_trial_complete("oom", None, error=True)
    record_failure(directory / TRIALS_DIR / "nan_guard", "NonFiniteTrainingError: non-finite loss", "diverged")
    search.on_trial_complete("nan_guard", None, error=True)  # before any epoch: no figures reached
    search.on_trial_complete("nan_epoch", _result(1, auroc=0.6) | {"loss": math.nan})  # the NaN rule stopped it
    record_failure(directory / TRIALS_DIR / "bug", "ValueError: no full batch", "no full batch")
    search.on_trial_complete("bug", None, error=True)
    search.on_trial_complete("fine", _result(2, auroc=0.8, samples_s=150.0))

    study = optuna.load_study(study_name="tiny", storage=study_storage(directory))
    told = {trial.user_attrs[TUNE_TRIAL_ID]: trial for trial in study.trials}
    assert told["oom"].state == TrialState.COMPLETE and told["oom"].values == [0.7, 300.0]
    assert told["oom"].constraints["out_of_memory"] > 0 and told["oom"].user_attrs["failure"] == OUT_OF_MEMORY
    assert told["nan_guard"].values == [0.0, 0.0] and told["nan_guard"].constraints["diverged"] > 0
    assert told["nan_epoch"].state == TrialState.COMPLETE and told["nan_epoch"].constraints["diverged"] > 0
    assert told["nan_epoch"].user_attrs["failure_reason"] == "loss is nan at epoch 1"
    assert told["bug"].state == TrialState.FAIL  # a bug says nothing about its region
    # Infeasible trials never make Optuna's front, although the OOM trial's figures would dominate.
    assert [trial.user_attrs[TUNE_TRIAL_ID] for trial in study.best_trials] == ["fine"]


def test_tpe_counts_a_failed_trial_among_its_bad_trials(sweep, tmp_path):  # noqa: F811
    from optuna.samplers._tpe.sampler import _split_trials

    directory = tmp_path / "sweep"
    search = _search(sweep, directory)
    for trial_id in ("oom", "fine"):
        search.suggest(trial_id)
    record_failure(directory / TRIALS_DIR / "oom", "CUDA out of memory", "CUDA out of memory")
    search.on_trial_complete("oom", None, error=True)
    search.on_trial_complete("fine", _result(2))
    study = optuna.load_study(study_name="tiny", storage=study_storage(directory))
    below, above = _split_trials(study, study.trials, n_below=1)
    assert [trial.user_attrs[TUNE_TRIAL_ID] for trial in below] == ["fine"]
    assert [trial.user_attrs[TUNE_TRIAL_ID] for trial in above] == ["oom"]


def test_the_table_says_which_trials_ran_out_of_memory_or_diverged(tmp_path):
    record_failure(tmp_path / "a", "torch.OutOfMemoryError: CUDA out of memory", "CUDA out of memory")
    assert read_failure(tmp_path / "a") == {"kind": OUT_OF_MEMORY, "reason": "CUDA out of memory"}
    table = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "status": ["error", "stopped", "stopped", "completed"],
            "stop_reason": ["CUDA out of memory", "loss is nan at epoch 2", "plateau: ...", ""],
        }
    )
    assert mark_failures(table, tmp_path)["failure"].tolist() == [OUT_OF_MEMORY, DIVERGED, "", ""]


def test_a_failure_recorded_in_object_storage_teaches_the_searcher_of_such_a_sweep(sweep, tmp_path, s3_bucket):  # noqa: F811
    from tsmoe.sweep.object_storage import join, upload

    sweep.config.storage = join(s3_bucket, "sweeps")
    search = _search(sweep, tmp_path / "driver")
    search.suggest("oom")
    search.on_trial_result("oom", _result(1, auroc=0.7, samples_s=300.0))
    record_failure(tmp_path / "staging", "torch.OutOfMemoryError: CUDA out of memory", "CUDA out of memory")
    upload(
        tmp_path / "staging" / "failure.jsonl",
        str(join(s3_bucket, "sweeps", "tiny", TRIALS_DIR, "oom", "failure.jsonl")),
    )
    search.on_trial_complete("oom", None, error=True)
    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "driver"))
    assert study.trials[0].constraints["out_of_memory"] > 0
    assert read_failure(join(s3_bucket, "sweeps", "tiny", TRIALS_DIR, "oom")) == {
        "kind": OUT_OF_MEMORY,
        "reason": "CUDA out of memory",
    }
