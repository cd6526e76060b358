"""The trial table's text form, and completing stopped trials' outputs only where results are written."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from tests.sweep.test_pareto import trials_table
from tsmoe.sweep.pareto import pareto_front
from tsmoe.sweep.records import _status, complete_stopped_outputs, format_front, parquet_ready, worst_routing


def test_the_front_prints_trial_objectives_memory_and_parameters_without_the_prefix():
    table = trials_table(
        [("a", "completed", 0.9, 100.0), ("b", "completed", 0.8, 200.0), ("c", "completed", 0.7, 50.0)],
        peak_memory_mib=[512.0, 256.0, 128.0],
        param__data__batch_size=[8, 16, 4],
    )
    lines = format_front(pareto_front(table), "samples_s").splitlines()
    assert lines[0].split() == ["trial_id", "best_val_auroc", "samples_s", "peak_memory_mib", "data.batch_size"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]  # c is dominated by a
    assert lines[1].split()[1:] == ["0.9", "100", "512", "8"]


def test_an_empty_front_says_so():
    assert "the Pareto front is empty" in format_front(pareto_front(trials_table([])), "samples_s")


def test_trials_without_checkpoints_are_left_alone(tmp_path):
    (tmp_path / "trials" / "never_started").mkdir(parents=True)
    assert complete_stopped_outputs(tmp_path) == []
    assert sorted(path.name for path in (tmp_path / "trials").rglob("*")) == ["never_started"]


def test_worst_routing_is_the_highest_load_share_and_the_lowest_entropy_over_the_epochs():
    history = [
        {"epoch": 1, "routing_max_load_share": 1.0, "routing_entropy_min": 0.99},
        {"epoch": 2, "routing_max_load_share": 0.3, "routing_entropy_min": 0.8},
        {"epoch": 3, "routing_max_load_share": math.nan, "routing_entropy_min": 0.9},
    ]
    assert worst_routing(history) == {"worst.routing_max_load_share": 1.0, "worst.routing_entropy_min": 0.8}
    assert worst_routing([{"epoch": 1, "loss": 0.5}]) == {}  # a dense model reports no routing


def test_the_front_prints_last_and_worst_routing_beside_the_objectives():
    table = trials_table(
        [("a", "completed", 0.9, 100.0)],
        peak_memory_mib=[512.0],
        routing_max_load_share=[0.3],
        worst__routing_max_load_share=[0.45],
    )
    header = format_front(pareto_front(table), "samples_s").splitlines()[0].split()
    assert header[4:] == ["routing_max_load_share", "worst.routing_max_load_share"]


def test_a_trial_that_collapsed_at_its_last_epoch_is_stopped_not_completed():
    trial = SimpleNamespace(status="TERMINATED", trial_id="a")
    reason = "collapse: one expert took 1 of the tokens at epoch 3 (limit early_stopping.max_load_share 0.9)"
    assert _status(trial, 3, 3, {"a": reason}) == ("stopped", reason)
    assert _status(trial, 3, 3, {}) == ("completed", "")


def test_a_parameter_whose_choices_mix_text_and_numbers_is_written_to_parquet_as_text(tmp_path):
    table = pd.DataFrame(
        {
            "param.evaluation.density_layer": ["final", 0, None],
            "param.evaluation.forecast_weight": [1.0, 0.0, 0.5],
            "output": ["a", "b", "c"],
        }
    )
    parquet_ready(table).to_parquet(tmp_path / "trials.parquet", index=False)
    read = pd.read_parquet(tmp_path / "trials.parquet")
    layers = read["param.evaluation.density_layer"].tolist()
    assert layers[:2] == ["final", "0"] and pd.isna(layers[2])
    assert read["param.evaluation.forecast_weight"].tolist() == [1.0, 0.0, 0.5]
    assert table["param.evaluation.density_layer"].tolist() == ["final", 0, None]  # the table itself is kept
