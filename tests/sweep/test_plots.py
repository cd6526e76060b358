"""The sweep's plots: which files are written for which tables, and what they hold."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tests.sweep.test_pareto import trials_table
from tsmoe.sweep.plots import short_trial_id, write_plots

NAN = math.nan
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVERY_PLOT = {
    "pareto.png",
    "pareto.html",
    "parallel_coordinates.html",
    "importance.png",
    "importance.html",
}
DISTRIBUTIONS = {
    "data.batch_size": IntDistribution(8, 64, log=True),
    "data.crop_schedule": CategoricalDistribution(["fixed", "grow"]),
    "training.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
}


def varied_sweep():
    """Seven completed trials whose AUROC follows the crop schedule and throughput the batch size."""
    rows = [
        ("train_tsmoe_ab12c_00000", "completed", 0.91, 80.0),
        ("train_tsmoe_ab12c_00001", "completed", 0.80, 160.0),
        ("train_tsmoe_ab12c_00002", "completed", 0.92, 320.0),
        ("train_tsmoe_ab12c_00003", "completed", 0.81, 640.0),
        ("train_tsmoe_ab12c_00004", "completed", 0.90, 640.0),
        ("train_tsmoe_ab12c_00005", "completed", 0.79, 80.0),
        ("train_tsmoe_ab12c_00006", "completed", 0.93, 160.0),
        ("train_tsmoe_ab12c_00007", "stopped", 0.99, 900.0),
        ("train_tsmoe_ab12c_00008", "error", NAN, NAN),
    ]
    table = trials_table(
        rows,
        param__data__batch_size=[8, 16, 32, 64, 64, 8, 16, 32, NAN],
        param__data__crop_schedule=["grow", "fixed", "grow", "fixed", "grow", "fixed", "grow", "fixed", NAN],
        param__training__learning_rate=[1e-3, 2e-3, 1e-3, 3e-3, 5e-4, 1e-3, 2e-3, 1e-3, NAN],
    )
    table.loc[5, ["feasible", "infeasible_reason"]] = [False, "samples_s 80 < floor 100"]
    return table


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """The plots of the varied sweep, written once for the module."""
    return write_plots(varied_sweep(), tmp_path_factory.mktemp("plots"), distributions=DISTRIBUTIONS)


def test_a_varied_sweep_gets_every_plot_as_a_non_empty_file(written):
    assert set(written) == EVERY_PLOT
    for name, path in written.items():
        assert path.name == name
        assert path.is_file() and path.stat().st_size > 0


def test_png_plots_start_with_the_png_signature(written):
    assert written["pareto.png"].read_bytes()[:8] == PNG_SIGNATURE
    assert written["importance.png"].read_bytes()[:8] == PNG_SIGNATURE


def test_pareto_html_holds_every_plotted_trial_and_loads_plotly_from_beside_it(written):
    html = written["pareto.html"].read_text()
    for number in range(8):  # the errored trial has no point to plot
        assert f"train_tsmoe_ab12c_{number:05d}" in html
    assert "data.crop_schedule: grow" in html
    assert 'src="https://cdn.plot.ly' not in html
    assert 'src="plotly.min.js"' in html and "Plotly.newPlot" in html
    assert (written["pareto.html"].parent / "plotly.min.js").stat().st_size > 1_000_000


def test_parallel_coordinates_label_the_categories(written):
    html = written["parallel_coordinates.html"].read_text()
    assert '"ticktext":["fixed","grow"]' in html
    assert "data.batch_size" in html


def test_importance_html_names_every_parameter_and_objective(written):
    html = written["importance.html"].read_text()
    for name in (*DISTRIBUTIONS, "best_val_auroc", "samples_s"):
        assert name in html


def test_a_single_trial_sweep_skips_importance_without_failing(tmp_path):
    table = trials_table(
        [("only", "completed", 0.9, 100.0)],
        param__data__batch_size=[8],
        param__data__crop_schedule=["grow"],
        param__training__learning_rate=[1e-3],
    )
    written = write_plots(table, tmp_path, distributions=DISTRIBUTIONS)
    assert set(written) == {"pareto.png", "pareto.html", "parallel_coordinates.html"}
    assert not (tmp_path / "importance.png").exists() and not (tmp_path / "importance.html").exists()
    assert "only" in written["pareto.html"].read_text()


def test_a_sweep_with_no_completed_trial_gets_the_pareto_plots_only(tmp_path):
    table = trials_table(
        [("gone", "stopped", 0.9, 100.0), ("broken", "error", NAN, NAN)],
        param__data__batch_size=[8, NAN],
    )
    written = write_plots(table, tmp_path)
    assert set(written) == {"pareto.png", "pareto.html"}
    assert written["pareto.png"].read_bytes()[:8] == PNG_SIGNATURE


def test_short_trial_ids_keep_the_trailing_parts():
    assert short_trial_id("train_tsmoe_ab12c_00003") == "ab12c_00003"
    assert short_trial_id("t1") == "t1"
    assert short_trial_id("abcdefghijklmnopq") == "…ghijklmnopq"
