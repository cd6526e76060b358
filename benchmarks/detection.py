"""Detection quality: train the config's Time-MoE on normal data and score labeled data beside the baselines.

The detector is the config's `evaluation` section, scored as one row `time-moe` per level: no variant is
picked on the data it is scored on. Data, one of:

- SKAB (default; ../shared/data/SKAB), under one of two protocols:
  `prefix`: the anomaly-free file and the first 400 rows of every run train, each file normalised by its
  own normal rows, the rest of each run is scored; `anomaly_free`: only the anomaly-free file trains,
  every file is normalised by its statistics and every row of every run is scored.
  All 34 runs are scored (as the dataset's validation split: training runs a fixed number of epochs and
  chooses nothing on it). Metrics are point AUROC per run, averaged over runs.
- a UCR anomaly series (`--ucr FILE`, named ..._TRAINEND_BEGIN_END.txt): the first TRAINEND points train.
- motor-current files labelled per file (`--motor-files`, benchmarks/motor_files.py): 20 normal files train,
  48 labelled ones (half faulty, a fault lasting the whole file) are split 30/70 into validation and test
  files; metrics are AUROC over files, with a table per fault kind.
- any dataset directory (`--data DIR --split test`), e.g. the built-in synthetic set.

    python benchmarks/detection.py --skab-protocol prefix --json docs/figures/detection_skab_prefix.json
    python benchmarks/detection.py --data data/synthetic --split test

Published point AUROC on SKAB for reference (TAB benchmark, PVLDB 2025, per-run protocol): k-means 0.882,
PCA 0.859, TranAD 0.837, autoencoder 0.825, foundation models zero-shot 0.58-0.62.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.machine import cpu_model
from benchmarks.motor_files import build_motor_files, fault_kind_auroc
from tsmoe.config import RunConfig, load_run_config, with_field
from tsmoe.data.check import check_dataset
from tsmoe.data.from_csv import CsvLayout, csv_to_dataset
from tsmoe.data.store import SegmentDataset, open_dataset
from tsmoe.data.views import SeriesViews, describe_views, fit_views
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.evaluate import MODEL_NAME, choose_detector, measure, rows_with_figures, score_detectors
from tsmoe.evaluation.grouping import point_groups
from tsmoe.evaluation.metrics import detection_metrics, has_both_classes
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SKAB = ROOT.parent / "shared" / "data" / "SKAB" / "data"
DEFAULT_CONFIG = ROOT / "configs" / "detection_cpu.yaml"
SKAB_LAYOUT = CsvLayout(separator=";", time_column="datetime", label_column="anomaly", ignore_columns=["changepoint"])


def build_skab(
    skab: Path,
    out: Path,
    protocol: str,
    segment_length: int,
    stride: int,
    normal_prefix: int,
    val_fraction: float | None = None,
    seed: int = 0,
) -> None:
    """SKAB as a tsmoe dataset under one protocol: every labeled run lands in the validation split, or, with
    `val_fraction`, that seeded share of the runs validates and the rest is the test split."""
    if not skab.is_dir():
        raise SystemExit(f"{skab}: SKAB data folder not found (give --skab DIR or --data DIR)")
    runs = sorted(path for group in ("valve1", "valve2", "other") for path in (skab / group).glob("*.csv"))
    csv_to_dataset(
        out,
        train_files=[skab / "anomaly-free" / "anomaly-free.csv"],
        val_files=runs if val_fraction is None else [],
        test_files=runs if val_fraction is not None else [],
        val_fraction=val_fraction,
        seed=seed,
        layout=SKAB_LAYOUT,
        segment_length=segment_length,
        stride=stride,
        normal_prefix=normal_prefix if protocol == "prefix" else 0,
        normalize="run" if protocol == "prefix" else "train",
    )


def build_ucr(series: Path, out: Path, segment_length: int, stride: int) -> None:
    """A UCR anomaly series (one value per line) as a dataset: its training part trains, the rest validates."""
    train_end, begin, end = (int(part) for part in series.stem.split("_")[-3:])
    values = np.loadtxt(series)
    labels = np.zeros(len(values), dtype=int)
    labels[begin - 1 : end] = 1  # the name's indices count from 1
    csv = out.with_suffix(".csv")
    pd.DataFrame({"value": values, "anomaly": labels}).to_csv(csv, index=False)
    csv_to_dataset(
        out,
        train_files=[],
        val_files=[csv],
        layout=CsvLayout(label_column="anomaly"),
        segment_length=segment_length,
        stride=stride,
        normal_prefix=train_end,
    )


def per_run_auroc(scores: dict[str, np.ndarray], dataset: SegmentDataset, split_name: str) -> pd.DataFrame:
    """Point AUROC of every detector on every run that holds both classes: one row per run."""
    split = dataset.split(split_name)
    labels = np.asarray(split.labels)
    names = dataset.meta.run_names or ["all"]
    rows: dict[str, dict[str, float]] = {}
    run_ids = np.unique(split.runs) if split.runs is not None else [0]
    for detector, point_scores in scores.items():
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


def detector_for(
    model: TimeMoE, dataset: SegmentDataset, run: RunConfig, scored_split: str, views: SeriesViews
) -> tuple[EvaluationConfig, str]:
    """The config's detector, as training would choose it: among the evaluation section and its alternatives,
    the best on the validation split when the dataset has one apart from the scored split (the section as
    written otherwise). Returns it and a line saying what was chosen and on what."""
    settings = run.detector_settings()
    if not settings.alternatives:
        return settings, "the evaluation section"
    if scored_split == "val" or "val" not in dataset.splits:
        return settings.candidates()[0], "the evaluation section as written (no validation split to choose on)"
    choice = choose_detector(model, dataset, settings, "val", views)
    figures = ", ".join(f"{result.headline[1].auroc:.3f}" for result in choice.results)
    return choice.config, f"candidate {choice.index} of {len(choice.results)}, chosen on validation (AUROC {figures})"


def train_model(run: RunConfig) -> tuple[TimeMoE, float]:
    """The config's Time-MoE trained on the dataset's training split; returns it and the seconds it took."""
    started = time.perf_counter()
    model, _ = fit(
        run,
        on_epoch=lambda metrics: print(
            f"epoch {metrics['epoch']}: loss {metrics['loss']:.4f}, {metrics['samples_s']:.1f} segments/s, "
            f"busiest expert's share of top-k choices {metrics.get('routing_max_load_share', float('nan')):.2f}",
            file=sys.stderr,
        ),
    )
    return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="run config: model, training, detector")
    parser.add_argument("--data", type=Path, help="an existing dataset directory instead of SKAB")
    parser.add_argument("--ucr", type=Path, help="a UCR anomaly series instead of SKAB")
    parser.add_argument(
        "--motor-files", action="store_true", help="motor-current files labelled per file instead of SKAB"
    )
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--skab", type=Path, default=DEFAULT_SKAB, help="SKAB's data/ folder")
    parser.add_argument("--skab-protocol", choices=["prefix", "anomaly_free"], default="prefix")
    parser.add_argument("--segment-length", type=int, default=256, help="for SKAB and UCR")
    parser.add_argument("--stride", type=int, default=64, help="for SKAB and UCR")
    parser.add_argument("--normal-prefix", type=int, default=400, help="for SKAB's prefix protocol")
    parser.add_argument(
        "--val-fraction",
        type=float,
        help="for SKAB: this seeded share of the runs validates (the config's alternatives are chosen on it) and "
        "the rest is scored as the test split",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one field of the config, e.g. evaluation.density_layer=0 (repeatable)",
    )
    parser.add_argument("--epochs", type=int, help="override the config's training.epochs")
    parser.add_argument("--seed", type=int, help="override the config's training and data seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here: records as `tsmoe evaluate --json`")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    run = load_run_config(arguments.config)
    for assignment in arguments.set:
        run = with_field(run, assignment)
    if arguments.epochs is not None:
        run.training.epochs = arguments.epochs
    if arguments.seed is not None:
        run.training.seed = run.data.seed = arguments.seed
    with tempfile.TemporaryDirectory() as temporary:
        directory = arguments.data
        if arguments.ucr is not None:
            source = arguments.ucr.name
            directory = Path(temporary) / "ucr"
            build_ucr(arguments.ucr, directory, arguments.segment_length, arguments.stride)
        elif arguments.motor_files:
            source = "motor-current files labelled per file"
            directory = Path(temporary) / "motor"
            build_motor_files(directory)  # seed 0 whatever --seed says: every seed scores the same files
            arguments.split = "test"
        elif directory is None:
            source = f"SKAB, {arguments.skab_protocol} protocol"
            directory = Path(temporary) / "skab"
            build_skab(
                arguments.skab,
                directory,
                arguments.skab_protocol,
                arguments.segment_length,
                arguments.stride,
                arguments.normal_prefix,
                arguments.val_fraction,  # split with seed 0 whatever --seed says: every seed scores the same runs
            )
            if arguments.val_fraction is not None:
                arguments.split = "test"
        else:
            source = str(directory)
        check_dataset(directory)
        dataset = open_dataset(directory)
        run.data.path = directory
        model, train_seconds = train_model(run)
        views = fit_views(run.data, dataset.split("train"), dataset.normalization)  # the series it trained on
        described_views = describe_views(views, run.data)
        config, choice = detector_for(model, dataset, run, arguments.split, views)
        split = dataset.split(arguments.split)
        scores = score_detectors(dataset, arguments.split, config, model, views=views)
        records = [
            row for name, point_scores in scores.items() for row in measure(name, point_scores, split, config).rows()
        ]
        summary = pd.DataFrame(records)
        runs = per_run_auroc(scores, dataset, arguments.split) if split.label_level == "point" else None
        kinds = fault_kind_auroc(scores, dataset, arguments.split, config) if arguments.motor_files else None

    model_config = run.model
    header = (
        f"{source}, {arguments.split} split; config {arguments.config.name}"
        + (f" with {', '.join(arguments.set)}" if arguments.set else "")
        + f": Time-MoE hidden "
        f"{model_config.hidden_size}, {model_config.num_hidden_layers} layers, {model_config.num_experts} experts, "
        f"{run.training.epochs} epochs in {train_seconds:.0f} s; {cpu_model()}, "
        f"{arguments.threads} threads, torch {torch.__version__}"
    )
    print(header)
    print(f"views: {described_views}")
    print(f"detector: {choice}")
    shown, left_out = rows_with_figures(summary)
    print(shown.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    for level in left_out:
        print(f"{level} level left out: no run holds both classes there, so it has no AUROC")
    if runs is not None and len(runs) > 1:
        print("\npoint AUROC per group of runs (mean over runs):")
        print(group_means(runs).to_string(float_format=lambda value: f"{value:.3f}"))
    if kinds is not None:
        print("\nfile AUROC over the healthy files and one fault kind's:")
        print(kinds.to_string(float_format=lambda value: f"{value:.3f}"))
    if arguments.json is not None:
        figures = {
            "header": header,
            "detector": MODEL_NAME,
            "evaluation": config.model_dump(mode="json"),
            "detector_choice": choice,
            "train_seconds": train_seconds,
            "records": records,
            "per_run": None if runs is None else runs.to_dict(orient="index"),
            "per_fault_kind": None if kinds is None else kinds.to_dict(orient="index"),
        }
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
