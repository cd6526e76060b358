"""Detection quality: train a small Time-MoE on normal data and score labeled runs beside the baselines.

By default it builds the SKAB dataset (../shared/data/SKAB) the way the README shows: the anomaly-free
file and the first 400 rows of every labeled run train; the rest of each run is cut into overlapping
windows of 256 points, normalised by the run's own normal rows. It then trains a small Time-MoE with the
training loop, scores every point by forecast error, and prints point AUROC per run for the model and
each baseline, with means per group of runs (valve1, valve2, other) and overall.

    python benchmarks/detection.py                      # SKAB, about 5 minutes on 2 CPU cores
    python benchmarks/detection.py --data DIR --split test
    python benchmarks/detection.py --markdown docs/detection_skab.md

Published point AUROC on SKAB for reference (TAB benchmark, PVLDB 2025, per-run protocol): k-means 0.882,
PCA 0.859, TranAD 0.837, autoencoder 0.825, foundation models zero-shot 0.58-0.62.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tsmoe.cli.progress import Progress
from tsmoe.config import RunConfig
from tsmoe.data.check import check_dataset
from tsmoe.data.config import DataConfig
from tsmoe.data.from_csv import CsvLayout, csv_to_dataset
from tsmoe.data.store import SegmentDataset, open_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.evaluate import MODEL_NAME, measure, model_point_scores, score_detectors
from tsmoe.evaluation.grouping import point_groups
from tsmoe.evaluation.metrics import detection_metrics, has_both_classes
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.loop import fit

DEFAULT_SKAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "SKAB" / "data"


def build_skab(skab: Path, out: Path, segment_length: int, stride: int, normal_prefix: int) -> None:
    """SKAB as a tsmoe dataset: anomaly-free file and run prefixes train, the labeled rest validates."""
    if not skab.is_dir():
        raise SystemExit(f"{skab}: SKAB data folder not found (give --skab DIR or --data DIR)")
    runs = sorted(path for group in ("valve1", "valve2", "other") for path in (skab / group).glob("*.csv"))
    layout = CsvLayout(separator=";", time_column="datetime", label_column="anomaly", ignore_columns=["changepoint"])
    csv_to_dataset(
        out,
        train_files=[skab / "anomaly-free" / "anomaly-free.csv"],
        val_files=runs,
        layout=layout,
        segment_length=segment_length,
        stride=stride,
        normal_prefix=normal_prefix,
    )


def per_run_auroc(scores: dict[str, np.ndarray], dataset: SegmentDataset, split_name: str) -> pd.DataFrame:
    """Point AUROC of every detector on every run that holds both classes: one row per run."""
    split = dataset.split(split_name)
    labels = np.asarray(split.labels)
    names = dataset.meta.run_names or ["all"]
    rows: dict[str, dict[str, float]] = {}
    for detector, point_scores in scores.items():
        run_ids = np.unique(split.runs) if split.runs is not None else [0]
        for run_id, (run_scores, run_labels) in zip(
            run_ids, point_groups(point_scores, labels, split.runs, split.starts), strict=True
        ):
            if has_both_classes(run_labels, run_scores):
                rows.setdefault(names[run_id], {})[detector] = detection_metrics(run_scores, run_labels).auroc
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    return table


def group_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC per group of runs (the folder in a run's name) and over all runs."""
    groups = table.groupby([name.split("/")[0] if "/" in name else "all" for name in table.index]).mean()
    groups.loc["overall"] = table.mean()
    return groups


def train_model(directory: Path, arguments: argparse.Namespace) -> tuple[TimeMoE, float]:
    """A small Time-MoE trained on the dataset's training split; returns it and the seconds it took."""
    run = RunConfig(
        model=TimeMoEConfig(
            hidden_size=arguments.hidden_size,
            intermediate_size=4 * arguments.hidden_size,
            num_hidden_layers=arguments.layers,
            num_attention_heads=4,
            num_experts=arguments.experts,
            num_experts_per_tok=2,
            horizon_lengths=[1, 8, 32],
            router_init_std=0.002,
        ),
        data=DataConfig(path=directory, batch_size=arguments.batch_size, num_workers=0, seed=arguments.seed),
        training=TrainingConfig(
            epochs=arguments.epochs,
            learning_rate=arguments.learning_rate,
            warmup_steps=20,
            seed=arguments.seed,
            log_every_steps=10**9,
        ),
    )
    started = time.perf_counter()
    model, _ = fit(
        run,
        on_epoch=lambda metrics: print(
            f"epoch {metrics['epoch']}: loss {metrics['loss']:.4f}, {metrics['samples_s']:.1f} segments/s",
            file=sys.stderr,
        ),
    )
    return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an existing dataset directory instead of SKAB")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--skab", type=Path, default=DEFAULT_SKAB, help="SKAB's data/ folder")
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--normal-prefix", type=int, default=400)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--head-sets",
        nargs="+",
        default=["1", "1,8", "1,8,32"],
        help="score the model once per set of horizons (comma-separated), each as its own row",
    )
    parser.add_argument("--channel-aggregate", choices=["mean", "max"], default="mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the tables here as Markdown")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    with tempfile.TemporaryDirectory() as temporary:
        directory = arguments.data
        if directory is None:
            directory = Path(temporary) / "skab"
            build_skab(arguments.skab, directory, arguments.segment_length, arguments.stride, arguments.normal_prefix)
        check_dataset(directory)
        dataset = open_dataset(directory)
        model, train_seconds = train_model(directory, arguments)
        config = EvaluationConfig(seed=arguments.seed, channel_aggregate=arguments.channel_aggregate)
        split = dataset.split(arguments.split)
        scores, bars = {}, {}
        for head_set in arguments.head_sets:
            heads = [int(head) for head in head_set.split(",")]
            scores[f"{MODEL_NAME} heads {head_set}"] = model_point_scores(
                model,
                dataset,
                split,
                config.model_copy(update={"heads": heads}),
                progress=lambda stage, done, total, head_set=head_set: bars.setdefault(
                    (head_set, stage), Progress(f"heads {head_set}: scoring {stage}")
                )(done, total),
            )
        scores.update(score_detectors(dataset, arguments.split, config))
        summary = pd.DataFrame(
            [row for name, point_scores in scores.items() for row in measure(name, point_scores, split, config).rows()]
        )
        runs = per_run_auroc(scores, dataset, arguments.split) if split.label_level == "point" else None

    source = "SKAB" if arguments.data is None else str(arguments.data)
    header = (
        f"{source}, {arguments.split} split; Time-MoE hidden {arguments.hidden_size}, {arguments.layers} layers, "
        f"{arguments.experts} experts, {arguments.epochs} epochs in {train_seconds:.0f} s; channels combined by "
        f"{arguments.channel_aggregate}; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print(header)
    print(summary.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    if runs is not None:
        print("\npoint AUROC per group of runs (mean over runs):")
        print(group_means(runs).to_string(float_format=lambda value: f"{value:.3f}"))
        print("\npoint AUROC per run:")
        print(runs.to_string(float_format=lambda value: f"{value:.3f}"))
    if arguments.markdown is not None:

        def block(table: pd.DataFrame, index: bool = True) -> str:
            return "```text\n" + table.to_string(index=index, float_format=lambda value: f"{value:.3f}") + "\n```"

        parts = [f"{header}\n", block(summary, index=False)]
        if runs is not None:
            parts += [
                "\nPoint AUROC, mean per group of runs:\n",
                block(group_means(runs)),
                "\nPoint AUROC per run:\n",
                block(runs),
            ]
        arguments.markdown.write_text("\n".join(parts) + "\n")
    if arguments.json is not None:
        figures = {
            "header": header,
            "summary": summary.to_dict(orient="records"),
            "per_run": None if runs is None else runs.to_dict(orient="index"),
        }
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
