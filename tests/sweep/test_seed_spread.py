"""The seed spread of a pick's figures and the rule that warns when its lead on the front is within it."""

from __future__ import annotations

import math

import pytest

from tests.sweep.test_pareto import trials_table
from tsmoe.sweep.pareto import pareto_front
from tsmoe.sweep.seed_spread import Lead, Spread, leads_over_neighbours, spread_table

# best_val_auroc, samples_s; the front in throughput order: accurate, middle, fast.
FRONT = pareto_front(
    trials_table(
        [
            ("accurate", "completed", 0.95, 100.0),
            ("middle", "completed", 0.93, 400.0),
            ("fast", "completed", 0.80, 500.0),
            ("dominated", "completed", 0.85, 300.0),
        ]
    )
)


def spreads(quality_std: float, throughput_std: float) -> dict[str, Spread]:
    return {
        "best_val_auroc": Spread(0.9, quality_std, 0.8, 1.0, 3),
        "samples_s": Spread(400.0, throughput_std, 300.0, 500.0, 3),
    }


def test_a_spread_is_the_mean_sample_std_min_and_max_of_the_finite_values():
    spread = Spread.of([0.90, 0.94, math.nan, 0.92])
    assert spread.count == 3
    assert spread.mean == pytest.approx(0.92)
    assert spread.std == pytest.approx(0.02)  # ddof 1: sqrt((0.02^2 + 0 + 0.02^2) / 2)
    assert (spread.min, spread.max) == (0.90, 0.94)


def test_a_spread_of_fewer_than_two_finite_values_is_refused():
    with pytest.raises(ValueError, match="at least 2 finite values, got 1"):
        Spread.of([0.9, math.nan])


def test_the_pick_leads_its_slower_neighbour_in_throughput_and_its_faster_one_in_quality():
    leads = leads_over_neighbours(FRONT, "middle", spreads(0.01, 50.0), "best_val_auroc", "samples_s")
    assert [(lead.neighbour, lead.side, lead.objective) for lead in leads] == [
        ("accurate", "slower", "samples_s"),
        ("fast", "faster", "best_val_auroc"),
    ]
    assert leads[0].lead == pytest.approx(300.0) and leads[0].spread == 50.0
    assert leads[1].lead == pytest.approx(0.13) and leads[1].spread == 0.01
    assert not any(lead.within_spread for lead in leads)


def test_a_lead_smaller_than_the_seed_spread_warns_naming_the_neighbour_and_the_figures():
    # The middle trial is 300 samples/s faster than the accurate one, but its seeds vary by 350.
    leads = leads_over_neighbours(FRONT, "middle", spreads(0.01, 350.0), "best_val_auroc", "samples_s")
    within = [lead for lead in leads if lead.within_spread]
    assert [lead.neighbour for lead in within] == ["accurate"]
    assert within[0].line("middle") == (
        "warning: trial middle's lead over its slower neighbour accurate on the front (samples_s +300 against "
        "a seed std of 350) is within the seed spread: another seed may swap them; verify accurate too, or "
        "treat the two as equal"
    )
    holds = [lead for lead in leads if not lead.within_spread]
    assert holds[0].line("middle") == (
        "lead over the faster neighbour fast: best_val_auroc +0.13 against a seed std of 0.01: holds"
    )


def test_a_lead_equal_to_the_spread_counts_as_within_it():
    assert Lead("other", "faster", "best_val_auroc", 0.02, 0.02).within_spread


def test_an_end_of_the_front_has_one_neighbour_and_a_lone_pick_none():
    fastest = leads_over_neighbours(FRONT, "fast", spreads(0.01, 1.0), "best_val_auroc", "samples_s")
    assert [(lead.neighbour, lead.objective, round(lead.lead, 6)) for lead in fastest] == [
        ("middle", "samples_s", 100.0)
    ]
    alone = FRONT[FRONT["trial_id"] == "middle"]
    assert leads_over_neighbours(alone, "middle", spreads(0.01, 1.0), "best_val_auroc", "samples_s") == []


def test_a_pick_off_the_front_is_refused():
    with pytest.raises(ValueError, match="trial dominated is not on the Pareto front"):
        leads_over_neighbours(FRONT, "dominated", spreads(0.01, 1.0), "best_val_auroc", "samples_s")


def test_the_spread_table_shows_the_sweep_figure_beside_the_seed_statistics():
    text = spread_table({"samples_s": Spread(390.0, 12.0, 380.0, 402.0, 3)}, {"samples_s": 400.0})
    header, row = text.splitlines()
    assert header.split() == ["sweep", "mean", "std", "min", "max"]
    assert row.split() == ["samples_s", "400", "390", "12", "380", "402"]
