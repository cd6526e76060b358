"""Experiment trackers for a sweep's trials, through Ray Tune's own logger callbacks.

    loggers: [tensorboard, mlflow]        # in a sweep definition
    mlflow_tracking_uri: null             # MLflow's store: SWEEP/mlflow.db, artifacts in SWEEP/mlruns

`mlflow` gives one MLflow run per trial (named after the Tune trial) in the experiment named after the
sweep, with the trial's sampled parameters and every epoch's metrics (step = epoch), through
`ray.air.integrations.mlflow.MLflowLoggerCallback`; it needs the `mlflow` extra (`pip install
'tsmoe[mlflow]'`). The local default is a SQLite store in the sweep directory, which MLflow recommends
(its plain-file store is in maintenance mode and refused unless MLFLOW_ALLOW_FILE_STORE is set), with the
runs' artifacts under SWEEP/mlruns; `mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db` shows them.

`tensorboard` writes TensorBoard event files into each trial's Tune folder (`tensorboard --logdir SWEEP`),
through `ray.tune.logger.TBXLoggerCallback`. (Tune adds that callback by itself when tensorboardX is
installed and TUNE_DISABLE_AUTO_CALLBACK_LOGGERS is not set; naming it makes it explicit.)
"""

from __future__ import annotations

from pathlib import Path

from tsmoe.sweep.definition import SweepConfig

MLFLOW_DATABASE, MLRUNS_DIR = "mlflow.db", "mlruns"


def mlflow_tracking_uri(config: SweepConfig) -> str:
    """Where the sweep's MLflow runs go: the definition's URI, or a SQLite store in the sweep directory."""
    return config.mlflow_tracking_uri or f"sqlite:///{Path(config.directory).resolve() / MLFLOW_DATABASE}"


def _ensure_mlflow_experiment(config: SweepConfig) -> None:
    """Create the sweep's MLflow experiment with its artifacts in SWEEP/mlruns, unless the store has it:
    Tune's callback would otherwise create it with artifacts under the current directory."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_tracking_uri(config))
    if client.get_experiment_by_name(config.name) is None:
        artifacts = None if config.mlflow_tracking_uri else (Path(config.directory).resolve() / MLRUNS_DIR).as_uri()
        client.create_experiment(config.name, artifact_location=artifacts)


def logger_callbacks(config: SweepConfig) -> list:
    """Tune callbacks for the trackers the definition names (none by default)."""
    callbacks: list = []
    if "tensorboard" in config.loggers:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if "mlflow" in config.loggers:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        _ensure_mlflow_experiment(config)
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=mlflow_tracking_uri(config), experiment_name=config.name, tags={"tsmoe_sweep": config.name}
            )
        )
    return callbacks
