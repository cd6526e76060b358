"""Search spaces: which RunConfig fields a sweep varies, and over which values.

A search-space file (see `search_spaces/`) maps dotted RunConfig field paths to distributions:

    parameters:
      data.batch_size: {type: categorical, choices: [4, 8, 16]}
      model.num_hidden_layers: {type: int, low: 2, high: 6, step: 2}
      training.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
      model.hidden_size: {type: fixed, value: 128}

It is checked when it is read, against the base config it modifies and the dataset's segment length, so
that a sweep never spends a trial on a config that cannot be built: every value a distribution can produce
must be valid for its field, and every combination must keep the rules between fields in RELATIONS.

Optuna stores only scalars, so categorical choices that are lists or mappings (an explicit crop schedule)
travel through Optuna as JSON strings; `SearchSpace.decode` turns Optuna-side values back into config values.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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

from tsmoe.config import RunConfig, parse_run_config
from tsmoe.data.curriculum import CropStage, crop_lengths

# Int ranges with at most this many values are checked value by value (alone and in combinations);
# wider ones by their endpoints, which is enough for the bounds and orderings fields have.
MAX_LISTED_VALUES = 64
# Alone, each value costs one config validation (~50 us), so ranges this small are checked in full.
MAX_CHECKED_VALUES = 1000

# Not a RunConfig field: the dataset's segment length, which crop schedules must fit.
SEGMENT_LENGTH = "dataset.segment_length"

DISTRIBUTION_TYPES = ("int", "float", "categorical", "fixed")


# --- distributions ------------------------------------------------------------------------------


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
            raise ValueError(f"{_show(value)} is not an integer")
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
            raise ValueError(f"{_show(value)} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{_show(value)} is not a number") from None


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
                raise ValueError(f"choice {_show(choice)} is not a JSON value") from None
        # Optuna finds a choice by ==, so 1, 1.0 and true are one choice to it, as are a list and its JSON.
        for later, value in enumerate(encoded):
            for earlier in range(later):
                if encoded[earlier] == value:
                    raise ValueError(f"choice {_show(choices[later])} repeats {_show(choices[earlier])}")
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
                if not _is_scalar(choice) and encode_choice(choice) == canonical:
                    return copy.deepcopy(choice)
        raise ValueError(f"{_show(value)} is not one of the choices {_show(self.choices)}")


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
    if _is_scalar(value):
        return value
    return json.dumps(value, sort_keys=True)


# --- the space --------------------------------------------------------------------------------


class SearchSpace(BaseModel):
    """Distributions over RunConfig fields, keyed by dotted field path."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Distribution]
    source: str = "search space"  # the file it was read from, for messages

    def optuna_distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Optuna distributions of every non-fixed parameter, keyed by the dotted field path.

        Categorical choices that are not None/bool/int/float/str are encoded as JSON strings
        (json.dumps(value, sort_keys=True)), because Optuna only stores scalars.
        """
        return {
            path: distribution.to_optuna()
            for path, distribution in self.parameters.items()
            if not isinstance(distribution, Fixed)
        }

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna-side values (as sampled, or as stored in a results table) -> config values, fixed values included.

        `params` must hold exactly the sampled parameters. Ranges are not enforced here, so a results table
        stays readable after its space is narrowed; `apply` still validates every value.
        """
        sampled = {path for path, distribution in self.parameters.items() if not isinstance(distribution, Fixed)}
        unknown = sorted(set(params) - sampled)
        if unknown:
            fixed = [path for path in unknown if path in self.parameters]
            raise ValueError(
                f"{self.source}: {', '.join(unknown)}: not sampled by this search space"
                + (f" ({', '.join(fixed)} fixed)" if fixed else "")
            )
        missing = sorted(sampled - set(params))
        if missing:
            raise ValueError(f"{self.source}: no value for {', '.join(missing)}")
        values = {}
        for path, distribution in self.parameters.items():
            if isinstance(distribution, Fixed):
                values[path] = copy.deepcopy(distribution.value)
                continue
            try:
                values[path] = distribution.decode(params[path])
            except ValueError as error:
                raise ValueError(f"{self.source}: field {path}: {error}") from None
        return values

    def apply(self, base: RunConfig, params: dict[str, Any]) -> RunConfig:
        """The base config with `params` (Optuna-side values) and the fixed values set, validated through
        tsmoe.config.parse_run_config (so a bad combination raises ValueError naming the field)."""
        values = _with(base.model_dump(mode="json"), self.decode(params))
        return parse_run_config(values, source=self.source)


def load_search_space(path: str | Path, base: RunConfig, segment_length: int) -> SearchSpace:
    """Read and validate a search space file against the base config it will modify and the dataset's
    segment length; every error is a ValueError starting with the file path and naming the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such search space file")
    try:
        values = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    return parse_search_space(values, base, segment_length, source=str(path))


def parse_search_space(values: Any, base: RunConfig, segment_length: int, source: str = "search space") -> SearchSpace:
    """Validate a search space given as a mapping (what `load_search_space` reads); errors start with `source`."""
    if not isinstance(values, dict) or not isinstance(values.get("parameters"), dict):
        raise ValueError(
            f"{source}: expected a mapping with `parameters`, a mapping of dotted RunConfig "
            "field paths to distributions"
        )
    unknown = sorted(str(key) for key in values if key != "parameters")
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {', '.join(unknown)}; a search space has only `parameters`")
    if not values["parameters"]:
        raise ValueError(f"{source}: field parameters: empty; a search space needs at least one parameter")
    parameters = {}
    for path, spec in values["parameters"].items():
        path = str(path)
        _check_field_path(path, source)
        parameters[path] = _parse_distribution(path, spec, source)
    space = SearchSpace(parameters=parameters, source=source)
    base_values = base.model_dump(mode="json")
    deferred = _check_values(space, base_values)
    _check_relations(space, base_values, segment_length, deferred)
    return space


# --- rules between fields -----------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A rule between fields that every combination of values the space can produce must keep."""

    fields: tuple[str, ...]  # dotted RunConfig paths, or SEGMENT_LENGTH; the first is the one messages name
    holds: Callable[..., bool]  # called with the fields' values, in order
    problem: str  # what a breaking combination does, formatted with the values as shown ({0}, {1}, ...)
    reason: str


def _heads_split_hidden(hidden_size: int, heads: int) -> bool:
    return hidden_size % heads == 0 and (hidden_size // heads) % 2 == 0


def _crops_fit(schedule: str | list[Any], segment_length: int) -> bool:
    stages = schedule if isinstance(schedule, str) else [CropStage.model_validate(stage) for stage in schedule]
    return all(2 <= length <= segment_length for length in crop_lengths(stages, segment_length))


RELATIONS: tuple[Relation, ...] = (
    Relation(
        ("model.num_experts_per_tok", "model.num_experts"),
        lambda top_k, experts: top_k <= experts,
        "{0} can exceed model.num_experts {1}",
        "top-k must be at most the number of experts",
    ),
    Relation(
        ("model.hidden_size", "model.num_attention_heads"),
        _heads_split_hidden,
        "{0} does not split into model.num_attention_heads {1} heads of even width",
        "hidden_size must be a multiple of the head count, with an even head dimension for RoPE",
    ),
    Relation(
        ("model.num_attention_heads", "model.num_key_value_heads"),
        lambda heads, kv_heads: heads % (kv_heads or heads) == 0,
        "{0} is not a multiple of model.num_key_value_heads {1}",
        "each key/value head serves a whole group of query heads",
    ),
    Relation(
        ("model.num_experts_per_tok", "model.intermediate_size", "model.use_dense"),
        lambda top_k, intermediate, dense: dense or intermediate >= top_k,
        "{0} can exceed model.intermediate_size {1} (model.use_dense {2})",
        "the intermediate size is split across the top-k experts",
    ),
    Relation(
        ("evaluation.heads", "model.horizon_lengths"),
        lambda heads, horizons: set(heads) <= set(horizons),
        "{0} are not all among model.horizon_lengths {1}",
        "a scored head must be one the model has",
    ),
    Relation(
        ("data.crop_schedule", SEGMENT_LENGTH),
        _crops_fit,
        "{0} has a crop outside 2..{1} points, the dataset's segment length",
        "every crop length must be at least 2 and at most the segment length",
    ),
)


def _check_values(space: SearchSpace, base_values: dict[str, Any]) -> dict[str, list[Any]]:
    """Check every value of every parameter alone on the base config.

    A value the config rejects only through a rule between fields that RELATIONS also states (top-k 4 on a
    base with 2 experts) is not an error yet: another parameter of the space may change the partner field.
    Those values are returned, per field, for the combination check to decide.
    """
    deferred: dict[str, list[Any]] = {}
    for path, distribution in space.parameters.items():
        for value in distribution.values(limit=MAX_CHECKED_VALUES):
            candidate = _with(base_values, {path: value})
            try:
                # What parse_run_config validates, but with pydantic's locations kept: they tell a field's
                # own problem from a cross-field one, which parse_run_config's one-line message cannot.
                RunConfig.model_validate(candidate)
            except ValidationError as error:
                if not _own_problem(error, path) and _explained_by_relations(path, candidate):
                    deferred.setdefault(path, []).append(value)
                    continue
                raise ValueError(
                    f"{space.source}: field {path}: {_show(value)} is not accepted by the run "
                    f"config: {_describe(error)}"
                ) from None
    return deferred


def _check_relations(
    space: SearchSpace, base_values: dict[str, Any], segment_length: int, deferred: dict[str, list[Any]]
) -> None:
    """Check RELATIONS over every combination of the values the space can produce for their fields."""
    for relation in RELATIONS:
        if not any(field in space.parameters for field in relation.fields):
            continue  # the base config's own values are the base config's business
        options = []
        for field in relation.fields:
            if field in space.parameters:
                listed = space.parameters[field].values()
                options.append(listed + [value for value in deferred.get(field, []) if value not in listed])
            elif field == SEGMENT_LENGTH:
                options.append([segment_length])
            else:
                options.append([_get(base_values, field)])
        for combination in itertools.product(*options):
            if relation.holds(*combination):
                continue
            from_base = [field not in space.parameters and field != SEGMENT_LENGTH for field in relation.fields]
            shown = [
                _show(value) + (" (base config)" if base else "")
                for value, base in zip(combination, from_base, strict=True)
            ]
            raise ValueError(
                f"{space.source}: field {relation.fields[0]}: {relation.problem.format(*shown)} ({relation.reason})"
            )


def _own_problem(error: ValidationError, path: str) -> bool:
    """Whether a problem is located at the field itself rather than on its section or the whole config."""
    parts = tuple(path.split("."))
    return any(tuple(str(part) for part in problem["loc"][: len(parts)]) == parts for problem in error.errors())


def _explained_by_relations(path: str, values: dict[str, Any]) -> bool:
    """Whether the config breaks a rule of RELATIONS that involves `path` (the config never sees segment lengths)."""
    return any(
        not relation.holds(*(_get(values, field) for field in relation.fields))
        for relation in RELATIONS
        if path in relation.fields and SEGMENT_LENGTH not in relation.fields
    )


# --- field paths and distributions ------------------------------------------------------------


def _field_paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every dotted field path of `model`, mapped to whether it names a section (a nested model)."""
    paths = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        section = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        paths[path] = section
        if section:
            paths.update(_field_paths(info.annotation, path + "."))
    return paths


_RUN_CONFIG_PATHS = _field_paths(RunConfig)


def _check_field_path(path: str, source: str) -> None:
    if path not in _RUN_CONFIG_PATHS:
        closest = _closest_fields(path)
        raise ValueError(
            f"{source}: field {path}: unknown; not a field of the run config"
            + (f" (did you mean {' or '.join(closest)}?)" if closest else "")
        )
    if _RUN_CONFIG_PATHS[path]:
        # Replacing a whole section would reset its other fields to defaults behind the user's back.
        inside = [known for known in _RUN_CONFIG_PATHS if known.startswith(path + ".")][:3]
        raise ValueError(
            f"{source}: field {path}: a section, not a field; give one of its fields ({', '.join(inside)}, ...)"
        )


def _closest_fields(path: str, count: int = 3) -> list[str]:
    """Fields the user may have meant: the same name in another section first (training.batch_size),
    then close names in the same section (model.num_expert), then close paths anywhere."""
    fields = [known for known, section in _RUN_CONFIG_PATHS.items() if not section]
    section, _, name = path.rpartition(".")
    same_name = [field for field in fields if field.rpartition(".")[2] == name]
    in_section = [field for field in fields if field.rpartition(".")[0] == section]
    close_in_section = [
        section + "." + match
        for match in difflib.get_close_matches(name, [field.rpartition(".")[2] for field in in_section], n=count)
    ]
    anywhere = difflib.get_close_matches(path, fields, n=count)
    return list(dict.fromkeys(same_name + close_in_section + anywhere))[:count]


def _parse_distribution(path: str, spec: Any, source: str) -> Any:
    if not isinstance(spec, dict):
        raise ValueError(
            f"{source}: field {path}: expected a distribution, a mapping with a type "
            f"({', '.join(DISTRIBUTION_TYPES)}), got {_show(spec)}; "
            f"write {{type: fixed, value: {_show(spec)}}} for one value"
        )
    try:
        return _DISTRIBUTION.validate_python(spec)
    except ValidationError as error:
        raise ValueError(f"{source}: field {path}: {_describe(error, tagged=True)}") from None


def _describe(error: ValidationError, tagged: bool = False) -> str:
    """Pydantic's problems as one line; `tagged` drops the distribution type pydantic puts first in locations."""
    lines = []
    for problem in error.errors():
        if problem["type"] == "union_tag_not_found":
            lines.append(f"no type; expected one of {', '.join(DISTRIBUTION_TYPES)}")
            continue
        if problem["type"] == "union_tag_invalid":
            lines.append(
                f"unknown type {_show(problem['ctx']['tag'])}; expected one of {', '.join(DISTRIBUTION_TYPES)}"
            )
            continue
        location = ".".join(str(part) for part in problem["loc"][1 if tagged else 0 :])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


# --- small helpers --------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 (no dot) as a string; read it as the number YAML 1.2 and users mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _is_whole(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def _get(values: dict[str, Any], path: str) -> Any:
    for name in path.split("."):
        values = values[name]
    return values


def _with(values: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`values` with the dotted paths in `changes` set, copying only the mappings on the way."""
    result = dict(values)
    for path, value in changes.items():
        *sections, name = path.split(".")
        node = result
        for section in sections:
            node[section] = dict(node[section])
            node = node[section]
        node[name] = value
    return result


def _show(value: Any) -> str:
    """A value as it would be written in the search-space file."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000)
    except yaml.YAMLError:
        return repr(value)
    return text.strip().removesuffix("...").strip()
