"""The trial table's text form, and completing stopped trials' outputs only where results are written."""

from __future__ import annotations

from tests.sweep.test_pareto import trials_table
from tsmoe.sweep.pareto import pareto_front
from tsmoe.sweep.records import complete_stopped_outputs, format_front


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
