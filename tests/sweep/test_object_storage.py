"""Reading and writing a sweep's object storage, against a local S3-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsmoe.sweep.object_storage import download, is_uri, join, list_files, read_text, upload


def test_a_uri_joins_parts_into_its_path_and_keeps_its_query():
    assert join("s3://bucket/a?scheme=http", "b", "c/") == "s3://bucket/a/b/c?scheme=http"
    assert join("s3://bucket", "sweep") == "s3://bucket/sweep"
    assert join(Path("/shared"), "sweep", "trials") == Path("/shared/sweep/trials")


@pytest.mark.parametrize(
    "location, expected",
    [("s3://bucket/x", True), ("gs://bucket", True), ("/shared/sweeps", False), (Path("s3:/x"), False)],
)
def test_only_object_storage_uris_count_as_uris(location, expected):
    assert is_uri(location) is expected


def test_a_tree_goes_up_and_comes_back_with_skipped_files_left_out(tmp_path, s3_bucket):
    source = tmp_path / "source"
    (source / "model").mkdir(parents=True)
    (source / "config.yaml").write_text("a: 1\n")
    (source / "model" / "weights.bin").write_bytes(b"\x00" * 1000)
    upload(source, join(s3_bucket, "run"))
    assert list_files(join(s3_bucket, "run")) == {"config.yaml": 5, "model/weights.bin": 1000}
    assert read_text(join(s3_bucket, "run", "config.yaml")) == "a: 1\n"
    assert read_text(join(s3_bucket, "run", "missing.yaml")) is None

    target = tmp_path / "copy"
    announced = []
    copied = download(
        join(s3_bucket, "run"),
        target,
        skip=lambda relative: relative.startswith("model/"),
        announce=lambda count, size: announced.append((count, size)),
    )
    assert copied == ["config.yaml"] and not (target / "model").exists()
    assert announced == [(1, 5)]  # told before copying: one file of 5 bytes
    assert (target / "config.yaml").read_text() == "a: 1\n"
    # A file already there with the same size is not fetched again; one that differs is.
    assert download(join(s3_bucket, "run"), target) == ["model/weights.bin"]
    (target / "config.yaml").write_text("changed: 2\n")
    assert download(join(s3_bucket, "run"), target) == ["config.yaml"]
    assert (target / "config.yaml").read_text() == "a: 1\n"


def test_nothing_at_a_uri_lists_and_fetches_nothing(tmp_path, s3_bucket):
    assert list_files(join(s3_bucket, "never")) == {}
    assert download(join(s3_bucket, "never"), tmp_path / "copy") == []
    assert not (tmp_path / "copy").exists()


def test_a_local_path_reads_as_itself(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    assert read_text(tmp_path / "x.txt") == "hello" and read_text(tmp_path / "y.txt") is None
