"""A small seeded dataset written through the real writer, for the data tests."""

from __future__ import annotations

import numpy as np
import pytest

from tsmoe.data.store import DatasetWriter

SEGMENT_LENGTH = 32
CHANNELS = ["current_a", "current_b"]


def write_small_dataset(directory, train=12, val=6, seed=0, label_level="point"):
    """Train segments with per-channel offsets (so statistics are checkable) and half-anomalous val."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(directory, SEGMENT_LENGTH, CHANNELS, sampling_rate_hz=100.0, provenance={"test": True})
    arrays = writer.add_split("train", train)
    arrays.segments[:] = rng.normal(size=(train, 2, SEGMENT_LENGTH)) * [[2.0], [0.5]] + [[10.0], [-3.0]]
    arrays = writer.add_split("val", val, label_level=label_level, with_runs=True, with_starts=True)
    arrays.segments[:] = rng.normal(size=(val, 2, SEGMENT_LENGTH)) * [[2.0], [0.5]] + [[10.0], [-3.0]]
    if label_level == "point":
        arrays.labels[val // 2 :, 5:9] = 1
    else:
        arrays.labels[val // 2 :] = 1
    arrays.runs[:] = np.arange(val) % 2
    arrays.starts[:] = np.arange(val) // 2 * 8
    writer.run_names = ["run0", "run1"]
    writer.finish()
    return directory


@pytest.fixture
def small_dataset(tmp_path):
    return write_small_dataset(tmp_path / "dataset")
