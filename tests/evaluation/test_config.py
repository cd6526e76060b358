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
        ({"context_window": 1}, "context_window"),
        ({"density_weight": -1.0}, "density_weight"),
        ({"reconstruction_weight": -0.5}, "reconstruction_weight"),
        ({"normal_reference": "nearby"}, "normal_reference"),
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


def test_candidates_are_the_section_then_each_alternative_applied_to_it():
    config = EvaluationConfig(
        density_weight=1.0,
        smoothing_window=8,
        alternatives=[
            {"density_weight": 0.0},
            {"forecast_weight": 0.0, "density_layer": 0},
            {"forecast_weight": 0.0, "context_window": 32},
        ],
    )
    first, forecast_only, embedding_only, windowed_density = config.candidates()
    assert (first.context_window, windowed_density.context_window) == (None, 32)
    assert first == config.model_copy(update={"alternatives": []})
    assert (forecast_only.forecast_weight, forecast_only.density_weight) == (1.0, 0.0)
    assert (embedding_only.forecast_weight, embedding_only.density_weight, embedding_only.density_layer) == (0, 1, 0)
    # What an alternative does not change is the section's.
    assert {candidate.smoothing_window for candidate in config.candidates()} == {8}
    assert all(not candidate.alternatives for candidate in config.candidates())
    assert EvaluationConfig().candidates() == [EvaluationConfig()]


@pytest.mark.parametrize(
    "alternative, message",
    [
        ({"seed": 3}, r"alternatives\[0\]: seed cannot differ between detectors"),
        ({"baselines": []}, r"alternatives\[0\]: baselines cannot differ"),
        ({"alternatives": [{}]}, r"alternatives\[0\]: alternatives cannot differ"),
        ({"smoothing_window": 0}, r"alternatives\[0\]\.smoothing_window: Input should be greater than or equal to 1"),
        ({"density_layer": "first"}, r"alternatives\[0\]\.density_layer"),
        ({"forecast_weight": 0.0}, r"alternatives\[0\]: forecast_weight, cross_channel_weight, density_weight and"),
    ],
    ids=["seed", "baselines", "nested", "range", "layer", "no-component"],
)
def test_an_alternative_is_refused_naming_its_index_and_field(alternative, message):
    with pytest.raises(ValidationError, match=message):
        EvaluationConfig(alternatives=[alternative])
