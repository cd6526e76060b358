import pytest
from pydantic import ValidationError

from tsmoe.data.config import DataConfig
from tsmoe.data.curriculum import CropStage, crop_length_at, crop_lengths, resolve_schedule


def test_named_schedule_scales_with_segment_length():
    assert crop_lengths("quarter_half_full", 2048) == [512, 1024, 2048]
    assert crop_lengths("quarter_half_full", 256) == [64, 128, 256]


@pytest.mark.parametrize(
    "progress, expected", [(0.0, 512), (0.49, 512), (0.5, 1024), (0.79, 1024), (0.8, 2048), (1.0, 2048)]
)
def test_crop_length_follows_the_stage_in_force(progress, expected):
    assert crop_length_at("quarter_half_full", 2048, progress) == expected


def test_explicit_schedule_uses_absolute_lengths():
    schedule = [CropStage(until=0.25, length=100), CropStage(until=1.0, length=1.0)]
    assert crop_length_at(schedule, 400, 0.1) == 100
    assert crop_length_at(schedule, 400, 0.3) == 400


def test_schedule_must_end_at_one_and_increase():
    with pytest.raises(ValueError, match=r"until 1\.0"):
        resolve_schedule([CropStage(until=0.5, length=10)])
    with pytest.raises(ValueError, match="increasing"):
        resolve_schedule(
            [CropStage(until=0.5, length=10), CropStage(until=0.5, length=20), CropStage(until=1.0, length=30)]
        )


def test_unknown_named_schedule_is_rejected_at_config_time():
    with pytest.raises(ValidationError, match="unknown crop schedule 'halves'"):
        DataConfig(crop_schedule="halves")


def test_fractional_length_above_one_is_rejected():
    with pytest.raises(ValidationError, match="at most 1"):
        CropStage(until=1.0, length=1.5)


def test_integer_length_one_is_not_mistaken_for_the_full_segment():
    with pytest.raises(ValidationError, match=r"write 1\.0 for the full segment"):
        CropStage(until=1.0, length=1)
