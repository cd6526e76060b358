"""Where training data comes from and how it is batched: the data part of a run's config."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tsmoe.data.curriculum import CropStage, resolve_schedule


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

    @field_validator("crop_schedule")
    @classmethod
    def _known_schedule(cls, schedule: str | list[CropStage]) -> str | list[CropStage]:
        resolve_schedule(schedule)
        return schedule
