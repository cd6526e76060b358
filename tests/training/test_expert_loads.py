"""The per-expert load plot: read from a run's metrics.jsonl, drawn by `tsmoe report RUN_DIR`."""

from __future__ import annotations

import json

import pytest

from tsmoe.cli.main import main
from tsmoe.training.expert_loads import PLOT_FILE, read_expert_loads


def _write_metrics(directory, epochs):
    lines = []
    for epoch, layers in enumerate(epochs, start=1):
        metrics = {"epoch": epoch, "loss": 0.5, "routing_max_load_share": max(max(shares) for shares in layers)}
        for layer, shares in enumerate(layers):
            metrics |= {f"routing_load_share_layer{layer}_expert{expert}": share for expert, share in enumerate(shares)}
        lines.append(json.dumps(metrics))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_loads_are_read_per_layer_per_epoch_per_expert(tmp_path):
    collapsed, balanced = [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]
    _write_metrics(tmp_path, [[collapsed, balanced], [balanced, [0.4, 0.2, 0.2, 0.2]]])
    epochs, loads = read_expert_loads(tmp_path / "metrics.jsonl")
    assert epochs == [1, 2]
    assert loads == [[collapsed, balanced], [balanced, [0.4, 0.2, 0.2, 0.2]]]


def test_a_run_without_per_expert_shares_is_named_with_what_is_missing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.5}) + "\n")
    with pytest.raises(ValueError, match="no per-expert load shares"):
        read_expert_loads(tmp_path / "metrics.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no metrics\.jsonl"):
        read_expert_loads(tmp_path / "missing" / "metrics.jsonl")


def test_report_on_a_run_directory_writes_its_expert_load_plot(tmp_path, capsys):
    run = tmp_path / "run"
    _write_metrics(run, [[[0.7, 0.1, 0.1, 0.1]], [[0.3, 0.2, 0.25, 0.25]]])
    assert main(["report", str(run)]) == 0
    assert (run / PLOT_FILE).stat().st_size > 1000
    assert capsys.readouterr().out.strip() == f"written: {run / PLOT_FILE}"
