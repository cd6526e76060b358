"""`meta.json`: what it must say, and how its problems are named."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import SEGMENT_LENGTH
from tsmoe.data.meta import META_FILE, DatasetMeta, read_meta, write_meta

VALID = {
    "segment_length": SEGMENT_LENGTH,
    "channels": ["current_a", "current_b"],
    "sampling_rate_hz": 100.0,
    "normalization": {"mean": [10.0, -3.0], "std": [2.0, 0.5]},
    "splits": {
        "train": {"segments": "train.npy"},
        "val": {"segments": "val.npy", "labels": "val_labels.npy", "runs": "val_runs.npy"},
    },
}


def write_values(directory, values) -> None:
    directory.mkdir(exist_ok=True)
    (directory / META_FILE).write_text(json.dumps(values))


def test_written_meta_reads_back_equal(tmp_path):
    meta = DatasetMeta.model_validate(VALID)
    write_meta(tmp_path, meta)
    assert read_meta(tmp_path) == meta
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, then renamed


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"splits": {"val": VALID["splits"]["val"]}}, "a dataset needs a 'train' split"),
        ({"splits": {**VALID["splits"], "test": {"segments": "test.npy"}}}, "splits.test.labels"),
        ({"channels": ["a", "a"]}, "names must be unique"),
        ({"normalization": {"mean": [0.0, 0.0], "std": [1.0, 0.0]}}, "field normalization: channel 1"),
        ({"normalization": {"mean": [0.0], "std": [1.0]}}, "1 channels of statistics for 2 channels"),
        ({"splits": {**VALID["splits"], "train": {"segments": "train.csv"}}}, "field splits.train: segments must"),
        ({"segment_length": 1}, "field segment_length: Input should be greater than 1"),
    ],
)
def test_a_bad_meta_names_the_file_and_the_field(tmp_path, change, problem):
    write_values(tmp_path, VALID | change)
    with pytest.raises(ValueError) as raised:
        read_meta(tmp_path)
    message = str(raised.value)
    assert message.startswith(str(tmp_path / META_FILE)) and problem in message and "\n" not in message


def test_starts_need_runs(tmp_path):
    val = {"segments": "val.npy", "labels": "val_labels.npy", "starts": "val_starts.npy"}
    write_values(tmp_path, VALID | {"splits": {"train": VALID["splits"]["train"], "val": val}})
    with pytest.raises(ValueError, match="starts needs runs"):
        read_meta(tmp_path)


def test_a_missing_or_broken_meta_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dataset directory"):
        read_meta(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"needs a meta\.json"):
        read_meta(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_meta(tmp_path)
