"""Early-stopping rules: when they stop a trial, and the reason each one records."""

from __future__ import annotations

import math
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from tsmoe.sweep.definition import EarlyStoppingConfig
from tsmoe.sweep.stopping import HopelessTrialStopper, RecordingASHA, StopLedger, build_early_stopping


def _result(epoch, val_auroc=0.5, loss=1.0, planned=6):
    return {"epoch": epoch, "val_auroc": val_auroc, "loss": loss, "epochs_planned": planned}


def test_plateau_stops_after_patience_epochs_without_improvement_and_records_why(tmp_path):
    ledger = StopLedger(tmp_path)
    stopper = HopelessTrialStopper(ledger, "val_auroc", "max", patience=2, stop_nonfinite=True)
    assert not stopper("a", _result(1, 0.60))
    assert not stopper("a", _result(2, 0.70))
    assert not stopper("a", _result(3, 0.69))
    assert stopper("a", _result(4, 0.70))  # equal is not better: two epochs since the best
    reason = ledger.reasons()["a"]
    assert "plateau" in reason and "2 epochs" in reason and "0.7 at epoch 2" in reason


def test_plateau_counts_improvement_downwards_for_a_loss(tmp_path):
    stopper = HopelessTrialStopper(StopLedger(tmp_path), "loss", "min", patience=1, stop_nonfinite=False)
    assert not stopper("a", _result(1, loss=2.0))
    assert not stopper("a", _result(2, loss=1.5))
    assert stopper("a", _result(3, loss=1.6))


def test_a_nonfinite_loss_stops_the_trial_at_once(tmp_path):
    ledger = StopLedger(tmp_path)
    stopper = HopelessTrialStopper(ledger, "val_auroc", "max", patience=None, stop_nonfinite=True)
    assert stopper("a", _result(1, loss=math.nan))
    assert ledger.reasons() == {"a": "loss is nan at epoch 1"}


def test_the_last_epoch_is_never_recorded_as_an_early_stop(tmp_path):
    ledger = StopLedger(tmp_path)
    stopper = HopelessTrialStopper(ledger, "val_auroc", "max", patience=1, stop_nonfinite=True)
    stopper("a", _result(1, 0.9, planned=2))
    assert not stopper("a", _result(2, 0.5, planned=2))
    assert ledger.reasons() == {}


def test_ledger_keeps_the_first_reason_and_skips_a_line_cut_short(tmp_path):
    ledger = StopLedger(tmp_path)
    ledger.record("a", 1, "first")
    ledger.record("a", 2, "second")
    with open(ledger.path, "a") as file:
        file.write('{"trial_id": "b", "ep')  # a driver killed mid-write
    assert StopLedger(tmp_path).reasons() == {"a": "first"}


def test_asha_records_the_trials_it_stops_before_their_last_epoch(tmp_path):
    ledger = StopLedger(tmp_path)
    scheduler = RecordingASHA(ledger, "val_auroc", "max", max_t=4, grace_period=1, reduction_factor=2)
    trials = [SimpleNamespace(trial_id=name) for name in ("good", "bad")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, trials[0], _result(1, 0.9, planned=4)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials[1], _result(1, math.nan, planned=4)) == TrialScheduler.STOP
    assert ledger.reasons()["bad"].startswith("asha: val_auroc nan below its rung's cut-off at epoch 1")
    assert "good" not in ledger.reasons()


def test_build_early_stopping_without_a_scheduler_still_stops_nonfinite_trials(tmp_path):
    scheduler, stopper = build_early_stopping(EarlyStoppingConfig(scheduler="none"), tmp_path, epochs=3)
    assert scheduler is None
    assert stopper("a", _result(1, loss=math.inf, planned=3))


def _routed(epoch, load_share, planned=3, **sampled):
    result = _result(epoch, planned=planned) | {"routing_max_load_share": load_share}
    result["config"] = {f"model.{name}": value for name, value in sampled.items()}
    return result


BASE_ROUTING = {"model.num_experts_per_tok": 1, "model.num_experts": 4}


def test_todays_collapse_stops_the_trial_and_records_why(tmp_path):
    # The quickstart sweep's top-1 trials before balanced routing: every token to one expert in epochs 1 and 2.
    ledger = StopLedger(tmp_path)
    _, stopper = build_early_stopping(EarlyStoppingConfig(scheduler="none"), tmp_path, epochs=3, routing=BASE_ROUTING)
    assert stopper("collapsed", _routed(1, 1.0))
    assert not stopper("balanced", _routed(1, 0.31))
    reasons = ledger.reasons()
    assert reasons["collapsed"] == (
        "collapse: one expert took 1 of the tokens at epoch 1 (limit early_stopping.max_load_share 0.9)"
    )
    assert "balanced" not in reasons


def test_collapse_counts_tokens_not_top_k_choices(tmp_path):
    # With top-2 an expert holds at most half the choices: 0.48 of the choices is 0.96 of the tokens.
    stopper = HopelessTrialStopper(
        StopLedger(tmp_path), "val_auroc", "max", None, True, max_load_share=0.9, routing=BASE_ROUTING
    )
    assert stopper("top2", _routed(1, 0.48, num_experts_per_tok=2))
    assert not stopper("top1", _routed(1, 0.48))


def test_every_expert_taking_every_token_is_no_collapse(tmp_path):
    # 2 experts top-2: each expert takes every token by construction (a sweep of the quickstart space drew it).
    stopper = HopelessTrialStopper(
        StopLedger(tmp_path), "val_auroc", "max", None, True, max_load_share=0.9, routing=BASE_ROUTING
    )
    assert not stopper("all", _routed(1, 0.5, num_experts=2, num_experts_per_tok=2))
    assert stopper("one", _routed(1, 1.0, num_experts=2, num_experts_per_tok=1))


def test_collapse_at_the_last_epoch_is_still_recorded(tmp_path):
    ledger = StopLedger(tmp_path)
    stopper = HopelessTrialStopper(ledger, "val_auroc", "max", None, True, max_load_share=0.9)
    assert not stopper("a", _routed(1, 0.5, planned=2))
    stopper("a", _routed(2, 0.95, planned=2))
    assert ledger.reasons()["a"].startswith("collapse: one expert took 0.95 of the tokens at epoch 2")


def test_no_collapse_rule_without_a_threshold_or_routing(tmp_path):
    stopper = HopelessTrialStopper(StopLedger(tmp_path), "val_auroc", "max", None, True, max_load_share=None)
    assert not stopper("a", _routed(1, 1.0))
    dense = HopelessTrialStopper(StopLedger(tmp_path), "val_auroc", "max", None, True, max_load_share=0.9)
    assert not dense("b", _result(1))  # a dense model reports no load share


def test_plateau_bests_survive_a_restart(tmp_path):
    import pickle

    state_file = tmp_path / "plateau_bests.jsonl"
    stopper = HopelessTrialStopper(StopLedger(tmp_path), "val_auroc", "max", 2, True, state_file=state_file)
    pickled = pickle.dumps(stopper)  # as Tune keeps it from the sweep's start
    assert not stopper("a", _result(1, 0.80))
    assert not stopper("a", _result(2, 0.70))
    restored = pickle.loads(pickled)
    assert restored("a", _result(3, 0.75))  # two epochs since the best of epoch 1, known from the file
    assert "best 0.8 at epoch 1" in StopLedger(tmp_path).reasons()["a"]


def test_build_early_stopping_uses_moasha_by_default_on_both_objectives(tmp_path):
    from tsmoe.sweep.moasha import MOASHA

    scheduler, _ = build_early_stopping(EarlyStoppingConfig(), tmp_path, epochs=4, throughput="tokens_s")
    assert isinstance(scheduler, MOASHA) and scheduler.objectives == ("best_val_auroc", "tokens_s")
