"""`tsmoe evaluate`: a trained model's detection figures beside the baselines'.

The detector is the `evaluation` section of a run config. When MODEL sits in a run directory
(`RUN/model`, `RUN/best_model`), `RUN/config.yaml`'s section is the default, so the figures match the
training log; where that section has alternatives, training chose one of them on validation and saved it
beside the model (`MODEL/evaluation.yaml`), and that one is the default; otherwise the defaults of
`EvaluationConfig`. Options given on the command line override
single fields of it, and the output says where the settings came from. The same file's `data.views` says
which series the model trained on (the spectral view adds some), and the model is scored on the same ones.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from tsmoe.cli.progress import Progress
from tsmoe.config import load_detector, load_run_config
from tsmoe.data.check import check_dataset
from tsmoe.data.config import DataConfig
from tsmoe.data.store import SegmentDataset, open_dataset
from tsmoe.data.views import SeriesViews, describe_views, fit_views
from tsmoe.evaluation.config import BASELINE_NAMES, EvaluationConfig
from tsmoe.evaluation.evaluate import evaluate_detectors, rows_with_figures
from tsmoe.model.checkpoint import load_pretrained
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE

RUN_CONFIG_FILE = "config.yaml"
# Command-line options that override a field of the evaluation section of the same name.
OVERRIDES = (
    "heads",
    "error",
    "error_direction",
    "channel_aggregate",
    "forecast_weight",
    "cross_channel_weight",
    "density_weight",
    "density_layer",
    "normal_reference",
    "reconstruction_weight",
    "smoothing_window",
    "context_window",
    "segment_aggregate",
    "segment_quantile",
    "baselines",
)


def _number_or(keyword: str, expected: str) -> Callable[[str], str | int]:
    """An option's parser of a whole number or `keyword`; its error says the value is not `expected`."""

    def parse(text: str) -> str | int:
        if text == keyword:
            return text
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


# --density-layer: final or a layer number; --context-window: a number of points, or all (the whole segment).
_density_layer = _number_or("final", "final or a layer number (0 for the embedding)")
_context_window = _number_or("all", "a number of points or all")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    evaluate = commands.add_parser("evaluate", help="score a split with a trained model and the baselines")
    evaluate.add_argument("model", type=Path, help="a checkpoint directory (config.json + weights), e.g. RUN/model")
    evaluate.add_argument("--data", type=Path, required=True, help="a dataset directory")
    evaluate.add_argument("--split", default="val", choices=["val", "test"])
    evaluate.add_argument(
        "--config", type=Path, help="a run config whose evaluation section to use (default: RUN/config.yaml)"
    )
    evaluate.add_argument("--heads", type=int, nargs="+", help="horizons whose errors score points")
    evaluate.add_argument("--error", choices=["squared", "absolute"])
    evaluate.add_argument("--error-direction", choices=["upper", "both"])
    evaluate.add_argument("--channel-aggregate", choices=["mean", "max"])
    evaluate.add_argument("--forecast-weight", type=float)
    evaluate.add_argument("--cross-channel-weight", type=float)
    evaluate.add_argument("--density-weight", type=float)
    evaluate.add_argument(
        "--density-layer",
        type=_density_layer,
        help="states the density reads: final, 0 (the input embedding) or a decoder layer's number",
    )
    evaluate.add_argument(
        "--normal-reference",
        choices=["all", "run"],
        help="what the density and the baselines compare a run with: all training data, or its own normal rows",
    )
    evaluate.add_argument("--reconstruction-weight", type=float, help="needs a model trained with reconstruction")
    evaluate.add_argument("--smoothing-window", type=int)
    evaluate.add_argument(
        "--context-window",
        type=_context_window,
        help="points each attention layer lets a point's forecast and state see, or all (the whole segment)",
    )
    evaluate.add_argument("--segment-aggregate", choices=["max", "mean", "quantile"])
    evaluate.add_argument("--segment-quantile", type=float)
    evaluate.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINE_NAMES,
        help="baselines to report beside the model (default: every one; none with an empty list)",
    )
    evaluate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    evaluate.add_argument("--json", type=Path, help="also write the table here as JSON records")
    evaluate.set_defaults(run=run_evaluate)


def evaluation_settings(model: Path, config: Path | None) -> tuple[EvaluationConfig, str]:
    """The evaluation section to start from and where it came from: --config, the detector training chose on
    validation (MODEL/evaluation.yaml), RUN/config.yaml, or defaults."""
    chosen = model / CHOSEN_DETECTOR_FILE
    if config is None and chosen.is_file():
        return load_detector(chosen), f"{chosen}, the one of the run's candidate detectors that validation chose"
    path = config if config is not None else model.resolve().parent / RUN_CONFIG_FILE
    if config is None and not path.is_file():
        return EvaluationConfig(), "the default evaluation settings"
    # As the run's training validated with it: a weight its objective cannot use is left out.
    settings = load_run_config(path).detector_settings()
    source = f"the evaluation section of {path}"
    if settings.alternatives:
        # Choosing needs labelled validation data; the test split must not choose its own detector.
        source += f" as written (its {len(settings.alternatives)} alternatives are chosen among by training)"
    return settings.model_copy(update={"alternatives": []}), source


def trained_views(model: Path, config: Path | None, dataset: SegmentDataset) -> tuple[SeriesViews, str]:
    """The views the model trained with (the data section of --config or RUN/config.yaml; the time series
    alone without either), fitted on the dataset's training split, and a line that says which."""
    path = config if config is not None else model.resolve().parent / RUN_CONFIG_FILE
    data = load_run_config(path).data if path.is_file() else DataConfig()
    views = fit_views(data, dataset.split("train"), dataset.normalization)
    described = describe_views(views, data)
    if described == "time":
        return views, "views: time"
    return views, f"views: {described} from {path}"


def run_evaluate(args: argparse.Namespace) -> int:
    """Check the inputs, score the split and print the table."""
    base, source = evaluation_settings(args.model, args.config)
    given = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    if given.get("context_window") == "all":
        given["context_window"] = None
    config = EvaluationConfig.model_validate(base.model_dump() | given)
    check_dataset(args.data)
    dataset = open_dataset(args.data)
    dataset.split(args.split)
    model = load_pretrained(args.model).to(args.device)
    missing = sorted(set(config.heads) - set(model.config.horizon_lengths))
    if missing:
        raise ValueError(f"--heads {missing}: the model in {args.model} has horizons {model.config.horizon_lengths}")
    if not config.density_layer_fits(model.config.num_hidden_layers):
        raise ValueError(
            f"evaluation.density_layer {config.density_layer}: the model in {args.model} has "
            f"{model.config.num_hidden_layers} decoder layers (0 is the input embedding)"
        )
    views, views_source = trained_views(args.model, args.config, dataset)
    print(f"detector: {source}" + (f", with {', '.join(sorted(given))} from the command line" if given else ""))
    print(views_source)
    bars: dict[str, Progress] = {}
    table = evaluate_detectors(
        dataset,
        args.split,
        config,
        model,
        progress=lambda stage, done, total: bars.setdefault(stage, Progress(f"scoring {stage}"))(done, total),
        views=views,
    )
    print(f"{args.data} ({args.split} split), model {args.model}:")
    # A row of NaN says nothing, so a level without figures is named instead; --json keeps its rows.
    shown, left_out = rows_with_figures(table)
    if not shown.empty:
        print(shown.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    for level in left_out:
        print(f"{level} level left out: no run holds both classes there, so it has no AUROC")
    if args.json is not None:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")
    return 0
