"""The export policies: which trial each picks, the floors, tie-breaking and the errors when none fits."""

from __future__ import annotations

import math

import pytest

from tests.sweep.test_pareto import trials_table
from tsmoe.sweep.policies import POLICIES, choose_trial

NAN = math.nan

# best_val_auroc, samples_s: 'stopped' beats everyone but ran half its epochs; 'error' has no figures.
SWEEP = trials_table(
    [
        ("accurate", "completed", 0.95, 100.0),
        ("middle", "completed", 0.93, 400.0),
        ("fast", "completed", 0.80, 500.0),
        ("dominated", "completed", 0.85, 300.0),
        ("stopped", "stopped", 0.99, 900.0),
        ("error", "error", NAN, NAN),
    ]
)


def chosen(policy: str, table=SWEEP, **floors) -> str:
    """The trial_id a policy picks from the table."""
    return choose_trial(table, policy, **floors)["trial_id"]


def test_policies_are_the_three_documented_ones():
    assert POLICIES == ("best_auroc", "best_throughput", "knee")


def test_best_auroc_picks_the_most_accurate_completed_trial():
    assert chosen("best_auroc") == "accurate"


def test_best_auroc_respects_the_throughput_floor():
    assert chosen("best_auroc", min_throughput=300) == "middle"
    assert chosen("best_auroc", min_throughput=450) == "fast"


def test_best_throughput_picks_the_fastest_completed_trial():
    assert chosen("best_throughput") == "fast"


def test_best_throughput_respects_the_auroc_floor():
    assert chosen("best_throughput", min_auroc=0.9) == "middle"
    assert chosen("best_throughput", min_auroc=0.94) == "accurate"


def test_knee_picks_the_knee_of_the_front():
    assert chosen("knee") == "middle"


def test_knee_is_taken_over_the_trials_that_meet_the_floors():
    # Without 'fast' the front is accurate (1, 0) and middle (0, 1): a tie won by the higher quality.
    assert chosen("knee", min_auroc=0.9) == "accurate"


def test_policies_use_the_throughput_column_they_are_given():
    table = trials_table(
        [("many_samples", "completed", 0.9, 500.0), ("many_steps", "completed", 0.9, 100.0)],
        it_s=[5.0, 40.0],
    )
    assert choose_trial(table, "best_throughput", throughput="it_s")["trial_id"] == "many_steps"


def test_equal_quality_is_broken_by_throughput_then_trial_id():
    table = trials_table(
        [
            ("c", "completed", 0.9, 100.0),
            ("b", "completed", 0.9, 200.0),
            ("a", "completed", 0.9, 100.0),
        ]
    )
    assert chosen("best_auroc", table) == "b"
    assert chosen("best_auroc", table.drop(index=1)) == "a"


def test_equal_throughput_is_broken_by_quality_then_trial_id():
    table = trials_table(
        [
            ("c", "completed", 0.80, 300.0),
            ("b", "completed", 0.90, 300.0),
            ("a", "completed", 0.80, 300.0),
        ]
    )
    assert chosen("best_throughput", table) == "b"
    assert chosen("best_throughput", table.drop(index=1)) == "a"


def test_an_unreachable_throughput_floor_names_the_fastest_figure():
    table = trials_table([("a", "completed", 0.9, 312.4), ("b", "completed", 0.95, 100.0)])
    with pytest.raises(ValueError) as error:
        choose_trial(table, "best_auroc", min_throughput=500)
    assert str(error.value) == (
        "no completed feasible trial reaches samples_s >= 500 (the fastest reaches 312.4); lower --min-throughput"
    )


def test_an_unreachable_auroc_floor_names_the_best_figure():
    with pytest.raises(ValueError) as error:
        choose_trial(SWEEP, "best_throughput", min_auroc=0.97)
    assert str(error.value) == (
        "no completed feasible trial reaches best_val_auroc >= 0.97 (the best reaches 0.95); lower --min-auroc"
    )


def test_floors_met_only_by_different_trials_name_the_fastest_accurate_enough_figure():
    with pytest.raises(ValueError) as error:
        choose_trial(SWEEP, "knee", min_throughput=450, min_auroc=0.9)
    assert str(error.value) == (
        "no completed feasible trial reaches both samples_s >= 450 and best_val_auroc >= 0.9 "
        "(the fastest with best_val_auroc >= 0.9 reaches 400); lower --min-throughput or --min-auroc"
    )


def test_a_sweep_without_eligible_trials_counts_what_became_of_them():
    table = trials_table(
        [
            ("a", "stopped", 0.99, 900.0),
            ("b", "stopped", 0.90, 100.0),
            ("c", "error", NAN, NAN),
            ("d", "completed", 0.95, 10.0),
            ("e", "running", 0.5, 50.0),
        ]
    )
    table.loc[3, "feasible"] = False
    with pytest.raises(ValueError) as error:
        choose_trial(table, "knee")
    assert str(error.value) == (
        "no trial is eligible (completed, feasible, finite best_val_auroc and samples_s): of 5 trials, "
        "2 stopped early, 1 errored, 1 still running or pending, 1 completed but infeasible"
    )


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown policy 'fastest'"):
        choose_trial(SWEEP, "fastest")
