"""A sweep definition (`sweeps/*.yaml`): what to search, how to score it, and with what resources.

    name: quickstart                       # the sweep directory is STORAGE/NAME
    dataset:
      path: ../data/synthetic              # relative to this file
      synthesize: {train_segments: 96, ...}  # optional: write the built-in dataset there if it is missing
    base_config: ../configs/sweep_quickstart.yaml
    search_space: ../search_spaces/quickstart.yaml
    objectives: {throughput: samples_s}    # and validation AUROC, always
    sampler: tpe                           # or nsga2
    num_trials: 6
    max_concurrent_trials: 1
    resources: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 0}
    early_stopping: {scheduler: moasha, metric: val_auroc, grace_period: 2, patience: 3, max_load_share: 0.9}
    constraints: {min_throughput: null, max_memory_mib: null}
    time_budget_s: 600
    storage: ../runs/sweeps                # or file:///mnt/shared/sweeps, or s3://bucket/sweeps (any node reaches it)
    local_storage: ../runs/sweeps          # with a URI storage: where the driver keeps its own files, LOCAL/NAME
    seed: 0
    address: null                          # a Ray cluster to join instead of starting one
    enqueue: [../best.yaml]                # optional: run configs whose searched values are tried first
    loggers: [tensorboard, mlflow]         # optional: experiment trackers (MLflow to STORAGE/NAME/mlruns)

`load_sweep` checks all of it, the base config, the dataset and the search space, before any Ray work.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tsmoe.config import RunConfig, load_run_config, read_yaml
from tsmoe.data.meta import META_FILE
from tsmoe.errors import describe_fields
from tsmoe.sweep.object_storage import Location, check_uri, join
from tsmoe.sweep.pareto import QUALITY
from tsmoe.sweep.space import SearchSpace, load_search_space

# What a trial reports every epoch that early stopping may watch, and in which direction it improves.
STOPPING_METRICS = {
    "val_auroc": "max",
    QUALITY: "max",
    "val_auprc": "max",
    "val_best_f1": "max",
    "loss": "min",
    "samples_s": "max",
    "tokens_s": "max",
    "it_s": "max",
}


class SynthesizeConfig(BaseModel):
    """Arguments of `tsmoe data synth` for a sweep whose dataset does not exist yet."""

    model_config = ConfigDict(extra="forbid")

    train_segments: int = Field(256, gt=0)
    val_segments: int = Field(128, gt=0)
    test_segments: int = Field(128, ge=0)
    segment_length: int = Field(2048, ge=16)
    sampling_rate_hz: float = Field(1000.0, gt=0)
    anomaly_fraction: float = Field(0.5, gt=0, lt=1)
    seed: int = 0


class DatasetConfig(BaseModel):
    """The dataset every trial trains and validates on."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    synthesize: SynthesizeConfig | None = None


class ObjectivesConfig(BaseModel):
    """The two objectives, both maximised: best validation AUROC, and a throughput figure."""

    model_config = ConfigDict(extra="forbid")

    # samples_s by default: it_s (optimizer steps per second) rewards tiny batches.
    throughput: Literal["samples_s", "tokens_s", "it_s"] = "samples_s"


class ResourcesConfig(BaseModel):
    """What one trial uses: its DDP workers and each worker's share of the machine."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    # A fraction packs several workers (of one or more trials) onto one GPU.
    gpus_per_worker: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _whole_or_fractional_gpu(self) -> ResourcesConfig:
        if self.gpus_per_worker > 1 and not self.gpus_per_worker.is_integer():
            raise ValueError(f"gpus_per_worker above 1 must be a whole number, got {self.gpus_per_worker}")
        return self


class EarlyStoppingConfig(BaseModel):
    """How hopeless trials end early: a Tune scheduler (MOASHA on both objectives, or ASHA on `metric`),
    a plateau rule on `metric` and a NaN rule."""

    model_config = ConfigDict(extra="forbid")

    scheduler: Literal["moasha", "asha", "none"] = "moasha"
    metric: str = "val_auroc"
    grace_period: int = Field(1, gt=0)  # epochs every trial runs before (MO)ASHA may stop it
    reduction_factor: float = Field(2.0, gt=1)
    # Stop a trial whose metric has not improved for this many epochs; None: never.
    patience: int | None = Field(None, gt=0)
    stop_nonfinite: bool = True  # stop a trial whose epoch loss is NaN/inf
    # Stop a trial whose routing collapsed: one expert received more than this share of an epoch's tokens
    # in some MoE layer (its experts then compare nothing; docs/routing.md). None: never.
    max_load_share: float | None = Field(0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _known_metric(self) -> EarlyStoppingConfig:
        if self.metric not in STOPPING_METRICS:
            raise ValueError(
                f"metric {self.metric!r} is not reported every epoch; choose one of {', '.join(STOPPING_METRICS)}"
            )
        return self

    @property
    def mode(self) -> str:
        """max or min: the direction in which the metric improves."""
        return STOPPING_METRICS[self.metric]


class ConstraintsConfig(BaseModel):
    """Trials outside these bounds are infeasible: kept in the table, never on the front or exported."""

    model_config = ConfigDict(extra="forbid")

    min_throughput: float | None = Field(None, gt=0)  # in the unit of objectives.throughput
    max_memory_mib: float | None = Field(None, gt=0)  # peak memory per worker


class SweepConfig(BaseModel):
    """A sweep definition as written in `sweeps/NAME.yaml`; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetConfig
    base_config: Path
    search_space: Path
    objectives: ObjectivesConfig = Field(default_factory=ObjectivesConfig)
    sampler: Literal["tpe", "nsga2"] = "tpe"
    num_trials: int = Field(gt=0)
    max_concurrent_trials: int = Field(1, gt=0)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    time_budget_s: float | None = Field(None, gt=0)
    storage: Path | str = Path("runs/sweeps")  # a path, or an object storage URI (tsmoe/sweep/object_storage.py)
    local_storage: Path = Path("runs/sweeps")  # with a URI storage: the driver's study, lock and results
    seed: int = 0
    address: str | None = None
    max_failures: int = Field(0, ge=0)  # retries of a crashed trial (it resumes from its last checkpoint)
    enqueue: list[Path] = Field(default_factory=list)  # run configs whose values are the first trials
    # Experiment trackers fed by Ray Tune's logger callbacks (tsmoe/sweep/loggers.py).
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
    mlflow_tracking_uri: str | None = None  # None: SWEEP/mlruns, a local MLflow file store

    @field_validator("storage", mode="before")
    @classmethod
    def _path_or_uri(cls, value: Any) -> Any:
        """A path, a file:// URI of one (file:///mnt/shared/sweeps), or an object storage URI (s3://bucket/prefix),
        which stays a string."""
        if not isinstance(value, str) or "://" not in value:
            return Path(value) if isinstance(value, str) else value
        parsed = urllib.parse.urlparse(value)
        if parsed.scheme != "file":
            return check_uri(value)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{value}: a file:// URI names a path, file:///PATH; got the host {parsed.netloc!r}")
        return Path(urllib.parse.unquote(parsed.path))

    @property
    def directory(self) -> Path:
        """The sweep directory: the study, the lock and the results, and (with a path as storage) Tune's state
        and each trial's run too; with a URI as storage, a local copy of those (object_storage.py)."""
        storage = self.storage if isinstance(self.storage, Path) else self.local_storage
        return storage / self.name

    @property
    def experiment_location(self) -> Location:
        """Where Tune keeps the sweep's experiment and each trial's run: the sweep directory, or STORAGE_URI/NAME."""
        return self.directory if isinstance(self.storage, Path) else join(self.storage, self.name)


@dataclass
class Sweep:
    """A loaded, checked sweep: its definition, the base run config and the search space."""

    config: SweepConfig
    base: RunConfig
    space: SearchSpace
    source: Path


def _resolve(path: Path, directory: Path) -> Path:
    return path if path.is_absolute() else (directory / path).resolve()


def parse_sweep_config(values: Any, source: str) -> SweepConfig:
    """Validate a mapping as a sweep definition; errors name the source and every bad field."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of sweep settings (name, dataset, base_config, ...)")
    try:
        return SweepConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{source}: {describe_fields(error)}") from None


def read_sweep_config(path: str | Path) -> SweepConfig:
    """Read `sweeps/NAME.yaml`, with its relative paths taken from the file's directory."""
    path = Path(path)
    config = parse_sweep_config(read_yaml(path, "sweep file"), str(path))
    directory = path.parent
    config.dataset.path = _resolve(config.dataset.path, directory)
    config.base_config = _resolve(config.base_config, directory)
    config.search_space = _resolve(config.search_space, directory)
    if isinstance(config.storage, Path):
        config.storage = _resolve(config.storage, directory)
    config.local_storage = _resolve(config.local_storage, directory)
    config.enqueue = [_resolve(enqueued, directory) for enqueued in config.enqueue]
    return config


def load_sweep(
    path: str | Path,
    address: str | None = None,
    prepare_data: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Sweep:
    """Read and check a sweep: its file, the base config, the dataset (written first when the sweep says
    to synthesize it, `progress` called as segments are written) and the search space against both.
    Nothing here starts Ray."""
    from tsmoe.data.check import check_dataset
    from tsmoe.data.store import open_dataset

    path = Path(path)
    config = read_sweep_config(path)
    if address is not None:
        config.address = address
    base = load_run_config(config.base_config)
    base.data.path = config.dataset.path
    base.origin = None  # a sweep may start from an exported config; its trials come from this sweep
    epochs = base.training.epochs
    stopping = config.early_stopping
    if stopping.scheduler in ("moasha", "asha") and stopping.grace_period > epochs:
        raise ValueError(
            f"{path}: field early_stopping.grace_period: {stopping.grace_period} epochs is more than "
            f"the {epochs} epochs of {config.base_config}"
        )
    dataset_path = config.dataset.path
    if prepare_data and config.dataset.synthesize is not None and not (dataset_path / META_FILE).is_file():
        from tsmoe.data.synth import generate_synthetic_dataset

        print(f"writing the built-in synthetic dataset to {dataset_path}")
        generate_synthetic_dataset(dataset_path, progress=progress, **config.dataset.synthesize.model_dump())
    if not (dataset_path / META_FILE).is_file():
        raise FileNotFoundError(
            f"{path}: field dataset.path: {dataset_path} holds no dataset (no meta.json); "
            f"write one with `tsmoe data synth` or `tsmoe data from-csv`, or add "
            f"dataset.synthesize"
        )
    check_dataset(dataset_path, crop_schedule=base.data.crop_schedule)
    segment_length = open_dataset(dataset_path).meta.segment_length
    space = load_search_space(config.search_space, base, segment_length)
    if "training.epochs" in space.parameters:
        # Early stopping's rungs and the completed/stopped verdict count epochs against the base config's.
        raise ValueError(
            f"{config.search_space}: field training.epochs: cannot be searched; every trial trains "
            f"the {epochs} epochs of {config.base_config}"
        )
    if "mlflow" in config.loggers:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise ValueError(f"{path}: field loggers: mlflow needs the mlflow package (pip install 'tsmoe[mlflow]')")
    if config.enqueue:
        from tsmoe.sweep.warm_start import enqueued_points

        enqueued_points(config.enqueue, space)  # a config outside the space fails here, before Ray starts
    return Sweep(config=config, base=base, space=space, source=path)
