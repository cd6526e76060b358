"""`meta.json`: what a dataset directory holds, typed and validated.

A dataset is a directory of fixed-length segments, float32 [N, C, L], split into normal training
segments, labeled validation segments and optional labeled test segments. `meta.json` names each
split's files and says what every array must look like; the arrays themselves stay on disk and are read
through memory maps.

    DIR/meta.json
    DIR/train.npy          [N, C, L] float32  (or train.bin: raw float32, C order, shape from here)
    DIR/val.npy            [N, C, L]
    DIR/val_labels.npy     [N] per segment or [N, L] per point, values 0 or 1
    DIR/val_runs.npy       optional [N] integer run id, to average metrics per run
    DIR/val_starts.npy     optional [N] start of each segment within its run (overlapping windows)
    DIR/test*.npy          optional, as for val
    DIR/holdout.npy        optional [N, C, L] normal segments the model never trains on: they measure the
                           statistics of normal scores (forecast errors) on data the model was not fit to
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tsmoe.errors import describe_fields

META_FILE = "meta.json"
FORMAT_VERSION: Literal[1] = 1
SPLITS = ("train", "val", "test", "holdout")
SplitName = Literal["train", "val", "test", "holdout"]
LABELED_SPLITS: tuple[SplitName, ...] = ("val", "test")  # the splits scored against labels
# The run id of a normal split's segment cut from a normal file rather than from a labelled run's normal rows.
NORMAL_FILE_RUN = -1


class SplitFiles(BaseModel):
    """The files of one split, relative to the dataset directory."""

    model_config = ConfigDict(extra="forbid")

    segments: str  # a .npy array or a raw float32 .bin file
    count: int | None = Field(None, ge=0)  # segments in a .bin file; derived from its size when left out
    labels: str | None = None
    runs: str | None = None
    starts: str | None = None

    @model_validator(mode="after")
    def _check_suffixes(self) -> SplitFiles:
        if not self.segments.endswith((".npy", ".bin")):
            raise ValueError(f"segments must be a .npy or .bin file, got {self.segments!r}")
        for field in ("labels", "runs", "starts"):
            name = getattr(self, field)
            if name is not None and not name.endswith(".npy"):
                raise ValueError(f"{field} must be a .npy file, got {name!r}")
        if self.starts is not None and self.runs is None:
            raise ValueError("starts needs runs: a start is an offset within a run")
        return self


class Normalization(BaseModel):
    """Per-channel statistics of the training segments, applied to every split before the model sees it."""

    model_config = ConfigDict(extra="forbid")

    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _check_values(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        for channel, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):
            if not math.isfinite(mean) or not math.isfinite(std) or std <= 0:
                raise ValueError(f"channel {channel}: need a finite mean and a positive std, got {mean}, {std}")
        return self


class DatasetMeta(BaseModel):
    """The contents of `meta.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = FORMAT_VERSION
    segment_length: int = Field(gt=1)
    channels: list[str] = Field(min_length=1)
    sampling_rate_hz: float = Field(gt=0)
    # Computed from the training split only: statistics of validation or test data would leak into scores.
    normalization: Normalization | None = None
    splits: dict[SplitName, SplitFiles]
    run_names: list[str] = Field(default_factory=list)  # run id -> name (a CSV file, a recording)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_splits(self) -> DatasetMeta:
        for required in ("train", "val"):
            if required not in self.splits:
                raise ValueError(f"splits: a dataset needs a {required!r} split")
        for name in LABELED_SPLITS:
            if name in self.splits and self.splits[name].labels is None:
                raise ValueError(f"splits.{name}.labels: {name} segments need labels")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels: names must be unique, got {self.channels}")
        if self.normalization is not None and len(self.normalization.mean) != len(self.channels):
            raise ValueError(
                f"normalization: {len(self.normalization.mean)} channels of statistics for "
                f"{len(self.channels)} channels"
            )
        return self

    @property
    def num_channels(self) -> int:
        return len(self.channels)


def read_meta(directory: str | Path) -> DatasetMeta:
    """Read and validate `DIR/meta.json`; errors name the file and the field."""
    path = Path(directory) / META_FILE
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: not a dataset directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a dataset directory needs a {META_FILE}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    try:
        return DatasetMeta.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{path}: {describe_fields(error)}") from None


def write_meta(directory: str | Path, meta: DatasetMeta) -> None:
    """Write `DIR/meta.json` atomically, so a crash never leaves half a file."""
    path = Path(directory) / META_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    temporary.replace(path)
