"""The evaluation part of a run config: which values it accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tsmoe.evaluation.config import BASELINE_NAMES, EvaluationConfig


def test_defaults_report_every_baseline_beside_the_one_step_head():
    config = EvaluationConfig()
    assert config.heads == [1] and config.baselines == list(BASELINE_NAMES)


@pytest.mark.parametrize(
    "values, field",
    [
        ({"baselines": ["lstm"]}, "baselines"),
        ({"segment_quantile": 1.0}, "segment_quantile"),
        ({"heads": []}, "heads"),
        ({"moving_window": 1}, "moving_window"),
        ({"smoothing_window": 0}, "smoothing_window"),
        ({"density_weight": -1.0}, "density_weight"),
        ({"reconstruction_weight": -0.5}, "reconstruction_weight"),
    ],
)
def test_out_of_range_settings_are_rejected_naming_the_field(values, field):
    with pytest.raises(ValidationError) as raised:
        EvaluationConfig.model_validate(values)
    assert raised.value.errors()[0]["loc"][0] == field


def test_every_score_weight_zero_is_rejected():
    with pytest.raises(ValidationError, match="at least one must be > 0"):
        EvaluationConfig(forecast_weight=0.0)


def test_the_reconstruction_component_alone_is_a_valid_score():
    assert EvaluationConfig(forecast_weight=0.0, reconstruction_weight=1.0).reconstruction_weight == 1.0
