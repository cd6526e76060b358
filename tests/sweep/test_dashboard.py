"""optuna-dashboard on a sweep's study: it answers real HTTP requests on loopback, and the command exists."""

from __future__ import annotations

import json
import threading
import urllib.request

import optuna
import pytest

from tsmoe.cli.main import main
from tsmoe.sweep.dashboard import LOOPBACK, dashboard_server
from tsmoe.sweep.searcher import study_storage


def test_the_dashboard_serves_the_sweeps_study_on_loopback(tmp_path):
    study = optuna.create_study(study_name="tiny", storage=study_storage(tmp_path), directions=["maximize"] * 2)
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 2)}, values=[0.8, 100.0]
        )
    )
    server = dashboard_server(tmp_path, port=0)  # any free port
    assert server.server_address[0] == LOOPBACK
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as response:
            studies = json.loads(response.read())["study_summaries"]
        assert [entry["study_name"] for entry in studies] == ["tiny"]
        with urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=30) as response:
            detail = json.loads(response.read())
        assert [trial["values"] for trial in detail["trials"]] == [[0.8, 100.0]]
        with urllib.request.urlopen(f"{base}/dashboard", timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_directory_without_a_study_is_refused(tmp_path, capsys):
    assert main(["optuna-dashboard", str(tmp_path), "--port", "0"]) == 2
    assert "no optuna.db" in capsys.readouterr().err


def test_the_command_has_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["optuna-dashboard", "--help"])
    assert exited.value.code == 0
    assert "--port" in capsys.readouterr().out
