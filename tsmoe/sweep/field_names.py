"""The run config's dotted field paths: which a search space may name, what a misspelled one probably meant,
and reading or setting a path in a config's values."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from tsmoe.config import RunConfig


def field_paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every dotted field path of `model`, mapped to whether it names a section (a nested model)."""
    paths = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths[path] = True
            paths.update(field_paths(annotation, path + "."))
        else:
            paths[path] = False
    return paths


RUN_CONFIG_PATHS = field_paths(RunConfig)


def check_field_path(path: str, source: str) -> None:
    """Raise a ValueError naming `source` unless `path` is a field (not a section) of the run config."""
    if path not in RUN_CONFIG_PATHS:
        closest = closest_fields(path)
        raise ValueError(
            f"{source}: field {path}: unknown; not a field of the run config"
            + (f" (did you mean {' or '.join(closest)}?)" if closest else "")
        )
    if RUN_CONFIG_PATHS[path]:
        # Replacing a whole section would reset its other fields to defaults behind the user's back.
        inside = [known for known in RUN_CONFIG_PATHS if known.startswith(path + ".")][:3]
        raise ValueError(
            f"{source}: field {path}: a section, not a field; give one of its fields ({', '.join(inside)}, ...)"
        )


def closest_fields(path: str, count: int = 3) -> list[str]:
    """Fields the user may have meant: the same name in another section first (training.batch_size),
    then close names in the same section (model.num_expert), then close paths anywhere."""
    fields = [known for known, section in RUN_CONFIG_PATHS.items() if not section]
    section, _, name = path.rpartition(".")
    same_name = [field for field in fields if field.rpartition(".")[2] == name]
    in_section = [field for field in fields if field.rpartition(".")[0] == section]
    close_in_section = [
        section + "." + match
        for match in difflib.get_close_matches(name, [field.rpartition(".")[2] for field in in_section], n=count)
    ]
    anywhere = difflib.get_close_matches(path, fields, n=count)
    return list(dict.fromkeys(same_name + close_in_section + anywhere))[:count]


def with_fields(values: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
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
