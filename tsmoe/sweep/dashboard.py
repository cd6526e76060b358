"""optuna-dashboard on a sweep's study (SWEEP/optuna.db), served on loopback only.

The study holds every trial's parameters, objectives, constraints and failures; optuna-dashboard shows
its Pareto front, hypervolume, parameter importances and history live while the sweep runs. Binding to
127.0.0.1 keeps it off the network (the dashboard can also edit the study); reach it from elsewhere
through an SSH tunnel, as with the Ray dashboard.
"""

from __future__ import annotations

from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tsmoe.sweep.searcher import STUDY_FILE, study_storage

LOOPBACK = "127.0.0.1"


class _QuietHandler(WSGIRequestHandler):
    """Leaves one line per request out of the terminal: the dashboard polls every few seconds."""

    def log_message(self, format: str, *args) -> None:
        pass


def dashboard_server(directory: str | Path, port: int = 8080) -> WSGIServer:
    """A WSGI server of optuna-dashboard over the sweep's study, bound to 127.0.0.1:`port` (0: any free
    port; the chosen one is `server.server_port`). Call `serve_forever()` on it."""
    import optuna_dashboard

    directory = Path(directory).resolve()
    if not (directory / STUDY_FILE).is_file():
        raise FileNotFoundError(f"{directory}: no {STUDY_FILE}; a sweep directory is the definition's storage/name")
    application = optuna_dashboard.wsgi(study_storage(directory))
    return make_server(LOOPBACK, port, application, handler_class=_QuietHandler)
