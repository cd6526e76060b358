"""The data part of a run config: crop schedules by name or by stages, and loader bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tsmoe.config import parse_run_config
from tsmoe.data.config import DataConfig
from tsmoe.data.curriculum import CropStage


def test_a_schedule_is_a_known_name_or_a_list_of_stages():
    assert DataConfig(crop_schedule="quarter_half_full").crop_schedule == "quarter_half_full"
    staged = DataConfig.model_validate(
        {"crop_schedule": [{"until": 0.5, "length": 128}, {"until": 1.0, "length": 1.0}]}
    )
    assert staged.crop_schedule == [CropStage(until=0.5, length=128), CropStage(until=1.0, length=1.0)]


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"crop_schedule": "fullest"}, "unknown crop schedule"),
        ({"crop_schedule": [{"until": 0.5, "length": 128}]}, "must run until 1.0"),
        ({"batch_size": 0}, "greater than 0"),
    ],
)
def test_bad_settings_are_rejected(values, problem):
    with pytest.raises(ValidationError, match=problem):
        DataConfig.model_validate(values)


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"views": ["spectrum"]}, "must start with time"),
        ({"views": []}, "must start with time"),
        ({"views": ["time", "spectrum", "spectrum"]}, "lists a view twice"),
        ({"views": ["time", "wavelet"]}, "'time', 'spectrum' or 'residual'"),
        ({"views": ["time", "residual", "residual"]}, "lists a view twice"),
        ({"residual_variance": 0.0}, "greater than 0"),
        ({"residual_variance": 1.0}, "less than 1"),
        ({"spectrum_window": 48}, "must be a power of two"),
        ({"spectrum_window": 8, "spectrum_bands": 5}, "at most spectrum_window / 2 = 4"),
        ({"spectrum_bands": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_view_settings_are_rejected(values, problem):
    with pytest.raises(ValidationError, match=problem):
        DataConfig.model_validate(values)


def test_view_errors_in_a_run_config_name_the_field():
    with pytest.raises(ValueError, match=r"run.yaml: field data.views: .*must start with time"):
        parse_run_config({"data": {"views": ["spectrum", "time"]}}, source="run.yaml")
    assert DataConfig(views=["time", "spectrum"]).spectral and not DataConfig().spectral
    assert DataConfig(views=["time", "residual"]).residual and not DataConfig(views=["time", "spectrum"]).residual
