"""A sweep's storage as a URI of object storage (s3://, gs://, abfs://, hdfs://): reading and writing it.

With `storage: s3://bucket/sweeps`, Ray Tune and Ray Train keep the sweep's experiment, every trial's
checkpoints and its run outputs at s3://bucket/sweeps/NAME, through pyarrow's filesystems, so the trials
may run on any node of a cluster. The driver's own files (the Optuna study in SQLite, the lock, the
stop ledger, the results and plots) stay in a local sweep directory, `local_storage/NAME`, which
`tsmoe sweep` and `tsmoe report` bring up to date from the bucket (`records.fetch_experiment`), so that `report` and
`export` read the sweep as they read one on a shared path.

A location here is a `Path` (a shared or local filesystem) or a URI string; helpers take either, so the
code that reads a trial's directory does not care which it is. Credentials and endpoints come from the
environment as pyarrow reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) or
from the URI's query (`?endpoint_override=host:port&scheme=http`); every Ray node needs the same.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path

# The URI schemes pyarrow's FileSystem.from_uri resolves to a remote filesystem.
OBJECT_STORAGE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")

Location = Path | str


def is_uri(location: Location) -> bool:
    """Whether `location` is a URI of object storage rather than a path."""
    return isinstance(location, str) and urllib.parse.urlparse(location).scheme in OBJECT_STORAGE_SCHEMES


def check_uri(uri: str) -> str:
    """The URI unchanged when its scheme is one pyarrow resolves and it names a bucket; else a ValueError."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in OBJECT_STORAGE_SCHEMES:
        raise ValueError(
            f"{uri}: {parsed.scheme}:// storage is not supported; give a path, a file:// URI or one of "
            + ", ".join(f"{scheme}://" for scheme in OBJECT_STORAGE_SCHEMES)
        )
    if not parsed.netloc:
        raise ValueError(f"{uri}: names no bucket; expected {parsed.scheme}://BUCKET/PREFIX")
    return uri


def join(location: Location, *parts: str) -> Location:
    """`location` with `parts` appended to its path (a URI keeps its query, where pyarrow reads options)."""
    if not is_uri(location):
        return Path(location).joinpath(*parts)
    assert isinstance(location, str)
    parsed = urllib.parse.urlparse(location)
    path = "/".join([parsed.path.rstrip("/"), *(part.strip("/") for part in parts)])
    return urllib.parse.urlunparse(parsed._replace(path=path))


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(location: Location) -> str | None:
    """The text of the file at `location`, or None when there is none."""
    if not is_uri(location):
        path = Path(location)
        return path.read_text() if path.is_file() else None
    import pyarrow.fs

    assert isinstance(location, str)
    filesystem, path = _filesystem(location)
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.readall().decode()


def upload(source: Path, uri: str) -> None:
    """Copy the local file or directory `source` to `uri` (a directory's whole tree)."""
    import pyarrow.fs

    filesystem, path = _filesystem(uri)
    if source.is_dir():
        pyarrow.fs.copy_files(str(source), path, destination_filesystem=filesystem)
    else:
        with source.open("rb") as file, filesystem.open_output_stream(path) as stream:
            stream.write(file.read())


def list_files(uri: str) -> dict[str, int]:
    """Every file under `uri`: its path relative to `uri` (with /) and its size; empty when there is none."""
    import pyarrow.fs

    filesystem, root = _filesystem(uri)
    root = root.rstrip("/")
    if filesystem.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
        return {}
    return {
        info.path[len(root) + 1 :]: info.size
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        if info.type == pyarrow.fs.FileType.File
    }


def download(
    uri: str,
    target: Path,
    skip: Callable[[str], bool] = lambda relative: False,
    announce: Callable[[int, int], None] | None = None,
    files: dict[str, int] | None = None,
) -> list[str]:
    """Bring the local directory `target` up to date with the tree at `uri`: every file that is missing
    there or differs in size is copied, except those whose path (relative to `uri`, with /) `skip`
    accepts. Nothing local is deleted. `announce` is told how many files and bytes will be copied, before
    any is. `files` is `list_files(uri)` when the caller has already listed it. Returns the relative paths
    copied."""
    filesystem, root = _filesystem(uri)
    wanted = {
        relative: size
        for relative, size in sorted((list_files(uri) if files is None else files).items())
        if not skip(relative) and not ((target / relative).is_file() and (target / relative).stat().st_size == size)
    }
    if announce is not None and wanted:
        announce(len(wanted), sum(wanted.values()))
    for relative in wanted:
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = local.with_name(local.name + ".partial")
        with filesystem.open_input_stream(f"{root.rstrip('/')}/{relative}") as stream, staging.open("wb") as file:
            while chunk := stream.read(1 << 22):
                file.write(chunk)
        staging.replace(local)
    return list(wanted)
