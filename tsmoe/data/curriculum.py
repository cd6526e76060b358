"""Crop curriculum: which crop length training uses at each point of its progress.

Short crops early make the first steps cheap while the model learns local structure; full-length crops
late teach it the long context it is scored with. A schedule is a list of stages, each used until a
fraction of training is done. Lengths are points, or fractions of the segment length in the named
schedules, so a search space can pick a schedule by name for datasets of any segment length.
Validation never crops: it always scores full segments.
"""

from __future__ import annotations

import itertools
import math

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CropStage(BaseModel):
    """Crops of `length` points (an int) or of `length` x segment length (a float <= 1) until `until`."""

    model_config = ConfigDict(extra="forbid")

    until: float = Field(gt=0, le=1)  # fraction of training done when this stage ends
    length: int | float = Field(gt=0)

    @model_validator(mode="after")
    def _check_length(self) -> CropStage:
        if isinstance(self.length, float) and self.length > 1:
            raise ValueError(f"a fractional length must be at most 1 (of the segment length), got {self.length}")
        if isinstance(self.length, int) and self.length < 2:
            raise ValueError(
                f"an integer length counts points and must be at least 2, got {self.length}; "
                "write 1.0 for the full segment"
            )
        return self

    def points(self, segment_length: int) -> int:
        """The stage's crop length in points for segments of `segment_length`."""
        if isinstance(self.length, float):
            return max(2, round(self.length * segment_length))
        return self.length


NAMED_SCHEDULES: dict[str, list[CropStage]] = {
    "full": [CropStage(until=1.0, length=1.0)],
    "half_then_full": [CropStage(until=0.5, length=0.5), CropStage(until=1.0, length=1.0)],
    # The users' 512 -> 1024 -> 2048 on 2048-point segments.
    "quarter_half_full": [
        CropStage(until=0.5, length=0.25),
        CropStage(until=0.8, length=0.5),
        CropStage(until=1.0, length=1.0),
    ],
    "quarter_then_full": [CropStage(until=0.75, length=0.25), CropStage(until=1.0, length=1.0)],
}


def resolve_schedule(schedule: str | list[CropStage]) -> list[CropStage]:
    """The stages of a named or explicit schedule, checked to end at 1.0 with increasing `until`."""
    if isinstance(schedule, str):
        if schedule not in NAMED_SCHEDULES:
            raise ValueError(f"unknown crop schedule {schedule!r}; named schedules: {', '.join(NAMED_SCHEDULES)}")
        return NAMED_SCHEDULES[schedule]
    if not schedule:
        raise ValueError("a crop schedule needs at least one stage")
    ends = [stage.until for stage in schedule]
    if any(later <= earlier for earlier, later in itertools.pairwise(ends)):
        raise ValueError(f"crop schedule stages must end in increasing order, got until={ends}")
    if not math.isclose(ends[-1], 1.0):
        raise ValueError(f"the last crop stage must run until 1.0 (the end of training), got {ends[-1]}")
    return schedule


def crop_lengths(schedule: str | list[CropStage], segment_length: int) -> list[int]:
    """Every crop length the schedule uses on segments of `segment_length` points."""
    return [stage.points(segment_length) for stage in resolve_schedule(schedule)]


def crop_length_at(schedule: str | list[CropStage], segment_length: int, progress: float) -> int:
    """The crop length at `progress` (0 = start of training, 1 = its end)."""
    stages = resolve_schedule(schedule)
    for stage in stages:
        if progress < stage.until:
            return stage.points(segment_length)
    return stages[-1].points(segment_length)
