"""How a validation error reads: one line, every problem naming its field by dotted path.

Every typed config and file format of tsmoe (run configs, sweep definitions, search spaces, `meta.json`)
is a pydantic model; this is the one place that turns pydantic's problems into the message users see, so
that every file reports its problems the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def describe_fields(error: ValidationError, root: str = "", skip: int = 0) -> str:
    """Every problem of `error` on one line, as `field DOTTED.PATH: what is wrong`.

    `root` is the dotted path of the validated value inside a larger file (a search-space parameter), and
    `skip` drops that many leading location parts pydantic adds that are not fields (a discriminated
    union's tag).
    """
    lines = []
    for problem in error.errors():
        parts = [root] if root else []
        parts += [str(part) for part in problem["loc"][skip:]]
        field = ".".join(parts) or "(top level)"
        lines.append(f"field {field}: {_message(problem)}")
    return "; ".join(lines)


def _message(problem: Any) -> str:
    """What is wrong, without pydantic's wording for its own machinery."""
    context = problem.get("ctx") or {}
    key = str(context.get("discriminator", "")).strip("'")
    if problem["type"] == "union_tag_not_found":
        return f"no {key}"
    if problem["type"] == "union_tag_invalid":
        tags = str(context["expected_tags"]).replace("'", "")
        return f"unknown {key} {context['tag']}; expected one of {tags}"
    return str(problem["msg"]).removeprefix("Value error, ")
