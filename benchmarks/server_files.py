"""Server-metric recordings, one machine per file pair: a dataset for the per-machine path.

Each of 8 machines has 38 metrics driven by 5 slow latent loads (one with a daily cycle), mixed by a matrix of
the machine's own, plus noise; four metrics are integer counters and four are constant, as in server-metric
datasets. `train/machine-N.csv` is normal operation, `test/machine-N.csv` a labelled recording of the same
machine with four anomalies in four metrics each: a level shift, a flat line or a burst of noise. The metrics
of a machine move together, so an anomaly breaks their relation more than it makes any one metric hard to
forecast: the case PCA is built for.

    python benchmarks/server_files.py OUT
    tsmoe data from-csv DATA --train OUT/train/*.csv --test OUT/test/*.csv --label-column label \\
        --val-fraction 0.3 --segment-length 256 --stride 64
    tsmoe train CONFIG        # configs/quickstart.yaml with data.path set to DATA
    tsmoe evaluate RUN/best_model --data DATA --split test \\
        --baselines moving_variance first_difference pca isolation_forest kmeans
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

MACHINES, METRICS, LOADS, ROWS = 8, 38, 5, 3000
COUNTERS = slice(30, 34)
CONSTANT = slice(34, 38)
DAY_ROWS = 288  # one row every five minutes


def _recording(rng: np.random.Generator, mixing: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Metrics [METRICS, ROWS] of one machine: AR(1) loads mixed by the machine's matrix, plus noise."""
    loads = np.zeros((LOADS, ROWS))
    persistence = rng.uniform(0.9, 0.99, LOADS)
    for row in range(1, ROWS):
        loads[:, row] = persistence * loads[:, row - 1] + rng.normal(size=LOADS) * 0.3
    loads[0] += np.sin(np.arange(ROWS) * 2 * np.pi / DAY_ROWS)
    metrics = mixing @ loads + offsets[:, None] + rng.normal(size=(METRICS, ROWS)) * 0.2
    metrics[COUNTERS] = np.round(metrics[COUNTERS])
    metrics[CONSTANT] = 1.0
    return metrics


def _inject(rng: np.random.Generator, metrics: np.ndarray) -> np.ndarray:
    """Four anomalies in place, each in four of the varying metrics; returns the row labels [ROWS]."""
    labels = np.zeros(ROWS, dtype=int)
    for _ in range(4):
        start, duration = int(rng.integers(200, ROWS - 300)), int(rng.integers(30, 200))
        window, chosen = slice(start, start + duration), rng.choice(COUNTERS.start, 4, replace=False)
        kind = rng.integers(0, 3)
        if kind == 0:  # a level shift
            metrics[chosen, window] += rng.normal(size=(4, 1)) * 2
        elif kind == 1:  # a flat line at the value it had
            metrics[chosen, window] = metrics[chosen, start : start + 1]
        else:  # a burst of noise
            metrics[chosen, window] += rng.normal(size=(4, duration)) * 1.5
        labels[window] = 1
    return labels


def write_server_files(out: Path, seed: int = 0) -> None:
    """OUT/train/machine-N.csv and OUT/test/machine-N.csv for every machine; the same seed, the same files."""
    rng = np.random.default_rng(seed)
    columns = [f"metric_{index}" for index in range(METRICS)]
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    for machine in range(MACHINES):
        mixing, offsets = rng.normal(size=(METRICS, LOADS)), rng.normal(size=METRICS) * 3
        normal = _recording(rng, mixing, offsets)
        labelled = _recording(rng, mixing, offsets)
        labels = _inject(rng, labelled)
        pd.DataFrame(normal.T, columns=columns).to_csv(
            out / "train" / f"machine-{machine}.csv", index=False, float_format="%.4f"
        )
        frame = pd.DataFrame(labelled.T, columns=columns)
        frame["label"] = labels
        frame.to_csv(out / "test" / f"machine-{machine}.csv", index=False, float_format="%.4f")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a new directory for the CSV files")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.out.exists() and any(arguments.out.iterdir()):
        raise SystemExit(f"{arguments.out}: exists and is not empty; give a new directory")
    write_server_files(arguments.out, arguments.seed)
    print(f"wrote {MACHINES} machines' train/ and test/ files to {arguments.out}")


if __name__ == "__main__":
    main()
