"""Distributions of a search space: their Optuna form, JSON choices, and how a malformed one reads."""

import json

import optuna
import pytest

from tests.sweep.conftest import EXPLICIT_SCHEDULE, load_error, write_space
from tsmoe.sweep.space import load_search_space


def test_distributions_map_to_optuna_types_with_their_bounds_log_and_step(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n"
        "  data.batch_size: {type: categorical, choices: [4, 8]}\n"
        "  model.num_hidden_layers: {type: int, low: 2, high: 6, step: 2}\n"
        "  training.gradient_accumulation: {type: int, low: 1, high: 8, log: true}\n"
        "  training.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}\n"
        "  training.weight_decay: {type: float, low: 0.0, high: 0.2, step: 0.05}\n"
        "  model.router_init_std: {type: fixed, value: 0.002}\n",
    )
    distributions = load_search_space(path, small_base, 512).optuna_distributions()

    assert distributions == {
        "data.batch_size": optuna.distributions.CategoricalDistribution([4, 8]),
        "model.num_hidden_layers": optuna.distributions.IntDistribution(2, 6, step=2),
        "training.gradient_accumulation": optuna.distributions.IntDistribution(1, 8, log=True),
        "training.learning_rate": optuna.distributions.FloatDistribution(3e-4, 3e-3, log=True),
        "training.weight_decay": optuna.distributions.FloatDistribution(0.0, 0.2, step=0.05),
    }


def test_non_scalar_choices_travel_through_optuna_as_json_strings_and_decode_back(tmp_path, small_base):
    path = write_space(
        tmp_path,
        "parameters:\n  data.crop_schedule:\n    type: categorical\n    choices:\n"
        "      - full\n      - [{until: 0.5, length: 256}, {until: 1.0, length: 1.0}]\n",
    )
    space = load_search_space(path, small_base, 512)

    choices = space.optuna_distributions()["data.crop_schedule"].choices
    assert choices == ("full", json.dumps(EXPLICIT_SCHEDULE, sort_keys=True))
    assert space.decode({"data.crop_schedule": choices[1]}) == {"data.crop_schedule": EXPLICIT_SCHEDULE}
    assert space.decode({"data.crop_schedule": "full"}) == {"data.crop_schedule": "full"}
    # A results table may hold the JSON with other spacing.
    assert space.decode({"data.crop_schedule": json.dumps(EXPLICIT_SCHEDULE, separators=(",", ":"))}) == {
        "data.crop_schedule": EXPLICIT_SCHEDULE
    }
    with pytest.raises(ValueError, match=r"space.yaml: field data.crop_schedule: .*not one of the choices"):
        space.decode({"data.crop_schedule": "quarter_then_full"})


@pytest.mark.parametrize(
    "distribution, reason",
    [
        ("{type: int, low: 5, high: 2}", "low 5 is greater than high 2"),
        ("{type: float, low: 0.0, high: 0.1, log: true}", "a log range needs low > 0"),
        ("{type: int, low: 0, high: 4, log: true}", "a log range needs low >= 1"),
        ("{type: float, low: 0.1, high: 0.5, step: 0.1, log: true}", "log and step cannot be combined"),
        ("{type: int, low: 2, high: 7, step: 2}", "high 7 is not low 2 plus a multiple of step 2"),
        ("{type: int, low: 1.5, high: 4}", "field data.batch_size.low: Input should be a valid integer"),
        ("{type: categorical, choices: []}", "field data.batch_size.choices: List should have at least 1 item"),
        ("{type: categorical, choices: [4, 8, 4]}", "choice 4 repeats 4"),
        ("{type: categorical, choices: [1, 1.0]}", "choice 1.0 repeats 1"),
        ("{type: uniform, low: 1, high: 4}", "unknown type uniform; expected one of int, float, categorical, fixed"),
        ("{low: 1, high: 4}", "no type; expected one of int"),
        (
            "{type: int, low: 1, hi: 4}",
            "data.batch_size.high: Field required; field data.batch_size.hi: Extra inputs are not permitted",
        ),
        ("8", "expected a distribution"),
    ],
)
def test_malformed_distributions_are_described_in_one_line(tmp_path, small_base, distribution, reason):
    message = load_error(tmp_path, f"parameters:\n  data.batch_size: {distribution}\n", small_base)
    assert "field data.batch_size" in message and reason in message
    assert "\n" not in message
