"""`tsmoe` entry point: one subcommand group per stage of the flow."""

from __future__ import annotations

import argparse
import sys

from tsmoe.cli import (
    dashboard_command,
    data_commands,
    evaluate_command,
    model_commands,
    sweep_commands,
    train_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="tsmoe", description="Time-MoE anomaly detectors: train, sweep, export.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_commands.register(commands)
    model_commands.register(commands)
    evaluate_command.register(commands)
    train_command.register(commands)
    sweep_commands.register(commands)
    dashboard_command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen command; errors print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, OSError) as error:  # missing or existing files, a full disk, a busy sweep directory
        print(f"tsmoe {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
