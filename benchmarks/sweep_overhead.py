"""Sweep overhead: time from launch to the first reported result, and each trial's fixed cost (Ray Train
start-up, worker processes, checkpoints, teardown) against its training time (its epochs, training and
validation).

    python benchmarks/sweep_overhead.py                          # sweeps/quickstart.yaml, about 5 minutes
    python benchmarks/sweep_overhead.py sweeps/NAME.yaml --json docs/figures/sweep_overhead_cpu.json

The sweep runs as `tsmoe sweep` runs it, into a temporary storage directory so no sweep of yours is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from benchmarks.machine import cpu_model
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.runner import run_sweep


class TrialClock(Callback):
    """Wall-clock times of every trial's start, results and end, as the Tune driver sees them."""

    def __init__(self):
        self.started, self.ended, self.first_result = {}, {}, None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.perf_counter())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.first_result = self.first_result or time.perf_counter()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("definition", nargs="?", type=Path, default=Path("sweeps/quickstart.yaml"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    # The machine may be shared: its load before and after goes with the figures.
    load_before = os.getloadavg()
    launched = time.perf_counter()
    sweep = load_sweep(args.definition)
    with tempfile.TemporaryDirectory() as storage:
        sweep.config.storage = Path(storage)
        clock = TrialClock()
        outcome = run_sweep(sweep, callbacks=[clock])
        finished = time.perf_counter()
        rows = []
        for _, trial in outcome.table.iterrows():
            history_path = Path(trial["output"]) / "metrics.jsonl"
            epochs = (
                [json.loads(line) for line in history_path.read_text().splitlines()] if history_path.is_file() else []
            )
            trial_id = trial["trial_id"]
            wall = clock.ended.get(trial_id, finished) - clock.started.get(trial_id, launched)
            training = sum(epoch.get("epoch_s", 0.0) for epoch in epochs)
            rows.append(
                {
                    "trial": trial_id,
                    "status": trial["status"],
                    "epochs": trial["epochs"],
                    "wall_s": wall,
                    "training_s": training,
                    "fixed_s": wall - training,
                }
            )
    table = pd.DataFrame(rows)
    figures = {
        "definition": str(args.definition),
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "cpu_model": cpu_model(),
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "trials": len(table),
        "workers_per_trial": sweep.config.resources.workers,
        "max_concurrent_trials": sweep.config.max_concurrent_trials,
        "total_s": round(finished - launched, 1),
        "launch_to_first_result_s": round(clock.first_result - launched, 1) if clock.first_result else None,
        "median_trial_wall_s": round(float(table["wall_s"].median()), 1),
        "median_trial_training_s": round(float(table["training_s"].median()), 1),
        "median_trial_fixed_s": round(float(table["fixed_s"].median()), 1),
        "fixed_share_of_trial_time": round(float(table["fixed_s"].sum() / table["wall_s"].sum()), 3),
    }
    print(table.to_string(index=False, float_format=lambda value: f"{value:.1f}"))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures | {"trials_detail": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
