"""`tsmoe optuna-dashboard SWEEP_DIR`: serve optuna-dashboard on a sweep's study, on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `optuna-dashboard` command."""
    dashboard = commands.add_parser(
        "optuna-dashboard",
        help="serve optuna-dashboard on a sweep's Optuna study (127.0.0.1 only)",
        description="Serve optuna-dashboard on SWEEP_DIR/optuna.db at http://127.0.0.1:PORT until Ctrl-C; "
        "it works while the sweep runs. From another machine: ssh -L PORT:127.0.0.1:PORT HOST.",
    )
    dashboard.add_argument("directory", type=Path, help="the sweep directory (the definition's storage/name)")
    dashboard.add_argument("--port", type=int, default=8080, help="the port on 127.0.0.1 (default 8080; 0: any)")
    dashboard.set_defaults(run=run_dashboard_command)


def run_dashboard_command(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    from tsmoe.sweep.dashboard import dashboard_server

    server = dashboard_server(args.directory, args.port)
    print(f"optuna-dashboard: http://127.0.0.1:{server.server_port} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
