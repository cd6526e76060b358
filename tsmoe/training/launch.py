"""`tsmoe train`: check everything, start (or join) Ray, run the trainer on N workers, collect the outputs.

The output directory of a run:

    OUT/config.yaml       the resolved config (what `tsmoe train OUT/config.yaml` reruns)
    OUT/metrics.jsonl     one JSON line of metrics per epoch
    OUT/model/            the final model, reference checkpoint format (TimeMoE.from_pretrained)
    OUT/best_model/       the model of the epoch the run keeps: the latest whose validation AUROC is within one
                          standard error of the highest (tsmoe/training/epoch_choice.py)
    OUT/train/            Ray Train's run: checkpoint_* directories, that epoch's and the latest kept

Running the same config into the same OUT again resumes from its latest checkpoint (a crashed or killed
run loses at most the epoch in progress); a different config into an existing OUT is refused, so no
run's outputs are ever overwritten by another's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tsmoe.config import RunConfig, dump_run_config
from tsmoe.data.check import check_dataset
from tsmoe.data.config import check_spectrum_window
from tsmoe.training.checkpoint_files import MODEL_DIR, SUMMARY_FILE, checkpoint_problem
from tsmoe.training.epoch_choice import SELECTION_SCORE, kept_epoch
from tsmoe.training.loopback import PROCESS_GROUP_VARIABLE, UNCHANGED, loopback_cluster

RUN_NAME = "train"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"

# glibc's malloc returns freed memory to the OS eagerly; with large, short-lived batch arrays that means
# page faults on every step. These thresholds keep the memory mapped.
MALLOC_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
}


@dataclass
class TrainingOutcome:
    """Where a finished run left its outputs, its last epoch's metrics and every epoch's."""

    output: Path
    epochs: int
    metrics: dict[str, float]
    model: Path
    best_model: Path | None
    history: list[dict]  # every epoch's metrics


class TrainingFailed(RuntimeError):
    """The run stopped with an error in a worker; its checkpoints so far stay in the output directory."""

    def __init__(self, reason: str, checkpoints: Path | str):
        super().__init__(f"training failed: {reason} (checkpoints so far are in {checkpoints})")
        self.reason, self.checkpoints = reason, checkpoints

    def __reduce__(self):
        # Ray pickles a sweep trial's error to the driver; the default would call __init__ with the message.
        return type(self), (self.reason, self.checkpoints)


# Ray's words for an actor whose process vanished without raising (its exit status is not passed on).
WORKER_DEATH_MARKERS = ("worker process has died", "actor died unexpectedly", "ActorDiedError")
WORKER_DEATH = (
    "a training worker's process died without a Python error: killed by a signal (SIGKILL: the OOM killer, "
    "a preemption, kill -9) or crashed (SIGSEGV, SIGBUS); Ray does not say which"
)


def failure_summary(text: str) -> str:
    """The worker's own error line out of Ray's report, which wraps it in tracebacks; a worker process that
    died without one is named as such."""
    if any(marker in text for marker in WORKER_DEATH_MARKERS):
        return WORKER_DEATH
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line and not line.startswith(("File ", "ray."))]
    return errors[-1] if errors else (lines[-1] if lines else "unknown error")


def worker_environment(use_gpu: bool | None, local_cluster: bool = False) -> dict[str, str]:
    """Environment variables for every Ray worker of a run; `use_gpu=None` (not known yet) leaves out the
    device-dependent ones, and `local_cluster` (a cluster tsmoe starts on this machine) adds what only
    suits one."""
    environment = dict(MALLOC_ENVIRONMENT)
    if use_gpu is False:
        environment["DS_ACCELERATOR"] = "cpu"  # DeepSpeed reads it at import
    # Train waits this long between worker health checks before a report returns; the default 2 s
    # adds up to seconds per epoch on short runs.
    environment["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    if local_cluster:
        # Train's preemption watcher, one more process per run started while the workers set up, looks for
        # drained nodes; the one node of a local cluster is never drained.
        environment["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return environment


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    fields = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            fields += _differences(old[key], new[key], path + ".")
        elif old.get(key) != new.get(key):
            fields.append(path)
    return fields


def prepare_output(run: RunConfig, output: Path) -> None:
    """Write the resolved config into OUT, or check that an existing OUT holds a run of the same config."""
    config_path = output / CONFIG_FILE
    wanted = run.model_dump(mode="json")
    if config_path.is_file():
        existing = yaml.safe_load(config_path.read_text()) or {}
        differing = _differences(existing, wanted)
        if differing:
            raise FileExistsError(
                f"{output}: holds a run of another config (fields {', '.join(differing[:6])} differ); "
                f"choose a new --output, or rerun {config_path} to resume it"
            )
        return
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output}: exists, is not empty and holds no tsmoe run; choose a new --output")
    output.mkdir(parents=True, exist_ok=True)
    dump_run_config(run, config_path)


_REPORTED_PROBLEMS: set[str] = set()


def _checkpoints(output: Path) -> list[tuple[dict, Path]]:
    """(summary, directory) of every intact checkpoint in OUT, oldest first; a broken one (cut short by a
    full disk or a kill, or truncated since) is left out with a message naming its file."""
    found = []
    for directory in sorted((output / RUN_NAME).glob("checkpoint_*")):
        if not directory.is_dir():
            continue  # Ray Train's own checkpoint_manager_snapshot.json
        problem = checkpoint_problem(directory)
        if problem is not None:
            if problem not in _REPORTED_PROBLEMS:  # OUT is scanned several times per run: say it once
                _REPORTED_PROBLEMS.add(problem)
                print(f"skipping a broken checkpoint: {problem}")
            continue
        found.append((json.loads((directory / SUMMARY_FILE).read_text()), directory))
    return sorted(found, key=lambda item: item[0]["epoch"])


def latest_checkpoint(output: Path) -> Path | None:
    """The checkpoint of the latest epoch in OUT, or None."""
    checkpoints = _checkpoints(output)
    return checkpoints[-1][1] if checkpoints else None


def _copy_model(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def collect_outputs(output: Path) -> TrainingOutcome:
    """Write metrics.jsonl, model/ and best_model/ from the checkpoints in OUT."""
    checkpoints = _checkpoints(output)
    if not checkpoints:
        raise RuntimeError(f"{output / RUN_NAME}: the run left no checkpoint")
    summary, latest = checkpoints[-1]
    history = summary["history"]
    with open(output / METRICS_FILE, "w") as file:
        for metrics in history:
            file.write(json.dumps(metrics) + "\n")
    _copy_model(latest / MODEL_DIR, output / "model")
    best = None
    kept = _kept_checkpoint(checkpoints, history)
    if kept is not None:
        best = output / "best_model"
        _copy_model(kept / MODEL_DIR, best)
    return TrainingOutcome(output, summary["epoch"], history[-1] if history else {}, output / "model", best, history)


def _kept_checkpoint(checkpoints: list[tuple[dict, Path]], history: list[dict]) -> Path | None:
    """The checkpoint of the epoch the run keeps as its best (`epoch_choice.kept_epoch`). A run whose checkpoints
    were kept by validation AUROC alone (before that rule) may have lost it: then its kept checkpoint with the
    highest validation AUROC."""
    epoch = kept_epoch(history)
    if epoch is None:
        return None
    for summary, directory in checkpoints:
        if summary["epoch"] == epoch:
            return directory
    scored = [
        (summary["history"][-1].get("val_auroc", math.nan), directory)
        for summary, directory in checkpoints
        if summary["history"]
    ]
    scored = [(auroc, directory) for auroc, directory in scored if math.isfinite(auroc)]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def _cpu_threads(use_gpu: bool, cpus_per_worker: float) -> dict[str, str]:
    """OMP_NUM_THREADS for CPU training workers: their share of the CPUs, as Ray does for other actors.

    Ray sets it for tasks and actors that ask for CPUs, but not for Train's workers, which get theirs from a
    placement group: each then runs torch on every core of the machine. A worker's CPUs are the threads it
    gets (raise `cpus_per_worker` for more). GPU workers keep torch's default for their CPU-side work.
    """
    if use_gpu:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, int(cpus_per_worker)))}


def build_torch_trainer(
    run: RunConfig,
    output: Path,
    workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    gpus_per_worker: float = 1.0,
    callbacks: list | None = None,
    storage: str | None = None,
):
    """The Ray Train trainer of one run: `workers` DDP ranks running `train_worker`, storing its checkpoints
    under OUT/train, or under STORAGE/train when `storage` (a URI that Ray Train resolves with pyarrow, such
    as s3://...) is given. `tsmoe train` and every sweep trial build theirs here.

    It is Ray Train's data-parallel trainer with tsmoe's torch.distributed backend (`process_group.py`), which
    is what `TorchTrainer` is with Ray's: the process that builds it and Ray Train's controller then never
    import torch, seconds of every sweep trial's start on a small machine."""
    # Ray Train V2's classes (what `ray.train.RunConfig` and the trainers are at run time with V2 on, its
    # default), named by their module so that type checkers see the V2 signatures.
    from ray.train.v2.api.config import CheckpointConfig, LoggingConfig, ScalingConfig
    from ray.train.v2.api.config import RunConfig as TrainRunConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from tsmoe.training.process_group import ProcessGroupConfig
    from tsmoe.training.worker import train_worker

    environment = worker_environment(use_gpu) | _cpu_threads(use_gpu, cpus_per_worker)
    resume = latest_checkpoint(output)
    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if use_gpu else {})
    return DataParallelTrainer(
        train_worker,
        # Ray Train V2 resumes a run it finds in its storage by itself; the path covers runs whose Ray
        # bookkeeping was lost, and V2 no longer takes resume_from_checkpoint.
        train_loop_config={"run": run, "resume_from": str(resume) if resume else None},
        backend_config=ProcessGroupConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        # V2's RunConfig, which V2's trainer takes at run time; its annotation names the V1 class.
        run_config=TrainRunConfig(  # type: ignore[arg-type]
            name=RUN_NAME,
            storage_path=storage or str(output),
            checkpoint_config=CheckpointConfig(
                num_to_keep=run.training.keep_checkpoints,
                checkpoint_score_attribute=SELECTION_SCORE,
                checkpoint_score_order="max",
            ),
            # The loopback setup hook patches torch.distributed in these processes only.
            worker_runtime_env={"env_vars": environment | {PROCESS_GROUP_VARIABLE: "1"}},
            # Ray Train's own INFO lines (one per checkpoint and report) drown the run's progress lines.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or [],
        ),
    )


def run_training(
    run: RunConfig, output: str | Path, workers: int = 1, address: str | None = None, cpus_per_worker: int | None = None
) -> TrainingOutcome:
    """Train `run` with `workers` DDP ranks under Ray Train; resumes a run already in `output`."""
    if workers < 1:
        raise ValueError(f"--workers: need at least 1, got {workers}")
    output = Path(output).resolve()
    # Everything that can be wrong with the inputs fails here, before any Ray or GPU work.
    summary = check_dataset(
        run.data.path, crop_schedule=run.data.crop_schedule, batch_size=run.data.batch_size * workers
    )
    check_spectrum_window(run.data, summary.meta.segment_length)
    prepare_output(run, output)
    done = _checkpoints(output)
    if done and done[-1][0]["epoch"] >= run.training.epochs:
        print(f"{output}: already trained for {run.training.epochs} epochs; collecting its outputs")
        return collect_outputs(output)

    import ray
    import ray.train

    # Joining a cluster (--address), whether it has GPUs is known only once joined: until then the job-wide
    # environment leaves out what depends on it (DS_ACCELERATOR=cpu there would reach GPU workers too).
    import torch

    use_gpu: bool | None = torch.cuda.is_available()
    if address is not None:
        use_gpu = bool(ray.cluster_resources().get("GPU")) if ray.is_initialized() else None
    environment = worker_environment(use_gpu, local_cluster=address is None)
    os.environ.update({key: value for key, value in environment.items() if key.startswith("RAY_")})
    started_ray = not ray.is_initialized()
    # A cluster this run starts for itself listens on the loopback interface only; a joined one is as it is.
    loopback = contextlib.ExitStack()
    binding = loopback.enter_context(loopback_cluster()) if started_ray and address is None else UNCHANGED
    try:
        if started_ray:
            ray.init(
                address=address,
                dashboard_host="127.0.0.1",
                runtime_env={"env_vars": environment, **binding.runtime_env},
                logging_level=logging.WARNING,
                **binding.init_arguments,
            )
        if use_gpu is None:
            use_gpu = bool(ray.cluster_resources().get("GPU"))
        if cpus_per_worker is None:
            cpus_per_worker = 1 if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        trainer = build_torch_trainer(run, output, workers, use_gpu, cpus_per_worker)
        trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise TrainingFailed(failure_summary(str(error)), output / RUN_NAME) from error
    finally:
        if started_ray:
            ray.shutdown()
        loopback.close()
    return collect_outputs(output)
