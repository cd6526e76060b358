"""Experiment trackers: one MLflow run per trial with its parameters and per-epoch metrics, in a real local store."""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback

from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.loggers import logger_callbacks, mlflow_tracking_uri


@pytest.fixture
def sweep_config(tmp_path):
    return load_sweep(
        write_sweep(tmp_path, synthetic_data(tmp_path / "data"), loggers=["tensorboard", "mlflow"])
    ).config


def test_no_tracker_unless_the_definition_names_one(tmp_path):
    config = load_sweep(write_sweep(tmp_path, synthetic_data(tmp_path / "data"))).config
    assert logger_callbacks(config) == []


@pytest.mark.slow  # MLflow creates and migrates its SQLite store: tens of seconds on a busy 2-core machine
def test_mlflow_gets_one_run_per_trial_with_its_parameters_and_every_epochs_metrics(sweep_config, tmp_path):
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    callbacks = logger_callbacks(sweep_config)
    assert [type(callback) for callback in callbacks] == [TBXLoggerCallback, MLflowLoggerCallback]
    tracker = callbacks[1]
    assert mlflow_tracking_uri(sweep_config) == f"sqlite:///{tmp_path / 'sweeps' / 'tiny' / 'mlflow.db'}"

    # What Tune does with the callback over a sweep of two trials of two epochs each.
    tracker.setup()
    trials = [Trial("run_trial", config={"data.batch_size": size}, trial_id=f"t{size}", stub=True) for size in (2, 4)]
    for trial in trials:
        tracker.log_trial_start(trial)
        for epoch in (1, 2):
            result = {"training_iteration": epoch, "epoch": epoch, "val_auroc": 0.5 + 0.1 * epoch, "loss": 1.0 / epoch}
            tracker.log_trial_result(epoch, trial, result)
        tracker.log_trial_end(trial)

    client = mlflow.MlflowClient(tracking_uri=mlflow_tracking_uri(sweep_config))
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.params["data.batch_size"] for run in runs) == ["2", "4"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["tsmoe_sweep"] == "tiny"
        history = client.get_metric_history(run.info.run_id, "val_auroc")
        assert [(point.step, round(point.value, 6)) for point in history] == [(1, 0.6), (2, 0.7)]
        assert run.info.artifact_uri.startswith((tmp_path / "sweeps" / "tiny" / "mlruns").as_uri())


def test_an_unknown_logger_names_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"field loggers\.0"):
        load_sweep(write_sweep(tmp_path, synthetic_data(tmp_path / "data"), loggers=["wandb"]))
