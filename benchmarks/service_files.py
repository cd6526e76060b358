"""Service metrics, one entity per file pair: a dataset where normal operation is itself bursty and periodic.

The issue's second multi-channel dataset (19 metrics of application-server entities) was the one where Time-MoE
scored worst, two entities below chance, and moving variance best. This script writes data of that kind. Each
of 6 entities has 19 metrics driven by its own traffic (a daily cycle and slow noise), a periodic batch job and
a memory heap that grows and is collected; its metrics are request counts (Poisson), CPU, latencies with
heavy-tailed spikes in normal operation, the heap, sparse error counts and one constant. A labelled recording
of the same entity carries four anomalies, each in a group of metrics, drawn from (`OUT/anomalies.csv` lists
them, for figures per kind):

    jitter       noise of 0.6 to 1 times each metric's spread added to a group (a noisy neighbour; moving
                 variance's case)
    flat         the group stuck at the value it had (a stalled exporter: less error to forecast, not more)
    no_batch     the batch job stops (CPU flatter and more regular than normal)
    error_burst  error counts and latency up together, traffic unchanged

    python benchmarks/service_files.py OUT
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

ENTITIES, ROWS = 6, 3000
DAY_ROWS = 240
REQUESTS = slice(0, 5)
CPU = slice(5, 9)
LATENCY = slice(9, 13)
HEAP = slice(13, 15)
ERRORS = slice(15, 18)
CONSTANT = 18
METRICS = 19
KINDS = ("jitter", "flat", "no_batch", "error_burst")


def _drivers(rng: np.random.Generator, entity: dict[str, float]) -> dict[str, np.ndarray]:
    """Traffic, batch-job load and heap [ROWS] each, for one recording of an entity."""
    rows = np.arange(ROWS)
    slow = np.zeros(ROWS)
    for row in range(1, ROWS):
        slow[row] = 0.97 * slow[row - 1] + rng.normal() * 0.1
    traffic = 1.0 + entity["cycle"] * np.sin(2 * np.pi * (rows / DAY_ROWS + entity["phase"])) + slow
    batch = (((rows + rng.integers(0, 1000)) % int(entity["batch_period"])) < entity["batch_length"]).astype(float)
    heap = np.zeros(ROWS)
    for row in range(1, ROWS):
        grown = heap[row - 1] + entity["heap_growth"] * max(traffic[row], 0.1) + rng.normal() * 0.005
        heap[row] = grown if grown < 1.0 else 0.2 + rng.normal() * 0.02  # collected
    return {"traffic": traffic, "batch": batch, "heap": heap}


def _recording(rng: np.random.Generator, entity: dict[str, float], weights: np.ndarray) -> np.ndarray:
    """Metrics [METRICS, ROWS] of one recording of an entity."""
    driver = _drivers(rng, entity)
    traffic = np.clip(driver["traffic"], 0.05, None)
    metrics = np.zeros((METRICS, ROWS))
    metrics[REQUESTS] = rng.poisson(weights[REQUESTS, None] * 20 * traffic)
    metrics[CPU] = weights[CPU, None] * (30 * traffic + 25 * driver["batch"]) + rng.normal(size=(4, ROWS)) * 2 + 10
    spikes = rng.random((4, ROWS)) < 0.02
    metrics[LATENCY] = (
        weights[LATENCY, None] * (50 + 20 * traffic) * rng.lognormal(0, 0.15, (4, ROWS)) * np.where(spikes, 3, 1)
    )
    metrics[HEAP] = weights[HEAP, None] * 100 * driver["heap"] + rng.normal(size=(2, ROWS))
    metrics[ERRORS] = rng.poisson(0.05 * traffic, (3, ROWS))
    metrics[CONSTANT] = 4.0  # instances serving
    return metrics


def _inject(
    rng: np.random.Generator, metrics: np.ndarray, batch_free: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Four anomalies in place; returns the row labels [ROWS] and each anomaly's (start, stop, kind).
    `batch_free` is CPU as it would have been without the batch job."""
    labels = np.zeros(ROWS, dtype=int)
    anomalies = []
    for kind in rng.choice(KINDS, 4):
        start, duration = int(rng.integers(200, ROWS - 300)), int(rng.integers(30, 200))
        window = slice(start, start + duration)
        if kind == "jitter":
            group = rng.choice([REQUESTS, CPU, LATENCY][rng.integers(0, 3)].start + np.arange(4), 3, replace=False)
            spread = metrics[group].std(axis=1, keepdims=True)
            metrics[group, window] += rng.normal(size=(3, duration)) * spread * rng.uniform(0.6, 1.0)
        elif kind == "flat":
            group = rng.choice(CONSTANT, int(rng.integers(4, 9)), replace=False)
            metrics[group, window] = metrics[group, start : start + 1]
        elif kind == "no_batch":
            metrics[CPU, window] = batch_free[:, window]
        else:
            metrics[ERRORS, window] += rng.poisson(rng.uniform(1, 3), (3, duration))
            metrics[LATENCY, window] *= rng.uniform(1.3, 1.8)
        labels[window] = 1
        anomalies.append((start, start + duration, str(kind)))
    return labels, anomalies


def _entity(rng: np.random.Generator) -> tuple[dict[str, float], np.ndarray]:
    """One entity's character: its daily cycle, batch schedule, heap growth, and each metric's scale."""
    entity = {
        "cycle": float(rng.uniform(0.3, 0.7)),
        "phase": float(rng.uniform()),
        "batch_period": float(rng.integers(60, 140)),
        "batch_length": float(rng.integers(10, 30)),
        "heap_growth": float(rng.uniform(0.002, 0.01)),
    }
    return entity, rng.uniform(0.5, 2.0, METRICS)


def write_service_files(out: Path, seed: int = 0) -> None:
    """OUT/train/entity-N.csv and OUT/test/entity-N.csv for every entity, and OUT/anomalies.csv (file, start and
    stop row, kind of each anomaly, for figures per kind); the same seed, the same files."""
    rng = np.random.default_rng(seed)
    columns = [f"metric_{index}" for index in range(METRICS)]
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    anomalies = []
    for index in range(ENTITIES):
        entity, weights = _entity(rng)
        normal = _recording(rng, entity, weights)
        labelled_rng_state = rng.bit_generator.state
        labelled = _recording(rng, entity, weights)
        # The same draws with the batch job off: what CPU would have been had it stopped.
        rng_without = np.random.default_rng()
        rng_without.bit_generator.state = labelled_rng_state
        batch_free = _recording(rng_without, {**entity, "batch_length": 0.0}, weights)[CPU]
        labels, injected = _inject(rng, labelled, batch_free)
        anomalies += [(f"entity-{index}.csv", start, stop, kind) for start, stop, kind in injected]
        pd.DataFrame(normal.T, columns=columns).to_csv(
            out / "train" / f"entity-{index}.csv", index=False, float_format="%.4f"
        )
        frame = pd.DataFrame(labelled.T, columns=columns)
        frame["label"] = labels
        frame.to_csv(out / "test" / f"entity-{index}.csv", index=False, float_format="%.4f")
    pd.DataFrame(anomalies, columns=["file", "start", "stop", "kind"]).to_csv(out / "anomalies.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a new directory for the CSV files")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.out.exists() and any(arguments.out.iterdir()):
        raise SystemExit(f"{arguments.out}: exists and is not empty; give a new directory")
    write_service_files(arguments.out, arguments.seed)
    print(f"wrote {ENTITIES} entities' train/ and test/ files to {arguments.out}")


if __name__ == "__main__":
    main()
