"""The one formatter of validation errors: every problem on one line, each naming its field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tsmoe.config import RunConfig
from tsmoe.errors import describe_fields
from tsmoe.sweep.distributions import _DISTRIBUTION


def _error(validate, value) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        validate(value)
    return raised.value


def test_every_problem_names_its_dotted_field_on_one_line():
    error = _error(RunConfig.model_validate, {"data": {"batch_size": 0}, "training": {"epochs": 0, "bogus": 1}})
    message = describe_fields(error)
    assert "\n" not in message
    assert message.split("; ") == [
        "field data.batch_size: Input should be greater than 0",
        "field training.epochs: Input should be greater than 0",
        "field training.bogus: Extra inputs are not permitted",
    ]


def test_a_rule_of_a_whole_section_names_the_section_without_pydantic_prefix():
    error = _error(RunConfig.model_validate, {"model": {"num_experts": 2, "num_experts_per_tok": 3}})
    assert describe_fields(error) == "field model: num_experts_per_tok (3) must be at most num_experts (2)"


def test_a_value_inside_a_file_is_named_under_its_root_without_the_union_tag():
    error = _error(_DISTRIBUTION.validate_python, {"type": "int", "low": "a", "high": 2})
    assert describe_fields(error, root="data.batch_size", skip=1) == (
        "field data.batch_size.low: Input should be a valid integer"
    )
    error = _error(_DISTRIBUTION.validate_python, {"type": "uniform"})
    assert (
        describe_fields(error, root="x")
        == "field x: unknown type uniform; expected one of int, float, categorical, fixed"
    )


def test_a_problem_of_the_whole_value_is_named_top_level():
    error = _error(RunConfig.model_validate, [1, 2])
    assert describe_fields(error).startswith("field (top level): ")
