"""Whether every config a search space can produce is one the run config accepts, checked before Ray starts.

The rules are the run config's own: each value, and each combination of values, is put on the base config
and validated by `RunConfig` (the model config's shape rules, the run config's rule that scored heads exist,
each field's bounds), so a rule added to a config is kept by every sweep without being written here again.
The one fact a config cannot know is the dataset's segment length, which every crop must fit, and the
spectral view's window with them.

Values are tried in three rounds, smallest first so that an error names as few fields as it can:
every value of every parameter alone (on the base config), every pair of parameters, and every combination
of the parameters of one config section (where the section's validator sees them together). The
parameters a round leaves alone keep their first value; fields outside the space keep the base's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tsmoe.config import RunConfig
from tsmoe.data.config import check_spectrum_window
from tsmoe.data.curriculum import crop_lengths
from tsmoe.errors import describe_fields
from tsmoe.sweep.distributions import show_value
from tsmoe.sweep.field_names import with_fields

if TYPE_CHECKING:
    from tsmoe.sweep.space import SearchSpace

# Alone, each value costs one config validation (~50 us), so ranges this small are checked in full.
MAX_CHECKED_VALUES = 1000
# A section's combinations beyond this many are checked on the endpoints of its ranges only.
MAX_COMBINATIONS = 20_000

CROP_SCHEDULE = "data.crop_schedule"
# The fields whose values together decide whether the spectral view's window fits the shortest crop.
SPECTRUM_FIELDS = (CROP_SCHEDULE, "data.views", "data.spectrum_window")


def check_space(space: SearchSpace, base: RunConfig, segment_length: int) -> None:
    """Raise a ValueError naming the file, the field and the rule unless every value and every combination
    of values the space can produce makes a valid run config whose crops fit `segment_length`."""
    base_values = base.model_dump(mode="json")
    deferred = _check_values_alone(space, base_values)
    _check_crops(space, base_values, segment_length)
    _check_spectrum_windows(space, base_values, segment_length)
    listed = {path: _listed(space, path, deferred) for path in space.parameters}
    reference = with_fields(base_values, {path: values[0] for path, values in listed.items()})
    for group in _groups(list(space.parameters)):
        options = [listed[path] for path in group]
        if _count(options) > MAX_COMBINATIONS:
            options = [[values[0], values[-1]] if len(values) > 2 else values for values in options]
        for combination in itertools.product(*options):
            changes = dict(zip(group, combination, strict=True))
            problem = _problem(with_fields(reference, changes))
            if problem is not None:
                raise ValueError(
                    f"{space.source}: {_name_combination(changes)} is not accepted by the run config: {problem}"
                )


def _check_values_alone(space: SearchSpace, base_values: dict[str, Any]) -> dict[str, list[Any]]:
    """Check every value of every parameter alone on the base config.

    A value rejected only by a rule between fields (top-k 4 on a base with 2 experts) is no error yet:
    another parameter of the space may change the partner field. Those values are returned, per field,
    for the combination rounds, which judge them with the partners the space gives.
    """
    deferred: dict[str, list[Any]] = {}
    for path, distribution in space.parameters.items():
        for value in distribution.values(limit=MAX_CHECKED_VALUES):
            try:
                RunConfig.model_validate(with_fields(base_values, {path: value}))
            except ValidationError as error:
                if not _own_problem(error, path):
                    deferred.setdefault(path, []).append(value)
                    continue
                raise ValueError(
                    f"{space.source}: field {path}: {show_value(value)} is not accepted by the run "
                    f"config: {describe_fields(error)}"
                ) from None
    return deferred


def _check_crops(space: SearchSpace, base_values: dict[str, Any], segment_length: int) -> None:
    """Every crop schedule the space can produce must fit the dataset's segments."""
    if CROP_SCHEDULE not in space.parameters:
        return  # the base config's own schedule is checked with the dataset by `tsmoe train`
    for schedule in space.parameters[CROP_SCHEDULE].values():
        # Validated first: an explicit schedule's stages become CropStage objects.
        stages = RunConfig.model_validate(with_fields(base_values, {CROP_SCHEDULE: schedule})).data.crop_schedule
        longest = max(crop_lengths(stages, segment_length))
        if longest > segment_length:
            raise ValueError(
                f"{space.source}: field {CROP_SCHEDULE}: {show_value(schedule)} asks for crops of {longest} "
                f"points, longer than the dataset's segment length {segment_length}"
            )


def _check_spectrum_windows(space: SearchSpace, base_values: dict[str, Any], segment_length: int) -> None:
    """Every spectral window the space can produce must fit the shortest crop of every schedule beside it."""
    searched = [path for path in SPECTRUM_FIELDS if path in space.parameters]
    if not searched:
        return  # the base config's own window is checked with the dataset by `tsmoe train` and the trial
    for combination in itertools.product(*(space.parameters[path].values() for path in searched)):
        changes = dict(zip(searched, combination, strict=True))
        try:
            data = RunConfig.model_validate(with_fields(base_values, changes)).data
        except ValidationError:
            continue  # a combination the run config rejects is named by the combination rounds
        try:
            check_spectrum_window(data, segment_length)
        except ValueError as error:
            raise ValueError(f"{space.source}: {_name_combination(changes)}: {error}") from None


def _listed(space: SearchSpace, path: str, deferred: dict[str, list[Any]]) -> list[Any]:
    """The values the combination rounds try for a parameter: its listed values and any deferred ones."""
    listed = space.parameters[path].values()
    return listed + [value for value in deferred.get(path, []) if value not in listed]


def _groups(paths: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Each parameter alone, each pair, then each config section with three or more parameters."""
    yield from ((path,) for path in paths)
    yield from itertools.combinations(paths, 2)
    sections: dict[str, list[str]] = {}
    for path in paths:
        sections.setdefault(path.split(".")[0], []).append(path)
    yield from (tuple(members) for members in sections.values() if len(members) > 2)


def _count(options: Sequence[Sequence[Any]]) -> int:
    count = 1
    for values in options:
        count *= len(values)
    return count


def _problem(values: dict[str, Any]) -> str | None:
    """What the run config says is wrong with `values`, or None when it accepts them."""
    try:
        RunConfig.model_validate(values)
    except ValidationError as error:
        return describe_fields(error)
    return None


def _own_problem(error: ValidationError, path: str) -> bool:
    """Whether a problem is located at the field itself rather than on its section or the whole config."""
    parts = tuple(path.split("."))
    return any(tuple(str(part) for part in problem["loc"][: len(parts)]) == parts for problem in error.errors())


def _name_combination(changes: dict[str, Any]) -> str:
    """`field A: 3 with B 2`: the fields of a combination and their values, as the file writes them."""
    (first, value), *others = changes.items()
    return f"field {first}: {show_value(value)}" + "".join(
        f" with {path} {show_value(other)}" for path, other in others
    )
