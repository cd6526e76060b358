"""The built-in synthetic dataset: deterministic, labeled where the faults are, and not trivially easy."""

from __future__ import annotations

import numpy as np
import pytest

from tsmoe.data.check import check_dataset
from tsmoe.data.store import open_dataset
from tsmoe.data.synth import (
    CHANNELS,
    FAULT_KINDS,
    generate_synthetic_dataset,
    normal_recording,
    sinusoid,
    synthesize_segment,
)


def _generate(directory, **overrides):
    arguments = dict(train_segments=6, val_segments=12, test_segments=6, segment_length=256, seed=5)
    arguments.update(overrides)
    generate_synthetic_dataset(directory, **arguments)
    return open_dataset(directory)


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    first, second = _generate(tmp_path / "a"), _generate(tmp_path / "b")
    for split in ("train", "val", "test"):
        assert np.array_equal(first.split(split).segments, second.split(split).segments)
    assert np.array_equal(first.split("val").labels, second.split("val").labels)
    other = _generate(tmp_path / "c", seed=6)
    assert not np.array_equal(first.split("train").segments, other.split("train").segments)


def test_splits_labels_and_provenance(tmp_path):
    dataset = _generate(tmp_path / "data")
    summary = check_dataset(tmp_path / "data")
    assert dataset.meta.channels == list(CHANNELS) and dataset.split("val").label_level == "point"
    assert dataset.split("train").labels is None
    val_faults = dataset.meta.provenance["faults"]["val"]
    assert sum(kind is not None for kind in val_faults) == 6
    # Six faulty segments, one of each kind; a segment is anomalous exactly when it carries a fault.
    assert sorted(kind for kind in val_faults if kind) == sorted(FAULT_KINDS)
    assert dataset.split("val").segment_labels().tolist() == [int(kind is not None) for kind in val_faults]
    assert any("val: 12 segments, 6 anomalous" in line for line in summary.lines())


def test_currents_are_three_phase_near_the_supply_frequency():
    segment, labels = synthesize_segment(0, "train", 0, length=2048, rate=1000.0, fault=None)
    assert segment.shape == (3, 2048) and segment.dtype == np.float32 and not labels.any()
    spectrum = np.abs(np.fft.rfft(segment[0]))
    peak_hz = np.argmax(spectrum) * 1000.0 / 2048
    assert 49 <= peak_hz <= 51
    # Balanced phases sum to (almost) nothing at the fundamental.
    assert np.abs(segment.sum(axis=0)).mean() < 0.2 * np.abs(segment[0]).mean()


def test_a_normal_recording_carries_the_operating_point_it_returns():
    currents, state = normal_recording(np.random.default_rng(3), 4096, 1000.0)
    again, _ = normal_recording(np.random.default_rng(3), 4096, 1000.0)
    assert currents.shape == (3, 4096) and np.array_equal(currents, again)
    # The fundamental, rebuilt from the returned state, explains most of each phase; noise and harmonics the rest.
    residual = currents - sinusoid(state, 1, 1.0)
    assert np.abs(residual).mean() < 0.15 * np.abs(currents).mean()


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_changes_the_signal_only_where_it_is_labeled(kind):
    normal, _ = synthesize_segment(1, "val", 3, length=512, rate=1000.0, fault=None)
    faulty, labels = synthesize_segment(1, "val", 3, length=512, rate=1000.0, fault=kind)
    assert labels.any() and not labels.all()
    changed = np.abs(faulty - normal).max(axis=0) > 1e-6
    assert changed.any()
    assert not changed[labels == 0].any()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="anomaly_fraction"):
        generate_synthetic_dataset(tmp_path / "x", anomaly_fraction=1.0)
    with pytest.raises(ValueError, match="val_segments: 1 segments"):
        generate_synthetic_dataset(tmp_path / "x", val_segments=1)
    assert not (tmp_path / "x").exists()


def test_holdout_segments_are_normal_and_apart_from_training(tmp_path):
    meta = generate_synthetic_dataset(
        tmp_path / "data", train_segments=2, val_segments=2, test_segments=0, segment_length=64, holdout_segments=3
    )
    dataset = open_dataset(tmp_path / "data")
    holdout = dataset.split("holdout")
    assert meta.splits["holdout"].labels is None and len(holdout) == 3
    assert not np.allclose(holdout.segments[0], dataset.split("train").segments[0])
