"""`tsmoe model ...`: inspect model shapes and checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsmoe.model.checkpoint import load_config
from tsmoe.model.config import PRESETS, preset


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `model` subcommand group."""
    model = commands.add_parser("model", help="inspect Time-MoE shapes and checkpoints")
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="print a config and its total and active parameter counts")
    source = info.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PRESETS), default="TimeMoE-50M")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint directory (reads its config.json only)")
    info.add_argument("--fields", action="store_true", help="also list every config field")
    info.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print the config fields and parameter counts without building the model."""
    if args.checkpoint is not None:
        config, name = load_config(args.checkpoint), str(args.checkpoint)
    else:
        config, name = preset(args.preset), args.preset
    total, active = config.parameter_counts()
    print(f"{name}: {total / 1e6:.1f}M parameters, {active / 1e6:.1f}M active per token")
    if args.fields:
        for field, value in config.model_dump().items():
            print(f"  {field}: {value}")
    return 0
