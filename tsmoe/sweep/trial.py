"""One sweep trial: the sampled parameters on the base config, trained by the same Ray Train run as
`tsmoe train`.

The trial is a Tune function that builds the run's Ray Train trainer and waits for it; `TuneReportCallback` hands
every epoch's rank-0 metrics to Tune, where the searcher, the scheduler and the stoppers see them. The
trial's run directory is SWEEP/trials/TRIAL_ID: a complete `tsmoe train` output (config.yaml,
metrics.jsonl, checkpoints, model/, best_model/), named by the Tune trial id so that a restored sweep
resumes the same Train run from its last checkpoint.

With object storage (a URI as the sweep's storage) the run lives at STORAGE_URI/NAME/trials/TRIAL_ID: Ray
Train writes its checkpoints there, and the trial's process prepares the run in a local staging directory,
then puts config.yaml, metrics.jsonl, model/, best_model/ (and a failure's record) next to them.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsmoe.config import RunConfig
from tsmoe.sweep.object_storage import Location, is_uri, join
from tsmoe.sweep.space import SearchSpace

TRIALS_DIR = "trials"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (sent to trials through Ray's object store)."""

    base: RunConfig
    space: SearchSpace
    experiment: Location  # where the trials' runs go under trials/: the sweep directory, or STORAGE_URI/NAME
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    def trial_config(self, params: dict[str, Any]) -> RunConfig:
        """The run config of a trial with these sampled parameters."""
        return self.space.apply(self.base, params)

    def trial_directory(self, trial_id: str) -> Location:
        """Where the trial's training run keeps its outputs."""
        return join(self.experiment, TRIALS_DIR, trial_id)


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable: train the trial's config with `setup.workers` DDP ranks, reporting every epoch."""
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tsmoe.training.launch import (
        RUN_NAME,
        TrainingFailed,
        build_torch_trainer,
        collect_outputs,
        failure_summary,
        prepare_output,
    )

    trial_id = ray.tune.get_context().get_trial_id()
    run = setup.trial_config(params)
    location = setup.trial_directory(trial_id)
    storage = str(location) if is_uri(location) else None
    with contextlib.ExitStack() as stack:
        # On a path, the run's outputs are written where they stay; with object storage, in a local staging
        # directory first.
        if storage is None:
            output = Path(location)
        else:
            output = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tsmoe-trial-{trial_id}-")))
            fetch_run_files(storage, output)
        prepare_output(run, output)
        if storage is not None:
            put_run_files(output, storage)
        trainer = build_torch_trainer(
            run,
            output,
            setup.workers,
            use_gpu=setup.gpus_per_worker > 0,
            cpus_per_worker=setup.cpus_per_worker,
            gpus_per_worker=setup.gpus_per_worker,
            callbacks=[TuneReportCallback()],
            storage=storage,
        )
        try:
            trainer.fit()
        except ray.train.TrainingFailedError as error:
            from tsmoe.sweep.failures import record_failure

            # The searcher and the results table read whether it ran out of memory or diverged.
            record_failure(output, str(error), failure_summary(str(error)))
            if storage is not None:
                put_run_files(output, storage)
            # Tune records the trial as errored with this one line, not Ray's nested tracebacks.
            raise TrainingFailed(failure_summary(str(error)), join(location, RUN_NAME)) from None
        if storage is not None:
            fetch_run_files(storage, output, checkpoints=True)
        collect_outputs(output)
        if storage is not None:
            put_run_files(output, storage)


def fetch_run_files(location: str, output: Path, checkpoints: bool = False) -> list[str]:
    """Copy a run's files from object storage into the local directory `output`: its config.yaml and other
    top-level files, and with `checkpoints` Ray Train's checkpoints too (what collect_outputs reads)."""
    from tsmoe.sweep.object_storage import download
    from tsmoe.training.launch import RUN_NAME

    def skip(relative: str) -> bool:
        parts = relative.split("/")
        if parts[0] == RUN_NAME:
            return not (checkpoints and len(parts) > 2 and parts[1].startswith("checkpoint_"))
        return len(parts) > 1  # model/ and best_model/ are written from the checkpoints, never read back

    return download(location, output, skip)


def put_run_files(output: Path, location: str) -> None:
    """Copy what the trial's process wrote locally (not Ray Train's checkpoints, which Train stores itself)
    to the run's place in object storage."""
    from tsmoe.sweep.object_storage import upload
    from tsmoe.training.launch import RUN_NAME

    for path in sorted(output.iterdir()):
        if path.name != RUN_NAME and not path.name.endswith(".partial"):
            upload(path, str(join(location, path.name)))
