"""Small JSON state files in the sweep directory, written atomically so a killed driver leaves the old or
the new file, never half of one.

Tune restores a sweep's scheduler and stoppers as they were pickled when the sweep started, so anything
they learn while it runs (rung history, per-trial bests) is kept here and read back on `--resume`.

Such files are named `.jsonl` (one JSON line), never `.json` or `.pkl`: on `--resume` Tune copies every
.json and .pkl file of the sweep directory into its driver staging folder and later syncs that folder
back over the sweep directory, which would put back the copy taken when the sweep resumed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, value: Any) -> None:
    """Write `value` as one JSON line to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(json.dumps(value) + "\n")
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
