"""`tsmoe data ...`: build, check and describe segment datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsmoe.cli.progress import Progress
from tsmoe.data.check import check_dataset
from tsmoe.data.curriculum import NAMED_SCHEDULES
from tsmoe.data.from_csv import CsvLayout, csv_to_dataset
from tsmoe.data.meta import META_FILE
from tsmoe.data.store import update_normalization
from tsmoe.data.synth import generate_synthetic_dataset


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `data` subcommand group."""
    data = commands.add_parser("data", help="build, check and describe segment datasets")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")

    check = actions.add_parser("check", help="validate a dataset directory; exits non-zero naming every problem")
    check.add_argument("directory", type=Path)
    check.add_argument(
        "--crop-schedule",
        choices=sorted(NAMED_SCHEDULES),
        help="also check the segments are long enough for this schedule",
    )
    check.set_defaults(run=run_check)

    stats = actions.add_parser("stats", help="compute the training split's normalisation into meta.json")
    stats.add_argument("directory", type=Path)
    stats.set_defaults(run=run_stats)

    synth = actions.add_parser("synth", help="write the built-in synthetic three-phase motor-current dataset")
    synth.add_argument("out", type=Path, help="a new directory (an existing non-empty one is refused)")
    synth.add_argument("--train-segments", type=int, default=256)
    synth.add_argument("--val-segments", type=int, default=128)
    synth.add_argument("--test-segments", type=int, default=128, help="0 writes no test split")
    synth.add_argument(
        "--holdout-segments", type=int, default=0, help="normal segments held out of training to measure normal scores"
    )
    synth.add_argument("--segment-length", type=int, default=2048)
    synth.add_argument("--sampling-rate", type=float, default=1000.0, help="Hz")
    synth.add_argument(
        "--anomaly-fraction", type=float, default=0.5, help="share of validation and test segments that carry a fault"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=run_synth)

    from_csv = actions.add_parser(
        "from-csv", help="cut CSV runs into a dataset by sliding windows, normalised by normal rows"
    )
    from_csv.add_argument("out", type=Path, help="a new directory (an existing non-empty one is refused)")
    from_csv.add_argument(
        "--train",
        nargs="*",
        type=Path,
        default=[],
        help="files of normal data only; one named as a labeled file (train/NAME, test/NAME) is that run's own",
    )
    from_csv.add_argument("--val", nargs="*", type=Path, default=[], help="labeled runs for validation")
    from_csv.add_argument("--test", nargs="*", type=Path, default=[], help="labeled runs for testing")
    from_csv.add_argument(
        "--val-fraction",
        type=float,
        help="instead of --val: this share of the --test runs (whole runs, seeded by --seed) validates",
    )
    from_csv.add_argument("--separator", default=",")
    from_csv.add_argument("--time-column", help="a column to drop (timestamps)")
    from_csv.add_argument("--channels", help="comma-separated channel columns (default: every numeric column)")
    from_csv.add_argument("--label-column", help="0/1 anomaly labels per row (needed for --val/--test files)")
    from_csv.add_argument(
        "--label-per-file",
        action="store_true",
        help="each labeled file is one sample with a constant label, scored as a whole (needs --normalize train)",
    )
    from_csv.add_argument("--ignore-columns", default="", help="comma-separated columns to drop")
    from_csv.add_argument(
        "--normal-prefix",
        type=int,
        default=0,
        help="rows at the start of each labeled run that are normal (train on them)",
    )
    from_csv.add_argument(
        "--normalize",
        choices=["run", "train"],
        default="run",
        help="run: each file by its own normal rows, or a labeled file without them by its namesake --train file "
        "(recordings of different machines); "
        "train: every file by the training rows' statistics (recordings of the same machine)",
    )
    from_csv.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="share at the end of each long enough normal part held out of training, to measure normal scores",
    )
    from_csv.add_argument("--segment-length", type=int, default=2048)
    from_csv.add_argument("--stride", type=int, help="window step (default: a quarter of the segment length)")
    from_csv.add_argument("--sampling-rate", type=float, default=1.0, help="Hz")
    from_csv.add_argument("--seed", type=int, default=0, help="seeds the choice of validation runs")
    from_csv.set_defaults(run=run_from_csv)


def _print_summary(directory: Path) -> None:
    for line in check_dataset(directory, progress=_check_progress()).lines():
        print(line)


def _check_progress():
    bars: dict[str, Progress] = {}

    def report(split: str, done: int, total: int) -> None:
        bars.setdefault(split, Progress(f"checking {split}"))(done, total)

    return report


def run_check(args: argparse.Namespace) -> int:
    """Validate a dataset and print what it holds."""
    summary = check_dataset(args.directory, crop_schedule=args.crop_schedule, progress=_check_progress())
    print(f"{args.directory}: OK")
    for line in summary.lines():
        print(line)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Compute and store the training normalisation statistics."""
    statistics = update_normalization(args.directory)
    print(f"{args.directory / META_FILE}: normalization mean={statistics.mean} std={statistics.std}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic dataset, then check it."""
    generate_synthetic_dataset(
        args.out,
        train_segments=args.train_segments,
        val_segments=args.val_segments,
        test_segments=args.test_segments,
        holdout_segments=args.holdout_segments,
        segment_length=args.segment_length,
        sampling_rate_hz=args.sampling_rate,
        anomaly_fraction=args.anomaly_fraction,
        seed=args.seed,
        progress=Progress("generating segments"),
    )
    print(f"wrote {args.out}")
    _print_summary(args.out)
    return 0


def _names(value: str | None) -> list[str] | None:
    return None if not value else [name.strip() for name in value.split(",") if name.strip()]


def run_from_csv(args: argparse.Namespace) -> int:
    """Convert CSV runs into a dataset, then check it."""
    layout = CsvLayout(
        separator=args.separator,
        time_column=args.time_column,
        channels=_names(args.channels),
        label_column=args.label_column,
        ignore_columns=_names(args.ignore_columns) or [],
    )
    csv_to_dataset(
        args.out,
        train_files=args.train,
        val_files=args.val,
        test_files=args.test,
        layout=layout,
        segment_length=args.segment_length,
        stride=args.stride or max(1, args.segment_length // 4),
        normal_prefix=args.normal_prefix,
        normalize=args.normalize,
        val_fraction=args.val_fraction,
        label_per_file=args.label_per_file,
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        sampling_rate_hz=args.sampling_rate,
        progress=Progress("reading files"),
    )
    print(f"wrote {args.out}")
    _print_summary(args.out)
    return 0
