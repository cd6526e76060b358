"""Feasibility, the Pareto front and its knee, on hand-made trials tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import pytest

from tsmoe.sweep.pareto import eligible, knee, mark_feasibility, pareto_front

NAN = math.nan


def trials_table(rows: Sequence[tuple], **columns: Sequence) -> pd.DataFrame:
    """A trials table from (trial_id, status, best_val_auroc, samples_s) tuples, every trial feasible.

    Further columns come as keyword lists, one value per row; dots are written as '__' so that
    `param__data__batch_size=[...]` becomes the column `param.data.batch_size`.
    """
    table = pd.DataFrame(rows, columns=["trial_id", "status", "best_val_auroc", "samples_s"])
    table["stop_reason"] = ["" if status == "completed" else "asha" for status in table["status"]]
    table["epochs"] = [4 if status == "completed" else 2 for status in table["status"]]
    table["epochs_planned"] = 4
    table["output"] = [f"runs/sweeps/test/trials/{trial_id}" for trial_id in table["trial_id"]]
    table["feasible"] = True
    table["infeasible_reason"] = ""
    for name, values in columns.items():
        table[name.replace("__", ".")] = list(values)
    return table


def front_ids(table: pd.DataFrame) -> list[str]:
    """The trial ids of the table's front, in the front's order."""
    return list(pareto_front(table)["trial_id"])


def test_mark_feasibility_gives_the_reason_for_a_trial_below_the_throughput_floor():
    table = trials_table([("a", "completed", 0.9, 12.3), ("b", "completed", 0.8, 20.0)])
    marked = mark_feasibility(table, min_throughput=20, throughput="samples_s", max_memory_mib=None)
    assert list(marked["feasible"]) == [False, True]
    assert list(marked["infeasible_reason"]) == ["samples_s 12.3 < floor 20", ""]


def test_mark_feasibility_flags_memory_above_the_ceiling_and_missing_figures():
    table = trials_table(
        [("a", "completed", 0.9, 50.0), ("b", "completed", 0.8, 60.0), ("c", "error", NAN, NAN)],
        peak_memory_mib=[9000.0, 8192.0, NAN],
    )
    marked = mark_feasibility(table, min_throughput=20, throughput="samples_s", max_memory_mib=8192)
    assert list(marked["feasible"]) == [False, True, False]
    assert list(marked["infeasible_reason"]) == [
        "peak_memory_mib 9000 > ceiling 8192",
        "",
        "samples_s missing; peak_memory_mib missing",
    ]


def test_mark_feasibility_without_bounds_marks_every_trial_feasible_and_leaves_the_input_alone():
    table = trials_table([("a", "completed", 0.9, 1.0), ("b", "error", NAN, NAN)])
    table["feasible"] = False
    marked = mark_feasibility(table, min_throughput=None, throughput="samples_s", max_memory_mib=None)
    assert list(marked["feasible"]) == [True, True]
    assert list(marked["infeasible_reason"]) == ["", ""]
    assert list(table["feasible"]) == [False, False]


def test_front_holds_the_non_dominated_trials_sorted_by_throughput():
    table = trials_table(
        [
            ("fast", "completed", 0.70, 500.0),
            ("accurate", "completed", 0.95, 100.0),
            ("middle", "completed", 0.90, 300.0),
            ("dominated", "completed", 0.85, 250.0),  # beaten by middle in both
            ("slower_same_auroc", "completed", 0.90, 200.0),  # equal quality, lower throughput
        ]
    )
    assert front_ids(table) == ["accurate", "middle", "fast"]


def test_identical_points_are_both_on_the_front():
    table = trials_table(
        [
            ("b_twin", "completed", 0.90, 300.0),
            ("a_twin", "completed", 0.90, 300.0),
            ("other", "completed", 0.95, 100.0),
        ]
    )
    assert front_ids(table) == ["other", "a_twin", "b_twin"]


def test_stopped_trial_with_the_best_figures_is_not_on_the_front():
    table = trials_table(
        [
            ("stopped", "stopped", 0.99, 900.0),
            ("a", "completed", 0.90, 300.0),
            ("b", "completed", 0.80, 400.0),
        ]
    )
    assert front_ids(table) == ["a", "b"]
    assert list(eligible(table)["trial_id"]) == ["a", "b"]


def test_infeasible_trials_are_not_on_the_front():
    table = trials_table(
        [
            ("slow", "completed", 0.99, 10.0),
            ("hungry", "completed", 0.98, 800.0),
            ("fine", "completed", 0.90, 300.0),
        ],
        peak_memory_mib=[1000.0, 20000.0, 1000.0],
    )
    marked = mark_feasibility(table, min_throughput=50, throughput="samples_s", max_memory_mib=16000)
    assert front_ids(marked) == ["fine"]


def test_nan_objectives_keep_a_trial_off_the_front():
    table = trials_table(
        [
            ("no_auroc", "completed", NAN, 900.0),
            ("no_throughput", "completed", 0.99, NAN),
            ("a", "completed", 0.90, 300.0),
        ]
    )
    assert front_ids(table) == ["a"]


def test_front_is_empty_when_no_trial_is_eligible():
    table = trials_table([("a", "error", NAN, NAN), ("b", "stopped", 0.9, 10.0)])
    assert pareto_front(table).empty


def test_front_uses_the_throughput_column_it_is_given():
    table = trials_table(
        [("a", "completed", 0.90, 300.0), ("b", "completed", 0.80, 400.0)],
        it_s=[50.0, 10.0],
    )
    assert list(pareto_front(table, throughput="it_s")["trial_id"]) == ["a"]


def test_knee_of_a_three_point_front_is_the_point_nearest_the_scaled_ideal():
    # Scaled: accurate (1, 0) and fast (0, 1) lie at distance 1; middle (0.867, 0.75) at 0.28.
    table = trials_table(
        [
            ("accurate", "completed", 0.95, 100.0),
            ("middle", "completed", 0.93, 400.0),
            ("fast", "completed", 0.80, 500.0),
        ]
    )
    assert knee(pareto_front(table))["trial_id"] == "middle"


def test_knee_scales_the_objectives_so_raw_units_do_not_decide():
    # In raw units 'fast' is nearest (0.95, 500); scaled, the middle point (0.9, 0.25) is.
    table = trials_table(
        [
            ("accurate", "completed", 0.95, 100.0),
            ("middle", "completed", 0.945, 200.0),
            ("fast", "completed", 0.90, 500.0),
        ]
    )
    assert knee(pareto_front(table))["trial_id"] == "middle"


def test_knee_tie_between_the_ends_goes_to_the_higher_quality():
    # The middle point scales to (0.067, 0.1), farther than either end (distance 1 each).
    table = trials_table(
        [
            ("fast", "completed", 0.80, 500.0),
            ("middle", "completed", 0.81, 140.0),
            ("accurate", "completed", 0.95, 100.0),
        ]
    )
    assert knee(pareto_front(table))["trial_id"] == "accurate"


def test_knee_of_a_single_point_front_is_that_point():
    table = trials_table([("only", "completed", 0.9, 300.0), ("gone", "stopped", 0.99, 900.0)])
    assert knee(pareto_front(table))["trial_id"] == "only"


def test_knee_of_an_empty_front_raises():
    table = trials_table([("gone", "stopped", 0.99, 900.0)])
    with pytest.raises(ValueError, match="front is empty"):
        knee(pareto_front(table))
