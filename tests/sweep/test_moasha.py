"""MOASHA: Pareto ranks at each rung, the reason it records, and its rung history across a restart."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import numpy as np
from ray.tune.schedulers import TrialScheduler

from tsmoe.sweep.moasha import MOASHA, RUNGS_FILE, crowding_distances, pareto_ranks, promotion_order
from tsmoe.sweep.stopping import RecordingASHA, StopLedger

OBJECTIVES = ("best_val_auroc", "samples_s")


def _result(epoch, auroc, samples_s, planned=4):
    return {
        "epoch": epoch,
        "best_val_auroc": auroc,
        "val_auroc": auroc,
        "samples_s": samples_s,
        "epochs_planned": planned,
    }


def _trial(name):
    return SimpleNamespace(trial_id=name)


def test_pareto_ranks_peel_fronts_in_order():
    points = np.array([[0.9, 100.0], [0.8, 300.0], [0.7, 90.0], [0.6, 80.0], [0.85, 200.0]])
    assert pareto_ranks(points).tolist() == [1, 1, 2, 3, 1]


def test_crowding_puts_the_extremes_first_and_scales_each_objective():
    points = np.array([[0.9, 100.0], [0.85, 200.0], [0.8, 300.0], [0.89, 110.0]])
    distances = crowding_distances(points)
    assert np.isinf(distances[[0, 2]]).all()
    # (0.89 - 0.8) / 0.1 + (300 - 110) / 200 for (0.85, 200); (0.9 - 0.85) / 0.1 + (200 - 100) / 200 for (0.89, 110)
    assert np.isclose(distances[1], 0.9 + 0.95)
    assert np.isclose(distances[3], 0.5 + 0.5)
    order, ranks, _ = promotion_order(points)
    assert ranks.tolist() == [1, 1, 1, 1] and order[2:].tolist() == [1, 3]


def test_a_fast_slightly_worse_trial_survives_moasha_but_not_asha(tmp_path):
    """Same results in the same order for both: slow and accurate, fast and a little less accurate."""
    moasha = MOASHA(StopLedger(tmp_path / "m"), OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    asha = RecordingASHA(
        StopLedger(tmp_path / "a"), "best_val_auroc", "max", max_t=4, grace_period=1, reduction_factor=2
    )
    slow, fast = _trial("slow"), _trial("fast")
    for scheduler in (moasha, asha):
        scheduler.on_trial_add(None, slow)
        scheduler.on_trial_add(None, fast)
        assert scheduler.on_trial_result(None, slow, _result(1, 0.90, 100.0)) == TrialScheduler.CONTINUE
    assert moasha.on_trial_result(None, fast, _result(1, 0.88, 300.0)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, fast, _result(1, 0.88, 300.0)) == TrialScheduler.STOP
    assert StopLedger(tmp_path / "a").reasons()["fast"].startswith("asha:")
    assert StopLedger(tmp_path / "m").reasons() == {}


def test_a_dominated_trial_stops_and_the_ledger_names_its_pareto_rank(tmp_path):
    ledger = StopLedger(tmp_path)
    moasha = MOASHA(ledger, OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    decisions = [
        moasha.on_trial_result(None, _trial(name), _result(1, auroc, speed))
        for name, auroc, speed in (("a", 0.9, 100.0), ("b", 0.8, 300.0), ("c", 0.7, 90.0), ("d", 0.6, 80.0))
    ]
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.STOP]
    reasons = ledger.reasons()
    assert reasons["c"].startswith("moasha: Pareto rank 2 of 2 at epoch 1")
    assert reasons["d"].startswith("moasha: Pareto rank 3 of 3 at epoch 1")
    assert "top 2 of 4 trials" in reasons["d"]


def test_a_trial_cut_from_a_wide_front_is_told_it_lost_on_crowding(tmp_path):
    ledger = StopLedger(tmp_path)
    moasha = MOASHA(ledger, OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    # All four on one front; (0.89, 110) and (0.85, 200) are the crowded middle ones (see the test above).
    for name, auroc, speed in (("a", 0.9, 100.0), ("b", 0.8, 300.0), ("c", 0.85, 200.0), ("d", 0.89, 110.0)):
        moasha.on_trial_result(None, _trial(name), _result(1, auroc, speed))
    reason = ledger.reasons()["d"]
    assert reason.startswith("moasha: Pareto rank 1 of 1 at epoch 1")
    assert "its front holds 4 of them" in reason and "crowding distance 1" in reason


def test_a_trial_is_judged_once_per_rung_and_never_at_its_last_epoch(tmp_path):
    moasha = MOASHA(StopLedger(tmp_path), OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    assert moasha.milestones == [1, 2]
    moasha.on_trial_result(None, _trial("a"), _result(1, 0.9, 100.0))
    moasha.on_trial_result(None, _trial("b"), _result(1, 0.95, 200.0))
    # a's second epoch reaches rung 2, where it is alone: it goes on; epoch 3 is no rung.
    assert moasha.on_trial_result(None, _trial("a"), _result(2, 0.9, 100.0)) == TrialScheduler.CONTINUE
    assert moasha.on_trial_result(None, _trial("a"), _result(3, 0.1, 1.0)) == TrialScheduler.CONTINUE
    assert sorted(moasha.rungs[1]) == ["a", "b"] and sorted(moasha.rungs[2]) == ["a"]


def test_rung_history_survives_a_restart(tmp_path):
    ledger = StopLedger(tmp_path)
    first = MOASHA(ledger, OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    pickled = pickle.dumps(first)  # Tune pickles the scheduler when the sweep starts, before any result
    first.on_trial_result(None, _trial("a"), _result(1, 0.9, 100.0))
    first.on_trial_result(None, _trial("b"), _result(1, 0.8, 300.0))
    stored = json.loads((tmp_path / RUNGS_FILE).read_text())
    assert stored["rungs"]["1"] == {"a": [0.9, 100.0], "b": [0.8, 300.0]}

    restored = pickle.loads(pickled)  # what `--resume` gets back from Tune
    assert restored.on_trial_result(None, _trial("c"), _result(1, 0.7, 90.0)) == TrialScheduler.STOP
    assert sorted(restored.rungs[1]) == ["a", "b", "c"]
    fresh = MOASHA(ledger, OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    assert sorted(fresh.rungs[1]) == ["a", "b", "c"]


def test_a_nonfinite_objective_ranks_last(tmp_path):
    moasha = MOASHA(StopLedger(tmp_path), OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    moasha.on_trial_result(None, _trial("a"), _result(1, 0.6, 50.0))
    assert moasha.on_trial_result(None, _trial("b"), _result(1, float("nan"), 500.0)) == TrialScheduler.STOP


def test_state_files_are_not_among_those_tune_copies_back_on_resume():
    """Tune syncs the .json and .pkl files it found at resume back over the sweep directory."""
    from tsmoe.sweep.failures import FAILURE_FILE
    from tsmoe.sweep.stopping import PLATEAU_BESTS_FILE

    for name in (RUNGS_FILE, PLATEAU_BESTS_FILE, FAILURE_FILE):
        assert not name.endswith((".json", ".pkl")), name
