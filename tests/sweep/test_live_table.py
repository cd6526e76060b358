"""The compact live table: one row per trial, the sweep's ETA within its budget, printed sparingly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tsmoe.sweep.live_table import LiveTable


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _trial(trial_id, status, epoch=0, seconds=0.0, auroc=None, speed=None):
    result = {"epoch": epoch, "epochs_planned": 4, "time_total_s": seconds}
    if auroc is not None:
        result |= {"best_val_auroc": auroc, "samples_s": speed}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result if epoch else {})


def _table(clock, budget=600.0):
    table = LiveTable("quick", "samples_s", 4, 6, 2, budget, interval_s=10.0, clock=clock)
    table.setup()
    return table


def test_rows_say_each_trials_state_epoch_and_figures():
    clock = Clock()
    table = _table(clock)
    clock.now += 95
    trials = [
        _trial("a_00000", "TERMINATED", 4, 40.0, 0.87123, 412.34),
        _trial("a_00001", "TERMINATED", 1, 10.0, 0.612, 388.0),
        _trial("a_00002", "RUNNING", 2, 20.0, 0.8391, 120.5),
        _trial("a_00003", "PENDING"),
    ]
    lines = table.render(trials).splitlines()
    assert lines[0].startswith("sweep quick: 1 done, 1 stopped, 1 running, 1 waiting of 6 | 1:35 elapsed | ETA ")
    assert lines[0].endswith("| budget 10:00")
    assert lines[2].split() == ["a_00000", "done", "4/4", "0.8712", "412.3"]
    assert lines[3].split() == ["a_00001", "stopped", "1/4", "0.6120", "388.0"]
    assert lines[4].split() == ["a_00002", "running", "2/4", "0.8391", "120.5"]
    assert lines[5].split() == ["a_00003", "waiting", "0/4", "-", "-"]


def test_eta_runs_the_remaining_epochs_at_the_mean_epoch_time_and_stops_at_the_budget():
    clock = Clock()
    table = _table(clock, budget=600.0)
    trials = [_trial("a", "TERMINATED", 4, 40.0), _trial("b", "RUNNING", 2, 20.0)]
    # 10 s per epoch; 2 epochs left for b and 4 trials x 4 epochs not started; two trials at a time.
    assert table.eta_s(trials) == pytest.approx((2 + 16) * 10.0 / 2)
    clock.now += 550
    assert table.eta_s(trials) == pytest.approx(50.0)  # the budget ends first
    assert table.eta_s([_trial("c", "PENDING")]) is None  # no epoch seen yet


def test_results_print_at_most_every_interval_but_starts_and_ends_always(capsys):
    clock = Clock()
    table = _table(clock)
    trials = [_trial("a", "RUNNING", 1, 10.0, 0.7, 100.0)]
    table.on_trial_result(0, trials, trials[0], {})
    clock.now += 3
    table.on_trial_result(0, trials, trials[0], {})
    table.on_trial_complete(0, trials, trials[0])
    clock.now += 3
    table.on_trial_result(0, trials, trials[0], {})
    assert capsys.readouterr().out.count("sweep quick:") == 2
