"""Where training data comes from and how it is batched: the data part of a run's config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tsmoe.data.curriculum import CropStage, crop_lengths, resolve_schedule

ViewName = Literal["time", "spectrum", "residual"]
DEFAULT_VIEWS: tuple[ViewName, ...] = ("time",)


class DataConfig(BaseModel):
    """A dataset directory and the loader settings that feed the training step."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    path: Path = Path("data/synthetic")
    batch_size: int = Field(8, gt=0)  # segments per micro-batch per worker; each segment has C channels
    crop_schedule: str | list[CropStage] = "full"
    num_workers: int = Field(2, ge=0)
    prefetch_factor: int = Field(4, gt=0)
    pin_memory: bool | None = None  # None: pin when training on a GPU
    shuffle: bool = True
    seed: int = 0
    # An epoch is at least this many batches per worker: a small training split is passed over several
    # times (each pass reshuffled, with fresh crops), so a model trained on a few hundred points gets as
    # many optimizer steps as the config's epochs promise on a large one. 0: one pass, however short.
    min_batches_per_epoch: int = Field(0, ge=0)
    # The series the model sees (tsmoe/data/views.py): each channel itself; with `spectrum` also each channel's
    # causal short-time band powers; with `residual` also the channel vector's projections on the directions
    # normal data barely varies along. Computed per crop on the training device.
    views: list[ViewName] = Field(default_factory=lambda: list(DEFAULT_VIEWS))
    spectrum_window: int = Field(64, ge=2)  # points of the trailing window each band power is measured over
    spectrum_bands: int = Field(4, ge=1)  # equal-width frequency bands between 0 and the Nyquist frequency
    # `residual`: a principal direction of the training split's channel vectors whose variance is below this
    # share of the mean channel variance is one the channels normally cancel along (three phases summing to
    # zero, two sensors of one quantity); the projection on each becomes a series.
    residual_variance: float = Field(0.05, gt=0, lt=1)
    # Whose normal data the residual directions come from: the whole training split, or "run": each labelled
    # run's own (its normal prefix or its paired normal file, `tsmoe data from-csv`), so that machines whose
    # channels relate in their own ways are each projected on their own relations. Runs without such data, and
    # datasets without any, use the whole split's.
    residual_reference: Literal["all", "run"] = "all"

    @field_validator("crop_schedule")
    @classmethod
    def _known_schedule(cls, schedule: str | list[CropStage]) -> str | list[CropStage]:
        resolve_schedule(schedule)
        return schedule

    @field_validator("views")
    @classmethod
    def _time_first_once(cls, views: list[ViewName]) -> list[ViewName]:
        # The time series comes first: the spectral series are extra series beside it, never a replacement.
        if not views or views[0] != "time":
            raise ValueError(f"must start with time (the channel itself), got {views}; e.g. [time, spectrum]")
        if len(set(views)) != len(views):
            raise ValueError(f"lists a view twice: {views}")
        return views

    @field_validator("spectrum_window")
    @classmethod
    def _power_of_two(cls, window: int) -> int:
        if window & (window - 1):
            raise ValueError(f"must be a power of two (the FFT length), got {window}")
        return window

    @model_validator(mode="after")
    def _bands_fit_the_window(self) -> DataConfig:
        # A window of W points has W/2 frequency bins above 0: each band needs at least one.
        if self.spectrum_bands > self.spectrum_window // 2:
            raise ValueError(
                f"spectrum_bands {self.spectrum_bands}: at most spectrum_window / 2 = {self.spectrum_window // 2} "
                "(one frequency bin per band)"
            )
        return self

    @property
    def spectral(self) -> bool:
        """Whether the model sees the spectral view beside the time series."""
        return "spectrum" in self.views

    @property
    def residual(self) -> bool:
        """Whether the model sees the cross-channel residual series beside the time series."""
        return "residual" in self.views


def check_spectrum_window(config: DataConfig, segment_length: int) -> None:
    """Raise a ValueError naming data.spectrum_window when the spectral view's window exceeds the shortest
    crop the curriculum trains on (a longer window would measure mostly the padding before a crop)."""
    if not config.spectral:
        return
    shortest = min([*crop_lengths(config.crop_schedule, segment_length), segment_length])
    if config.spectrum_window > shortest:
        raise ValueError(
            f"field data.spectrum_window: {config.spectrum_window} points, longer than the shortest crop "
            f"({shortest} points of {segment_length}-point segments with crop_schedule {config.crop_schedule!r}); "
            f"choose a power of two <= {shortest}"
        )
