"""Search spaces: which RunConfig fields a sweep varies, and over which values.

A search-space file (see `search_spaces/`) maps dotted RunConfig field paths to distributions:

    parameters:
      data.batch_size: {type: categorical, choices: [4, 8, 16]}
      model.num_hidden_layers: {type: int, low: 2, high: 6, step: 2}
      training.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
      model.hidden_size: {type: fixed, value: 128}

It is checked when it is read, against the base config it modifies and the dataset's segment length, so
that a sweep never spends a trial on a config that cannot be built. The work is split by job: the
distributions in `distributions.py`, the field names (and what a misspelled one meant) in
`field_names.py`, and the checks of values and combinations against the run config in `rules.py`.
`SearchSpace.decode` turns Optuna-side values back into config values.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import optuna
import yaml
from pydantic import BaseModel, ConfigDict

from tsmoe.config import RunConfig, parse_run_config, read_yaml
from tsmoe.sweep.distributions import Distribution, Fixed, parse_distribution
from tsmoe.sweep.field_names import check_field_path, with_fields
from tsmoe.sweep.rules import check_space


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
        values = with_fields(base.model_dump(mode="json"), self.decode(params))
        return parse_run_config(values, source=self.source)


def load_search_space(path: str | Path, base: RunConfig, segment_length: int) -> SearchSpace:
    """Read and validate a search space file against the base config it will modify and the dataset's
    segment length; every error is a ValueError starting with the file path and naming the field."""
    path = Path(path)
    values = read_yaml(path, "search space file", loader=_Loader)
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
        check_field_path(path, source)
        parameters[path] = parse_distribution(path, spec, source)
    space = SearchSpace(parameters=parameters, source=source)
    check_space(space, base, segment_length)
    return space


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 (no dot) as a string; read it as the number YAML 1.2 and users mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
