"""A compact live table of the sweep on the terminal, in place of Tune's own status and result boxes.

    sweep quickstart: 2 done, 1 stopped, 2 running, 1 waiting of 6 | 1:42 elapsed | ETA 1:10 | budget 4:30
    trial           state     epoch  best AUROC   samples_s
    3b1f2a0c_00000  done        4/4      0.8712       412.3
    3b1f2a0c_00001  stopped     1/4      0.6120       388.0
    3b1f2a0c_00002  running     2/4      0.8391       120.5

It is printed when a trial starts or ends, and after results at most every `interval_s` seconds. The ETA
assumes every trial still to come runs all its epochs at the mean seconds per epoch seen so far, as many
at a time as the sweep allows, and never goes past the time budget; early stops make it shorter.
`tsmoe sweep --verbose` shows Tune's own output instead.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

from ray.tune import Callback

from tsmoe.sweep.pareto import QUALITY
from tsmoe.sweep.stopping import EPOCH, EPOCHS_PLANNED

_STATES = {"RUNNING": "running", "PENDING": "waiting", "PAUSED": "paused", "ERROR": "error"}


def _clock(seconds: float) -> str:
    hours, rest = divmod(max(0, round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LiveTable(Callback):
    """Tune callback printing the sweep's compact table; see the module docstring."""

    def __init__(
        self,
        name: str,
        throughput: str,
        epochs: int,
        num_trials: int,
        max_concurrent_trials: int,
        time_budget_s: float | None,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name, self.throughput, self.epochs = name, throughput, epochs
        self.num_trials, self.concurrency = num_trials, max_concurrent_trials
        self.time_budget_s, self.interval_s, self.clock = time_budget_s, interval_s, clock
        self._began = clock()
        self._last_printed = -math.inf

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        """The sweep (or its resumption) starts now: elapsed time and budget count from here."""
        self._began, self._last_printed = self.clock(), -math.inf

    def _state(self, trial) -> str:
        if trial.status == "TERMINATED":
            result = trial.last_result or {}
            return "done" if result.get(EPOCH, 0) >= result.get(EPOCHS_PLANNED, self.epochs) else "stopped"
        return _STATES.get(trial.status, trial.status.lower())

    def eta_s(self, trials: list) -> float | None:
        """Seconds until the sweep ends, as the module docstring estimates it; None before any epoch."""
        epoch_seconds, epochs_done, remaining = 0.0, 0, 0
        for trial in trials:
            result = trial.last_result or {}
            epoch = int(result.get(EPOCH, 0))
            if epoch > 0 and "time_total_s" in result:
                epoch_seconds += float(result["time_total_s"])
                epochs_done += epoch
            if trial.status in ("RUNNING", "PENDING", "PAUSED"):
                remaining += int(result.get(EPOCHS_PLANNED, self.epochs)) - epoch
        remaining += max(0, self.num_trials - len(trials)) * self.epochs
        if epochs_done == 0:
            return None
        eta = remaining * (epoch_seconds / epochs_done) / max(1, self.concurrency)
        if self.time_budget_s is not None:
            eta = min(eta, max(0.0, self.time_budget_s - (self.clock() - self._began)))
        return eta

    def render(self, trials: list) -> str:
        """The header line and one row per trial."""
        states = [self._state(trial) for trial in trials]
        counts = [f"{states.count(state)} {state}" for state in ("done", "stopped", "error", "running", "waiting")]
        counts = [count for count in counts if not count.startswith("0 ")] or ["0 started"]
        elapsed = self.clock() - self._began
        eta = self.eta_s(trials)
        header = [
            f"sweep {self.name}: {', '.join(counts)} of {self.num_trials}",
            f"{_clock(elapsed)} elapsed",
            f"ETA {_clock(eta)}" if eta is not None else "ETA -",
        ]
        if self.time_budget_s is not None:
            header.append(f"budget {_clock(self.time_budget_s)}")
        width = max([len("trial")] + [len(trial.trial_id) for trial in trials])
        lines = [
            " | ".join(header),
            f"{'trial':<{width}}  {'state':<8}  {'epoch':>5}  {'best AUROC':>10}  {self.throughput:>10}",
        ]
        for trial, state in zip(trials, states, strict=True):
            result = trial.last_result or {}
            epoch = f"{int(result.get(EPOCH, 0))}/{int(result.get(EPOCHS_PLANNED, self.epochs))}"
            lines.append(
                f"{trial.trial_id:<{width}}  {state:<8}  {epoch:>5}  "
                f"{_figure(result.get(QUALITY)):>10}  {_figure(result.get(self.throughput)):>10}"
            )
        return "\n".join(lines)

    def _print(self, trials: list, force: bool) -> None:
        now = self.clock()
        if not force and now - self._last_printed < self.interval_s:
            return
        self._last_printed = now
        print(self.render(trials), file=sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial started: show it."""
        self._print(trials, force=True)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        """A trial reported an epoch: show it, at most every `interval_s` seconds."""
        self._print(trials, force=False)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial ended: show it."""
        self._print(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial failed: show it."""
        self._print(trials, force=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        """The sweep ended: the final table."""
        self._print(trials, force=True)


def _figure(value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
