"""The results of a sweep: one table row per trial, the Pareto front and the plots, from what is on disk.

Everything is rebuilt from the sweep directory (Tune's experiment state, each trial's checkpoints, the
stop ledger), so `tsmoe report` works on a finished, interrupted or copied sweep without Ray running.
Building the table only reads; writing the results (`write_results`, after a sweep and on `tsmoe report`)
also gives each trial stopped mid-run the outputs a finished run has, from its checkpoints.

    SWEEP/trials.csv, trials.parquet   every trial: status, stop reason, parameters, last and best figures,
                                       and the worst routing health over its epochs (worst.*)
    SWEEP/pareto.csv                   the front of completed, feasible trials
    SWEEP/pareto.png, pareto.html, parallel_coordinates.html, importance.png, importance.html
    SWEEP/expert_loads.png             per-expert load shares of the knee trial, epoch by epoch (`tsmoe report`)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tsmoe.sweep.definition import SweepConfig
from tsmoe.sweep.failures import mark_failures
from tsmoe.sweep.object_storage import is_uri, join
from tsmoe.sweep.pareto import (
    COMPLETED,
    ERROR,
    MEMORY,
    OUTPUT,
    PARAM_PREFIX,
    PENDING,
    QUALITY,
    RUNNING,
    STATUS,
    STOP_REASON,
    STOPPED,
    TRIAL_ID,
    mark_feasibility,
    parameter_columns,
    pareto_front,
)
from tsmoe.sweep.stopping import COLLAPSE, EPOCH, EPOCHS_PLANNED, StopLedger
from tsmoe.sweep.trial import TRIALS_DIR
from tsmoe.training.checkpoint_files import SUMMARY_FILE
from tsmoe.training.epoch_choice import kept_epoch
from tsmoe.training.launch import latest_checkpoint

TRIALS_CSV, TRIALS_PARQUET, PARETO_CSV = "trials.csv", "trials.parquet", "pareto.csv"
EXPERT_LOADS_PLOT = "expert_loads.png"  # the per-expert loads of the knee trial, drawn by `tsmoe report`
BEST_PREFIX = "best."
# Tune's bookkeeping keys in a trial's results: not figures of the run.
_TUNE_KEYS = {
    "trial_id",
    "timestamp",
    "date",
    "pid",
    "hostname",
    "node_ip",
    "done",
    "training_iteration",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "should_checkpoint",
    "checkpoint_path",
    "config",
}
_BEST_FIGURES = (EPOCH, "val_auroc", "val_auprc", "val_best_f1", "loss")
WORST_PREFIX = "worst."
# Routing health at the trial's worst epoch, beside the last epoch's: a collapse that the last epoch
# hides (or that early stopping ended) stays visible. Figure -> whether its worst is the max.
_WORST_FIGURES = {"routing_max_load_share": True, "routing_entropy_min": False}


def complete_stopped_outputs(directory: str | Path) -> list[Path]:
    """Give every trial stopped mid-run (by the scheduler, a stopper or the time budget) the outputs a
    finished run has, from its checkpoints: metrics.jsonl, model/ and best_model/. A trial that finished
    wrote them itself when it ended; a stopped one was ended before it could. Returns the runs completed."""
    from tsmoe.training.launch import METRICS_FILE, collect_outputs

    completed = []
    for output in sorted((Path(directory) / TRIALS_DIR).glob("*")):
        if latest_checkpoint(output) is not None and not (output / METRICS_FILE).is_file():
            collect_outputs(output)
            completed.append(output)
    return completed


def fetch_experiment(experiment: str, directory: Path) -> list[Path]:
    """Bring the local sweep directory up to date with a sweep kept in object storage at `experiment`:
    Tune's experiment and every trial's run. Checkpoints are fetched only for runs without metrics.jsonl
    (a stopped trial's outputs are completed from them here, then put back into the storage). Returns the
    runs completed."""
    from tsmoe.sweep.object_storage import download, list_files
    from tsmoe.sweep.trial import put_run_files
    from tsmoe.training.launch import METRICS_FILE, RUN_NAME

    files = list_files(experiment)
    finished = {relative.split("/")[1] for relative in files if relative.endswith(f"/{METRICS_FILE}")}

    def skip(relative: str) -> bool:
        parts = relative.split("/")
        return len(parts) > 3 and parts[0] == TRIALS_DIR and parts[1] in finished and parts[2] == RUN_NAME

    def announce(count: int, size: int) -> None:
        print(f"fetching {count} files ({size / 2**20:.1f} MiB) of the sweep from {experiment} into {directory}")

    download(experiment, directory, skip, announce, files)
    completed = complete_stopped_outputs(directory)
    for output in completed:
        put_run_files(output, str(join(experiment, TRIALS_DIR, output.name)))
    return completed


def _history(output: Path) -> list[dict]:
    """Every epoch's metrics of a trial's run, from its latest checkpoint (also for a stopped trial), or from
    its metrics.jsonl where that holds more epochs (a run fetched from object storage without checkpoints)."""
    from tsmoe.training.launch import METRICS_FILE

    checkpoint = latest_checkpoint(output)
    history = json.loads((checkpoint / SUMMARY_FILE).read_text())["history"] if checkpoint is not None else []
    metrics = output / METRICS_FILE
    if metrics.is_file():
        written = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if len(written) > len(history):
            return written
    return history


def worst_routing(history: list[dict]) -> dict[str, float]:
    """`worst.` routing figures over a run's epochs: the highest load share and the lowest entropy."""
    worst = {}
    for figure, highest in _WORST_FIGURES.items():
        values = [epoch[figure] for epoch in history if math.isfinite(epoch.get(figure, math.nan))]
        if values:
            worst[WORST_PREFIX + figure] = max(values) if highest else min(values)
    return worst


def _error_line(trial) -> str:
    path = Path(trial.path or "") / "error.txt"
    if not path.is_file():
        return "error (no error file)"
    from tsmoe.training.launch import failure_summary

    return failure_summary(path.read_text())


def _status(trial, epochs: int, planned: int, reasons: dict[str, str]) -> tuple[str, str]:
    if trial.status == "ERROR":
        return ERROR, _error_line(trial)
    if trial.status == "TERMINATED":
        reason = reasons.get(trial.trial_id, "")
        # A trial whose routing collapsed is stopped even at its last epoch: it never counts as completed.
        if epochs >= planned and not reason.startswith(COLLAPSE):
            return COMPLETED, ""
        return STOPPED, reason or "stopped by the sweep's time budget"
    if trial.status in ("RUNNING", "PAUSED"):
        return RUNNING, ""
    return PENDING, ""


def trials_table(directory: str | Path, config: SweepConfig, planned_epochs: int) -> pd.DataFrame:
    """One row per trial of the sweep in `directory`, with feasibility marked against its constraints."""
    from ray.tune import ExperimentAnalysis

    directory = Path(directory).resolve()  # Tune reads a relative path as a URI without a scheme
    trials = ExperimentAnalysis(str(directory)).trials
    reasons = StopLedger(directory).reasons()
    rows = []
    for trial in trials:
        result = trial.last_result or {}
        output = directory / TRIALS_DIR / trial.trial_id
        epochs, planned = int(result.get(EPOCH, 0)), int(result.get(EPOCHS_PLANNED, planned_epochs))
        status, reason = _status(trial, epochs, planned, reasons)
        row = {
            TRIAL_ID: trial.trial_id,
            STATUS: status,
            STOP_REASON: reason,
            "epochs": epochs,
            EPOCHS_PLANNED: planned,
            OUTPUT: str(output),
        }
        row |= {PARAM_PREFIX + name: value for name, value in sorted((trial.config or {}).items())}
        row |= {
            key: value
            for key, value in result.items()
            if key not in _TUNE_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        history = _history(output)
        kept = kept_epoch(history)
        if kept is not None:
            best = next(epoch for epoch in history if epoch.get(EPOCH) == kept)
            row |= {BEST_PREFIX + key: best.get(key, math.nan) for key in _BEST_FIGURES}
        row |= worst_routing(history)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(
            columns=[
                TRIAL_ID,
                STATUS,
                STOP_REASON,
                "epochs",
                EPOCHS_PLANNED,
                OUTPUT,
                QUALITY,
                config.objectives.throughput,
            ]
        )
    for column in (QUALITY, config.objectives.throughput, MEMORY):
        if column not in table:
            table[column] = math.nan
    table = mark_feasibility(
        table, config.constraints.min_throughput, config.objectives.throughput, config.constraints.max_memory_mib
    )
    table = mark_failures(table, directory / TRIALS_DIR)
    return table.sort_values(TRIAL_ID, ignore_index=True)


def parquet_ready(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every column that mixes value types (a categorical parameter whose choices are `final`
    and 0, say) written as text, which Parquet's one type per column can hold; missing values stay missing."""
    mixed = [
        column
        for column in table.columns
        if table[column].dtype == object and len({type(value) for value in table[column].dropna()}) > 1
    ]
    if not mixed:
        return table
    ready = table.copy()
    for column in mixed:
        ready[column] = table[column].map(lambda value: None if _missing(value) else str(value))
    return ready


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_results(
    directory: str | Path, config: SweepConfig, planned_epochs: int, distributions=None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """Write the trial table, the Pareto front and the plots into the sweep directory, after completing the
    run outputs of the trials that were stopped."""
    from tsmoe.sweep.plots import write_plots

    directory = Path(directory)
    if is_uri(config.storage):
        fetch_experiment(str(config.experiment_location), directory)
    else:
        complete_stopped_outputs(directory)
    throughput = config.objectives.throughput
    table = trials_table(directory, config, planned_epochs)
    front = pareto_front(table, QUALITY, throughput)
    table.to_csv(directory / TRIALS_CSV, index=False)
    parquet_ready(table).to_parquet(directory / TRIALS_PARQUET, index=False)
    front.to_csv(directory / PARETO_CSV, index=False)
    plots = write_plots(table, directory, throughput=throughput, quality=QUALITY, distributions=distributions)
    return table, front, plots


def format_front(front: pd.DataFrame, throughput: str) -> str:
    """The Pareto front as a plain-text table: trial, objectives, memory and the sampled parameters."""
    if front.empty:
        return "no completed feasible trial yet: the Pareto front is empty"
    params = parameter_columns(front)
    # Routing health beside the objectives: the last epoch's and the worst epoch's (see _WORST_FIGURES).
    routing = [
        column for figure in _WORST_FIGURES for column in (figure, WORST_PREFIX + figure) if column in front.columns
    ]
    shown = front[[TRIAL_ID, QUALITY, throughput, MEMORY, *routing, *params]].copy()
    shown.columns = [column.removeprefix(PARAM_PREFIX) for column in shown.columns]
    return shown.to_string(index=False, float_format=lambda value: f"{value:.4g}")
