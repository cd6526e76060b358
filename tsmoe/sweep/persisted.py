"""Small JSON state files in the sweep directory, written atomically so a killed driver leaves the old or
the new file, never half of one.

Tune restores a sweep's scheduler and stoppers as they were pickled when the sweep started, so anything
they learn while it runs (rung history, per-trial bests) is kept here and read back on `--resume`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(value, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any) -> Any:
    """The JSON value in `path`, or `default` when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text())
