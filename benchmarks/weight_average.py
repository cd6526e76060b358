"""Does a weight average steady validation AUROC? The same training with and without `training.ema_decay`.

Trains the config on each dataset twice per seed (no average; the average with `--decay`), validates every
epoch, and prints the validation AUROC per epoch with two steadiness figures: the mean absolute change
from one epoch to the next, and the spread (std) over the second half of training.

    python benchmarks/weight_average.py --ucr ../shared/data/UCR/*.txt --epochs 20
    python benchmarks/weight_average.py --data data/synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.detection import DEFAULT_CONFIG, build_ucr
from benchmarks.machine import cpu_model
from tsmoe.config import RunConfig, load_run_config
from tsmoe.training.loop import fit


def validation_curve(run: RunConfig) -> list[float]:
    """Validation AUROC after every epoch of one training."""
    _, history = fit(run, validate=True)
    return [float(metrics["val_auroc"]) for metrics in history]


def steadiness(curve: list[float]) -> dict[str, float]:
    """Mean absolute epoch-to-epoch change, std over the second half, and the last value of a curve."""
    values = np.asarray(curve)
    return {
        "mean_change": float(np.abs(np.diff(values)).mean()) if len(values) > 1 else 0.0,
        "late_std": float(values[len(values) // 2 :].std()),
        "final": float(values[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="dataset directories with a val split")
    parser.add_argument("--ucr", type=Path, nargs="*", default=[], help="UCR anomaly series (their tail validates)")
    parser.add_argument("--decay", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, help="override the config's training.epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    if not arguments.data and not arguments.ucr:
        parser.error("give --data DIR ... and/or --ucr FILE ...")
    torch.set_num_threads(arguments.threads)
    print(
        f"{arguments.config.name}, decay {arguments.decay}, seeds {arguments.seeds}; "
        f"{cpu_model()}, {arguments.threads} threads, torch {torch.__version__}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        datasets = list(arguments.data)
        for series in arguments.ucr:
            directory = Path(temporary) / series.stem
            build_ucr(series, directory, segment_length=256, stride=64)
            datasets.append(directory)
        for directory in datasets:
            for seed in arguments.seeds:
                for decay in (0.0, arguments.decay):
                    run = load_run_config(arguments.config)
                    run.data.path = directory
                    run.training.seed = run.data.seed = seed
                    run.training.ema_decay = decay
                    if arguments.epochs is not None:
                        run.training.epochs = arguments.epochs
                    curve = validation_curve(run)
                    row = {"data": directory.name, "seed": seed, "ema_decay": decay, "curve": curve}
                    row.update(steadiness(curve))
                    rows.append(row)
                    print(
                        f"{directory.name[:40]:40s} seed {seed} ema {decay:<5} change {row['mean_change']:.3f} "
                        f"late std {row['late_std']:.3f} final {row['final']:.3f}  "
                        + " ".join(f"{value:.2f}" for value in curve),
                        flush=True,
                    )
    for decay in (0.0, arguments.decay):
        chosen = [row for row in rows if row["ema_decay"] == decay]
        print(
            f"ema_decay {decay}: mean change {np.mean([row['mean_change'] for row in chosen]):.3f}, "
            f"late std {np.mean([row['late_std'] for row in chosen]):.3f}, "
            f"final {np.mean([row['final'] for row in chosen]):.3f} (mean over {len(chosen)} trainings)"
        )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
