"""The distributions a search space draws a field's values from, and how their values travel through Optuna.

    {type: int, low: 2, high: 6, step: 2}          IntRange
    {type: float, low: 3.0e-4, high: 3.0e-3, log: true}   FloatRange
    {type: categorical, choices: [full, quarter_half_full]}   Categorical
    {type: fixed, value: 128}                      Fixed

Each one lists the values the space's checks try (`values`), builds its Optuna distribution and turns an
Optuna-side value back into a config value (`decode`). Optuna stores only scalars, so categorical choices
that are lists or mappings (an explicit crop schedule) travel as JSON strings.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Annotated, Any, Literal

import optuna
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tsmoe.errors import describe_fields

# Int ranges with at most this many values are listed value by value (alone and in combinations);
# wider ones by their endpoints, which is enough for the bounds and orderings fields have.
MAX_LISTED_VALUES = 64

DISTRIBUTION_TYPES = ("int", "float", "categorical", "fixed")


class IntRange(BaseModel):
    """Integers from low to high inclusive, every `step`th, optionally sampled on a log scale."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(1, ge=1)
    log: StrictBool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is greater than high {self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"a log range needs low >= 1, got low {self.low}")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined (Optuna samples log ranges without a step)")
        if (self.high - self.low) % self.step:
            # Optuna would quietly lower high to the last value on the grid; say so instead.
            raise ValueError(f"high {self.high} is not low {self.low} plus a multiple of step {self.step}")
        return self

    def values(self, limit: int = MAX_LISTED_VALUES) -> list[int]:
        """Every value when there are at most `limit`, else the endpoints."""
        if (self.high - self.low) // self.step + 1 <= limit:
            return list(range(self.low, self.high + 1, self.step))
        return [self.low, self.high]

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution that samples this range."""
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def decode(self, value: Any) -> int:
        """An Optuna-side value (an int, or a whole float from a results table) as an int."""
        if isinstance(value, bool) or not _is_whole(value):
            raise ValueError(f"{show_value(value)} is not an integer")
        return int(value)


class FloatRange(BaseModel):
    """Reals from low to high inclusive, on a grid of `step` or on a log scale (not both)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: StrictBool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got {self.low} and {self.high}")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is greater than high {self.high}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low {self.low}")
        if self.step is not None:
            steps = (self.high - self.low) / self.step
            if not math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-8):
                raise ValueError(f"high {self.high} is not low {self.low} plus a multiple of step {self.step}")
        return self

    def values(self, limit: int = MAX_LISTED_VALUES) -> list[float]:
        """The endpoints: no field's rule lies strictly inside a real range."""
        return [self.low] if self.low == self.high else [self.low, self.high]

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution that samples this range."""
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def decode(self, value: Any) -> float:
        """An Optuna-side value as a float."""
        if isinstance(value, (bool, str)):
            raise ValueError(f"{show_value(value)} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{show_value(value)} is not a number") from None


class Categorical(BaseModel):
    """One of a list of distinct values; values may be lists or mappings (an explicit crop schedule)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct_json_values(cls, choices: list[Any]) -> list[Any]:
        encoded = []
        for choice in choices:
            try:
                encoded.append(encode_choice(choice))
            except (TypeError, ValueError):
                raise ValueError(f"choice {show_value(choice)} is not a JSON value") from None
        # Optuna finds a choice by ==, so 1, 1.0 and true are one choice to it, as are a list and its JSON.
        for later, value in enumerate(encoded):
            for earlier in range(later):
                if encoded[earlier] == value:
                    raise ValueError(f"choice {show_value(choices[later])} repeats {show_value(choices[earlier])}")
        return choices

    def values(self, limit: int = MAX_LISTED_VALUES) -> list[Any]:
        """Every choice."""
        return list(self.choices)

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution over the choices, non-scalars encoded as JSON strings."""
        return optuna.distributions.CategoricalDistribution([encode_choice(choice) for choice in self.choices])

    def decode(self, value: Any) -> Any:
        """The choice an Optuna-side value stands for."""
        for choice in self.choices:
            if encode_choice(choice) == value:
                return copy.deepcopy(choice)
        if isinstance(value, str):
            # A JSON string written by other code may differ from ours in spacing or key order.
            try:
                canonical = encode_choice(json.loads(value))
            except (ValueError, TypeError):
                canonical = None
            for choice in self.choices:
                if not is_scalar(choice) and encode_choice(choice) == canonical:
                    return copy.deepcopy(choice)
        raise ValueError(f"{show_value(value)} is not one of the choices {show_value(self.choices)}")


class Fixed(BaseModel):
    """One value, set on every trial and never sampled."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["fixed"]
    value: Any

    def values(self, limit: int = MAX_LISTED_VALUES) -> list[Any]:
        """The value."""
        return [self.value]


Distribution = Annotated[IntRange | FloatRange | Categorical | Fixed, Field(discriminator="type")]
_DISTRIBUTION: TypeAdapter[Any] = TypeAdapter(Distribution)


def encode_choice(value: Any) -> Any:
    """A categorical choice as Optuna stores it: scalars as they are, anything else as a JSON string."""
    if is_scalar(value):
        return value
    return json.dumps(value, sort_keys=True)


def parse_distribution(path: str, spec: Any, source: str) -> IntRange | FloatRange | Categorical | Fixed:
    """The distribution `spec` (a mapping from the file) describes for field `path`; errors name both."""
    types = ", ".join(DISTRIBUTION_TYPES)
    if not isinstance(spec, dict):
        raise ValueError(
            f"{source}: field {path}: expected a distribution, a mapping with a type ({types}), "
            f"got {show_value(spec)}; write {{type: fixed, value: {show_value(spec)}}} for one value"
        )
    if "type" not in spec:
        raise ValueError(f"{source}: field {path}: no type; expected one of {types}")
    try:
        return _DISTRIBUTION.validate_python(spec)
    except ValidationError as error:
        # Pydantic puts the union's tag (the type) first in every location; it is not a field of the file.
        raise ValueError(f"{source}: {describe_fields(error, root=path, skip=1)}") from None


def is_scalar(value: Any) -> bool:
    """Whether Optuna can store a value as it is (else it travels as JSON)."""
    return value is None or isinstance(value, (bool, int, float, str))


def _is_whole(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def show_value(value: Any) -> str:
    """A value as it would be written in the search-space file."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000)
    except yaml.YAMLError:
        return repr(value)
    return text.strip().removesuffix("...").strip()
