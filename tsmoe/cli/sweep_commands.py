"""`tsmoe sweep`, `tsmoe report` and `tsmoe export`: run a sweep, read its results, take a config out."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsmoe.cli.progress import Progress


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `sweep`, `report` and `export` commands."""
    from tsmoe.sweep.policies import POLICIES

    sweep = commands.add_parser("sweep", help="run a Ray Tune + Optuna sweep defined in sweeps/NAME.yaml")
    sweep.add_argument("definition", type=Path, help="a sweep definition (see sweeps/)")
    sweep.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep already in the definition's directory (after a crash or a kill; "
        "finished trials are kept), or start it when there is none",
    )
    sweep.add_argument(
        "--warm-start",
        type=Path,
        action="append",
        default=[],
        metavar="OLD_SWEEP_DIR",
        help="start the study from an earlier sweep's finished trials that fit this space (repeatable)",
    )
    sweep.add_argument(
        "--verbose", action="store_true", help="show Tune's own output instead of tsmoe's compact live table"
    )
    sweep.set_defaults(run=run_sweep_command)

    report = commands.add_parser(
        "report",
        help="print a sweep's Pareto front and rebuild its table and plots; for a run directory, plot its expert loads",
    )
    report.add_argument(
        "directory", type=Path, help="a sweep directory (the definition's storage/name), or a `tsmoe train` output"
    )
    report.set_defaults(run=run_report_command)

    export = commands.add_parser("export", help="write one trial's config for `tsmoe train`")
    export.add_argument("directory", type=Path, help="the sweep directory (the definition's storage/name)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the config file to write")
    export.add_argument(
        "--policy",
        choices=POLICIES,
        default="knee",
        help="best_auroc (above --min-throughput), best_throughput (above --min-auroc), or knee "
        "(the Pareto front's knee; default)",
    )
    export.add_argument("--min-throughput", type=float, help="floor on the sweep's throughput objective")
    export.add_argument("--min-auroc", type=float, help="floor on the best validation AUROC")
    export.add_argument("--force", action="store_true", help="replace the output file if it exists")
    export.add_argument(
        "--verify-seeds",
        type=int,
        metavar="N",
        help="retrain the chosen trial with N new seeds (at least 2) as Ray trials and print the spread of "
        "both objectives beside the front; warns when its lead over a neighbour is within that spread "
        "(results in SWEEP/verify_seeds_TRIAL)",
    )
    export.add_argument("--address", help="with --verify-seeds: join this Ray cluster instead of starting a local one")
    export.set_defaults(run=run_export_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    """Check the definition, run the sweep and print where its results are."""
    from tsmoe.sweep.definition import load_sweep

    sweep = load_sweep(args.definition, address=args.address, progress=Progress("synthesizing segments"))
    for earlier in args.warm_start:
        if not (earlier / "optuna.db").is_file():
            raise FileNotFoundError(f"--warm-start {earlier}: not a sweep directory (no optuna.db)")
    from tsmoe.sweep.records import format_front  # Ray is imported only once the definition is known good
    from tsmoe.sweep.runner import run_sweep, summary_lines

    outcome = run_sweep(sweep, resume=args.resume, warm_start=args.warm_start, verbose=args.verbose)
    throughput = sweep.config.objectives.throughput
    print(summary_lines(outcome.table, throughput))
    print(outcome.hypervolume)
    print("Pareto front (best validation AUROC against " + throughput + "):")
    print(format_front(outcome.front, throughput))
    print(f"results: {outcome.directory} (trials.csv, pareto.csv, pareto.png, pareto.html, optuna.db)")
    print(f"export:  tsmoe export {outcome.directory} -o best.yaml")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    """Print the front and rebuild the results of a sweep directory; for a run directory, draw its expert loads."""
    from tsmoe.sweep.runner import STORED_SWEEP, report
    from tsmoe.training.expert_loads import METRICS_FILE, PLOT_FILE, plot_expert_loads

    if (args.directory / METRICS_FILE).is_file() and not (args.directory / STORED_SWEEP).is_file():
        path = plot_expert_loads(
            args.directory / METRICS_FILE, args.directory / PLOT_FILE, title=args.directory.resolve().name
        )
        print(f"written: {path}")
        return 0

    outcome = report(args.directory)
    print(f"written: {', '.join(sorted(path.name for path in outcome.plots.values()))}, trials.csv, pareto.csv")
    return 0


def run_export_command(args: argparse.Namespace) -> int:
    """Write the chosen trial's config; with --verify-seeds, retrain it with new seeds and show the spread."""
    from tsmoe.sweep.export import export_trial
    from tsmoe.sweep.verify import check_seed_count

    if args.verify_seeds is not None:
        check_seed_count(args.verify_seeds)  # before anything is written or Ray starts
    elif args.address is not None:
        raise ValueError("--address: only used by --verify-seeds, which retrains the chosen trial on that cluster")
    exported = export_trial(
        args.directory,
        args.output,
        args.policy,
        min_throughput=args.min_throughput,
        min_auroc=args.min_auroc,
        overwrite=args.force,
    )
    origin = exported.origin
    figures = ", ".join(f"{name} {value:.4g}" for name, value in origin.metrics.items())
    print(f"{exported.path}: trial {origin.trial_id} ({args.policy}): {figures}")
    print(f"train it with: tsmoe train {exported.path}")
    if args.verify_seeds is not None:
        from tsmoe.sweep.runner import read_stored_sweep
        from tsmoe.sweep.verify import verify_pick

        stored = read_stored_sweep(args.directory)
        run = exported.config.model_copy(update={"origin": None})
        verification = verify_pick(
            stored, exported.table, exported.trial, run, args.policy, args.verify_seeds, address=args.address
        )
        print(verification.lines(stored.config.objectives.throughput))
    return 0
