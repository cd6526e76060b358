"""What one validation costs: a trained run's candidate detectors scored on its validation split, timed.

Training validates after every epoch by scoring each candidate detector of the config (`evaluation.alternatives`)
on the validation split; with many series (38 metrics plus their residual series) that takes longer than the
epoch's training on a CPU. A detector that weighs only input-embedding density reads no forecast error, so it
skips the decoder layers (`tsmoe.evaluation.detector.reads_forecast_errors`). This script times the same
validation both ways, the forward pass forced for every detector and as shipped, and checks that both give
the same figures.

    PYTHONPATH=. .venv/bin/python benchmarks/validation_cost.py RUN/best_model --data DATA [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.machine import cpu_model
from tsmoe.config import load_run_config
from tsmoe.data.store import open_dataset
from tsmoe.data.views import describe_views, fit_views
from tsmoe.evaluation import detector
from tsmoe.evaluation.evaluate import validation_metrics
from tsmoe.model.timemoe import TimeMoE


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="RUN/model or RUN/best_model; RUN/config.yaml gives the detector")
    parser.add_argument("--data", type=Path, required=True, help="the dataset the run trained on")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def _timed(model: TimeMoE, dataset, settings, split: str, views) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    metrics = validation_metrics(model, dataset, settings, split, views)
    return time.perf_counter() - started, metrics


def main() -> None:
    """Time one validation with and without the embedding-only path and print both."""
    arguments = _arguments()
    torch.set_num_threads(arguments.threads)
    run = load_run_config(arguments.model.resolve().parent / "config.yaml")
    dataset = open_dataset(arguments.data)
    model = TimeMoE.from_pretrained(arguments.model).eval()
    views = fit_views(run.data, dataset.split("train"), dataset.normalization)  # the series it trained on
    settings = run.detector_settings()
    with mock.patch.object(detector, "reads_forecast_errors", lambda config: True):
        forced, forced_metrics = _timed(model, dataset, settings, arguments.split, views)
    shipped, shipped_metrics = _timed(model, dataset, settings, arguments.split, views)
    same = all(
        math.isclose(forced_metrics[name], shipped_metrics[name], rel_tol=1e-4, abs_tol=1e-6)
        or (math.isnan(forced_metrics[name]) and math.isnan(shipped_metrics[name]))
        for name in shipped_metrics
    )
    figures = {
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": arguments.threads,
        "series": views.series_count(dataset.meta.num_channels),
        "views": describe_views(views, run.data),
        "candidates": len(settings.candidates()),
        "segments": len(dataset.split(arguments.split)),
        "seconds_forward_for_every_detector": round(forced, 1),
        "seconds_as_shipped": round(shipped, 1),
        "same_figures": same,
        "val_auroc": shipped_metrics[f"{arguments.split}_auroc"],
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not same:
        raise SystemExit("the two ways gave different figures")


if __name__ == "__main__":
    main()
