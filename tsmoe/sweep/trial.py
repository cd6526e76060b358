"""One sweep trial: the sampled parameters on the base config, trained by the same Ray Train run as
`tsmoe train`.

The trial is a Tune function that builds a `TorchTrainer` and waits for it; `TuneReportCallback` hands
every epoch's rank-0 metrics to Tune, where the searcher, the scheduler and the stoppers see them. The
trial's run directory is SWEEP/trials/TRIAL_ID: a complete `tsmoe train` output (config.yaml,
metrics.jsonl, checkpoints, model/, best_model/), named by the Tune trial id so that a restored sweep
resumes the same Train run from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsmoe.config import RunConfig
from tsmoe.sweep.space import SearchSpace

TRIALS_DIR = "trials"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (sent to trials through Ray's object store)."""

    base: RunConfig
    space: SearchSpace
    directory: Path  # the sweep directory
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    def trial_config(self, params: dict[str, Any]) -> RunConfig:
        """The run config of a trial with these sampled parameters."""
        return self.space.apply(self.base, params)

    def trial_directory(self, trial_id: str) -> Path:
        """Where the trial's training run keeps its outputs."""
        return self.directory / TRIALS_DIR / trial_id


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable: train the trial's config with `setup.workers` DDP ranks, reporting every epoch."""
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tsmoe.training.launch import (
        TrainingFailed,
        build_torch_trainer,
        collect_outputs,
        failure_summary,
        prepare_output,
    )

    trial_id = ray.tune.get_context().get_trial_id()
    run = setup.trial_config(params)
    output = setup.trial_directory(trial_id)
    prepare_output(run, output)
    trainer = build_torch_trainer(
        run,
        output,
        setup.workers,
        use_gpu=setup.gpus_per_worker > 0,
        cpus_per_worker=setup.cpus_per_worker,
        gpus_per_worker=setup.gpus_per_worker,
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as error:
        from tsmoe.sweep.failures import record_failure

        # The searcher and the results table read whether it ran out of memory or diverged.
        record_failure(output, str(error), failure_summary(str(error)))
        # Tune records the trial as errored with this one line, not Ray's nested tracebacks.
        raise TrainingFailed(failure_summary(str(error)), output) from None
    collect_outputs(output)
