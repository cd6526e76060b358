"""`tsmoe train CONFIG.yaml`: one training run under Ray Train, the same loop a sweep trial runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tsmoe.config import load_run_config
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE
from tsmoe.training.epoch_choice import describe_kept_epoch


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    train = commands.add_parser("train", help="train a Time-MoE with N DDP workers under Ray Train")
    train.add_argument("config", type=Path, help="a run config (see configs/), or an exported sweep config")
    train.add_argument(
        "--output", type=Path, help="run directory (default: runs/CONFIG_NAME); rerunning into it resumes the run"
    )
    train.add_argument(
        "--workers",
        type=int,
        help="DDP workers, one GPU each where there are GPUs (default: an exported trial's, else 1)",
    )
    train.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    train.add_argument(
        "--cpus-per-worker",
        type=int,
        help="CPUs per worker, a torch thread each on CPUs (default: an exported trial's, else all CPUs / workers)",
    )
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Validate the config and data, train, and say where the outputs are."""
    from tsmoe.training.launch import TrainingFailed, run_training  # imports Ray; config errors stay fast

    run = load_run_config(args.config)
    output = args.output or Path("runs") / args.config.stem
    # An exported sweep trial trains with the workers it had, so its global batch is the same, and on CPUs
    # with the CPUs (torch threads) each had, so its float reductions, and so its figures, are too.
    workers = args.workers if args.workers is not None else run.origin.workers if run.origin is not None else 1
    cpus_per_worker = args.cpus_per_worker
    if run.origin is not None:
        if cpus_per_worker is None and run.origin.gpus_per_worker == 0:
            cpus_per_worker = max(1, int(run.origin.cpus_per_worker))
        shown = f", {cpus_per_worker} CPU(s) each" if cpus_per_worker is not None else ""
        print(f"reproducing trial {run.origin.trial_id} of {run.origin.sweep} with {workers} worker(s){shown}")
    try:
        outcome = run_training(run, output, workers=workers, address=args.address, cpus_per_worker=cpus_per_worker)
    except TrainingFailed as error:
        print(f"tsmoe train: {error}", file=sys.stderr)
        return 1
    metrics = outcome.metrics
    print(
        f"trained {outcome.epochs} epochs: loss {metrics.get('loss', float('nan')):.4f}, "
        f"val_auroc {metrics.get('val_auroc', float('nan')):.3f}, {metrics.get('samples_s', float('nan')):.1f} "
        f"samples/s"
    )
    print(f"model: {outcome.model}")
    if outcome.best_model is not None:
        print(f"best model: {outcome.best_model}, {describe_kept_epoch(outcome.history)}")
    chosen = (outcome.best_model or outcome.model) / CHOSEN_DETECTOR_FILE
    if chosen.is_file():
        print(f"detector: {chosen}, the candidate validation chose (tsmoe evaluate scores with it)")
    print(f"metrics: {outcome.output / 'metrics.jsonl'}")
    return 0
