"""Early stopping: ASHA on one metric, plateau, non-finite and routing-collapse rules, each saying why it stopped.

Tune does not record which rule ended a trial, and a stopped trial's last figures look like a finished
one's. Every rule here writes its reason to SWEEP/stop_reasons.jsonl (one JSON line per stop, appended
and flushed, so it survives a killed driver), which the results table reads to tell stopped trials from
completed ones and to say why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from tsmoe.sweep.definition import EarlyStoppingConfig
from tsmoe.sweep.persisted import read_json, write_json_atomically

STOP_REASONS_FILE = "stop_reasons.jsonl"
PLATEAU_BESTS_FILE = "plateau_bests.jsonl"
EPOCH = "epoch"
EPOCHS_PLANNED = "epochs_planned"  # beside every epoch's figures: how many the trial was to train
LOAD_SHARE = "routing_max_load_share"  # the busiest expert's share of an epoch's top-k choices, any layer
TOP_K = "model.num_experts_per_tok"  # sampled parameters, when the space searches them
NUM_EXPERTS = "model.num_experts"
COLLAPSE = "collapse"  # how a routing-collapse reason starts: such a trial never counts as completed


def busiest_expert_token_share(load_share: float | None, top_k: int) -> float:
    """The share of an epoch's tokens that its busiest expert received, from the reported load share.

    The trainer reports `routing_max_load_share` as a share of top-k choices, at most 1/k; an expert takes
    a token at most once, so times k it is the share of tokens (1.0 when every token went to the same
    expert). NaN when the model reported no routing (a dense model).
    """
    if load_share is None or not math.isfinite(load_share):
        return math.nan
    return min(1.0, load_share * top_k)


def collapsed(result: dict, routing: dict[str, int], max_load_share: float | None) -> float | None:
    """The busiest expert's token share when it is over `max_load_share`, else None.

    `routing` holds the base config's TOP_K and NUM_EXPERTS; a trial that sampled its own says so in its
    result's config. A model whose every token visits every expert (top-k = experts) has no choice to
    collapse: each expert takes all tokens by construction.
    """
    if max_load_share is None:
        return None
    sampled = result.get("config") or {}
    top_k, experts = (int(sampled.get(name, routing[name])) for name in (TOP_K, NUM_EXPERTS))
    if top_k >= experts:
        return None
    share = busiest_expert_token_share(result.get(LOAD_SHARE), top_k)
    return share if share > max_load_share else None


class StopLedger:
    """Append-only record of why trials were stopped early."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / STOP_REASONS_FILE

    def record(self, trial_id: str, epoch: int, reason: str) -> None:
        """Note that `trial_id` was stopped after `epoch` for `reason` (the first reason given wins)."""
        if trial_id in self.reasons():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as file:
            file.write(json.dumps({"trial_id": trial_id, EPOCH: epoch, "reason": reason}) + "\n")

    def reasons(self) -> dict[str, str]:
        """trial id -> the reason it was stopped."""
        if not self.path.is_file():
            return {}
        reasons: dict[str, str] = {}
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed driver
                continue
            reasons.setdefault(entry["trial_id"], entry["reason"])
        return reasons


def _unfinished(result: dict) -> bool:
    return result.get(EPOCH, 0) < result.get(EPOCHS_PLANNED, math.inf)


class RecordingASHA(AsyncHyperBandScheduler):
    """ASHA that records the trials it stops before their last epoch. A non-finite metric counts as the
    worst value, so it cannot distort the rung cut-offs."""

    def __init__(self, ledger: StopLedger, metric: str, mode: str, **kwargs):
        # stop_last_trials would stop a trial at its last epoch, before its run writes its outputs: the
        # last epoch ends the trial anyway.
        super().__init__(time_attr=EPOCH, metric=metric, mode=mode, stop_last_trials=False, **kwargs)
        self.ledger = ledger

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """ASHA's decision, noted in the ledger when it stops a trial early."""
        value = result.get(self._metric)
        if value is not None and not math.isfinite(value):
            result = result | {self._metric: -math.inf if self._mode == "max" else math.inf}
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and _unfinished(result):
            self.ledger.record(
                trial.trial_id,
                result.get(EPOCH, 0),
                f"asha: {self._metric} {value:.4g} below its rung's cut-off at epoch {result.get(EPOCH)}",
            )
        return action


class HopelessTrialStopper(Stopper):
    """Stops a trial whose loss went non-finite, whose routing collapsed (one expert took more than
    `max_load_share` of an epoch's tokens), or whose metric has not improved for `patience` epochs.

    A collapse is recorded even at the last epoch: such a trial must not count as completed, since its
    figures say nothing about its expert count and top-k. With a `state_file`, the per-trial bests are kept
    there (rewritten atomically when one improves) and read back after unpickling, since Tune restores a
    sweep's stopper as it was when the sweep started."""

    def __init__(
        self,
        ledger: StopLedger,
        metric: str,
        mode: str,
        patience: int | None,
        stop_nonfinite: bool,
        max_load_share: float | None = None,
        routing: dict[str, int] | None = None,
        state_file: Path | None = None,
    ):
        self.ledger = ledger
        self.metric, self.sign = metric, 1.0 if mode == "max" else -1.0
        self.patience, self.stop_nonfinite = patience, stop_nonfinite
        self.max_load_share = max_load_share
        self.routing = routing or {TOP_K: 1, NUM_EXPERTS: 2}
        self.state_file = state_file
        self._best: dict[str, tuple[float, int]] = {}  # trial id -> (best signed value, its epoch)
        self._loaded = state_file is None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_loaded"] = self.state_file is None
        return state

    def _load_bests(self) -> None:
        if not self._loaded and self.state_file is not None:
            stored = read_json(self.state_file, {})
            self._best.update({trial_id: (float(best), int(epoch)) for trial_id, (best, epoch) in stored.items()})
        self._loaded = True

    def __call__(self, trial_id: str, result: dict) -> bool:
        """Whether to stop `trial_id` after this result."""
        epoch = result.get(EPOCH, 0)
        if self.stop_nonfinite and not math.isfinite(result.get("loss", 0.0)):
            return self._stop(trial_id, result, f"loss is {result.get('loss')} at epoch {epoch}")
        share = collapsed(result, self.routing, self.max_load_share)
        if share is not None:
            self.ledger.record(
                trial_id,
                epoch,
                f"{COLLAPSE}: one expert took {share:.3g} of the tokens at epoch {epoch} "
                f"(limit early_stopping.max_load_share {self.max_load_share:g})",
            )
            return True
        value = result.get(self.metric)
        if self.patience is None or value is None:
            return False
        signed = self.sign * value if math.isfinite(value) else -math.inf
        self._load_bests()
        best, best_epoch = self._best.get(trial_id, (-math.inf, epoch))
        if signed > best:
            self._best[trial_id] = (signed, epoch)
            if self.state_file is not None:
                write_json_atomically(self.state_file, self._best)
            return False
        if epoch - best_epoch >= self.patience:
            return self._stop(
                trial_id,
                result,
                f"plateau: {self.metric} has not improved for {epoch - best_epoch} "
                f"epochs (best {self.sign * best:.4g} at epoch {best_epoch})",
            )
        return False

    def _stop(self, trial_id: str, result: dict, reason: str) -> bool:
        if not _unfinished(result):
            return False  # the last epoch ends the trial anyway, as completed
        self.ledger.record(trial_id, result.get(EPOCH, 0), reason)
        return True

    def stop_all(self) -> bool:
        """Never ends the whole sweep."""
        return False


def build_early_stopping(
    config: EarlyStoppingConfig,
    directory: Path,
    epochs: int,
    throughput: str = "samples_s",
    routing: dict[str, int] | None = None,
):
    """(scheduler or None, stopper) for a sweep, both recording their reasons in the sweep directory and
    keeping what they learn there for `--resume`. MOASHA ranks on the sweep's two objectives (best
    validation AUROC and `throughput`); ASHA on `config.metric`. `routing` is the base config's
    {TOP_K: top-k, NUM_EXPERTS: experts}, for trials that do not sample their own."""
    from tsmoe.sweep.moasha import MOASHA
    from tsmoe.sweep.pareto import QUALITY

    ledger = StopLedger(directory)
    scheduler: TrialScheduler | None = None
    if config.scheduler == "moasha":
        scheduler = MOASHA(
            ledger,
            (QUALITY, throughput),
            max_t=epochs,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    elif config.scheduler == "asha":
        scheduler = RecordingASHA(
            ledger,
            config.metric,
            config.mode,
            max_t=epochs,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    stopper = HopelessTrialStopper(
        ledger,
        config.metric,
        config.mode,
        config.patience,
        config.stop_nonfinite,
        max_load_share=config.max_load_share,
        routing=routing,
        state_file=Path(directory) / PLATEAU_BESTS_FILE,
    )
    return scheduler, stopper
