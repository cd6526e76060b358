"""`tsmoe evaluate`: a trained model's detection figures beside the baselines'."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tsmoe.cli.progress import Progress
from tsmoe.data.check import check_dataset
from tsmoe.data.store import open_dataset
from tsmoe.evaluation.config import BASELINE_NAMES, EvaluationConfig
from tsmoe.evaluation.evaluate import evaluate_detectors
from tsmoe.model.checkpoint import load_pretrained


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    evaluate = commands.add_parser("evaluate", help="score a split with a trained model and the baselines")
    evaluate.add_argument("model", type=Path, help="a checkpoint directory (config.json + weights)")
    evaluate.add_argument("--data", type=Path, required=True, help="a dataset directory")
    evaluate.add_argument("--split", default="val", choices=["val", "test"])
    evaluate.add_argument("--heads", type=int, nargs="+", default=[1], help="horizons whose errors score points")
    evaluate.add_argument("--error", choices=["squared", "absolute"], default="squared")
    evaluate.add_argument("--channel-aggregate", choices=["mean", "max"], default="mean")
    evaluate.add_argument("--segment-aggregate", choices=["max", "mean", "quantile"], default="quantile")
    evaluate.add_argument("--segment-quantile", type=float, default=0.99)
    evaluate.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINE_NAMES,
        default=list(BASELINE_NAMES),
        help="baselines to report beside the model (none with an empty list)",
    )
    evaluate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    evaluate.add_argument("--json", type=Path, help="also write the table here as JSON records")
    evaluate.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Check the inputs, score the split and print the table."""
    config = EvaluationConfig(
        heads=args.heads,
        error=args.error,
        channel_aggregate=args.channel_aggregate,
        segment_aggregate=args.segment_aggregate,
        segment_quantile=args.segment_quantile,
        baselines=args.baselines,
    )
    check_dataset(args.data)
    dataset = open_dataset(args.data)
    dataset.split(args.split)
    model = load_pretrained(args.model).to(args.device)
    missing = sorted(set(config.heads) - set(model.config.horizon_lengths))
    if missing:
        raise ValueError(f"--heads {missing}: the model in {args.model} has horizons {model.config.horizon_lengths}")
    bars: dict[str, Progress] = {}
    table = evaluate_detectors(
        dataset,
        args.split,
        config,
        model,
        progress=lambda stage, done, total: bars.setdefault(stage, Progress(f"scoring {stage}"))(done, total),
    )
    print(f"{args.data} ({args.split} split), model {args.model}:")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    if args.json is not None:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")
    return 0
