"""`tsmoe export`: one trial's config, chosen by a policy, as a run config `tsmoe train` reproduces.

The file is the trial's own resolved config (the one its run was trained with, read from its run
directory) plus an `origin` section naming the sweep, the trial, the policy and the trial's figures.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tsmoe.config import RunConfig, SweepOrigin, dump_run_config, load_run_config
from tsmoe.sweep.pareto import MEMORY, OUTPUT, QUALITY, TRIAL_ID
from tsmoe.sweep.policies import choose_trial
from tsmoe.sweep.stopping import EPOCH
from tsmoe.training.launch import CONFIG_FILE

# Figures recorded in the exported file's origin, when the trial reported them.
ORIGIN_METRICS = (
    QUALITY,
    "val_auroc",
    "val_auprc",
    "samples_s",
    "tokens_s",
    "it_s",
    MEMORY,
    "loss",
    EPOCH,
)


@dataclass
class Exported:
    """What `export_trial` wrote."""

    path: Path
    trial: pd.Series
    config: RunConfig
    origin: SweepOrigin  # also in config.origin, typed here as always set
    table: pd.DataFrame  # the sweep's trials, the chosen one among them


def export_trial(
    directory: str | Path,
    out: str | Path,
    policy: str,
    min_throughput: float | None = None,
    min_auroc: float | None = None,
    overwrite: bool = False,
) -> Exported:
    """Choose a trial of the sweep in `directory` by `policy` and write its config to `out`."""
    from tsmoe.sweep.records import trials_table
    from tsmoe.sweep.runner import read_stored_sweep

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists; choose another -o path, or pass --force to replace it")
    stored = read_stored_sweep(directory)
    throughput = stored.config.objectives.throughput
    # The table alone: choosing a trial needs no plots (`tsmoe report` rebuilds those).
    table = trials_table(stored.directory, stored.config, stored.epochs)
    trial = choose_trial(table, policy, throughput=throughput, min_throughput=min_throughput, min_auroc=min_auroc)
    run = load_run_config(Path(trial[OUTPUT]) / CONFIG_FILE)
    metrics = {
        name: float(trial[name])
        for name in ORIGIN_METRICS
        if name in trial and isinstance(trial[name], numbers.Real) and math.isfinite(trial[name])
    }
    resources = stored.config.resources
    origin = SweepOrigin(
        sweep=str(stored.directory),
        trial_id=str(trial[TRIAL_ID]),
        policy=policy,
        metrics=metrics,
        workers=resources.workers,
        cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
    )
    run.origin = origin
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    dump_run_config(run, staging)
    staging.replace(out)
    return Exported(out, trial, run, origin, table)
