"""The built-in dataset: three-phase induction-motor stator currents with injected faults.

Every segment is a short recording from one operating point: a supply frequency near 50 Hz, a load
(so an amplitude) that may step or ramp during the segment, 5th and 7th harmonics from the supply, a
rotor slip, and sensor noise. Training segments are all normal. Validation and test segments are normal
or carry one fault over a stretch of points, which are labeled point by point:

    rotor_sidebands      broken-rotor-bar sidebands at f(1 - 2s) and f(1 + 2s)
    spikes               a few short transients on one phase
    sag                  all three amplitudes drop (a supply sag)
    drift                one sensor's offset creeps away from zero
    phase_imbalance      one phase's amplitude departs from the other two
    harmonic_distortion  a 3rd harmonic appears (saturation, a failing drive)

Normal load steps change amplitudes too, so a detector that flags any change in level does not score
well: it has to learn what normal operation looks like. Each segment is drawn from its own seed
(dataset seed, split, index), so a dataset is identical however it is generated, and is written in
place segment by segment through the store's memory maps, never held whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tsmoe.data.meta import DatasetMeta, SplitName
from tsmoe.data.store import DatasetWriter

CHANNELS = ("current_a", "current_b", "current_c")
FAULT_KINDS = ("rotor_sidebands", "spikes", "sag", "drift", "phase_imbalance", "harmonic_distortion")
SUPPLY_HZ = 50.0
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "holdout": 3}
_PHASE_SHIFTS = np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3])[:, None]  # [3, 1]


def _operating_point(rng: np.random.Generator, length: int, rate: float) -> dict:
    """The normal machine state of one segment: frequency, load profile, harmonics, slip, noise."""
    time = np.arange(length) / rate
    load = np.full(length, rng.uniform(0.4, 1.0))
    change = rng.random()
    if change < 0.3:  # a load step
        at = rng.integers(length // 8, length - length // 8)
        load[at:] += rng.uniform(-0.2, 0.2)
    elif change < 0.6:  # a load ramp
        begin, end = sorted(rng.integers(0, length, size=2))
        ramp = np.clip((np.arange(length) - begin) / max(end - begin, 1), 0.0, 1.0)
        load += ramp * rng.uniform(-0.2, 0.2)
    return {
        "time": time,
        "frequency": SUPPLY_HZ + rng.uniform(-0.2, 0.2),
        "amplitude": load,  # [L], per-unit of rated current
        "phase": rng.uniform(0, 2 * np.pi),
        "harmonics": {5: rng.uniform(0.02, 0.05), 7: rng.uniform(0.01, 0.03)},
        "slip": rng.uniform(0.01, 0.05),
        "noise": rng.uniform(0.01, 0.03),
        "rate": rate,
    }


def sinusoid(state: dict, order: float, relative_amplitude: float | np.ndarray) -> np.ndarray:
    """A three-phase component [3, L] at `order` times the supply frequency; silent above Nyquist."""
    if order * state["frequency"] >= state["rate"] / 2:
        return np.zeros((3, len(state["time"])))
    angle = 2 * np.pi * order * state["frequency"] * state["time"] + order * state["phase"]
    # Harmonics of order 5, 11, ... rotate backwards: their phase shift is the fundamental's times the order.
    return relative_amplitude * state["amplitude"] * np.sin(angle + order * _PHASE_SHIFTS)


def _normal_currents(state: dict, rng: np.random.Generator) -> np.ndarray:
    currents = sinusoid(state, 1, 1.0)
    for order, relative_amplitude in state["harmonics"].items():
        currents += sinusoid(state, order, relative_amplitude)
    return currents + rng.normal(0.0, state["noise"], size=currents.shape)


def normal_recording(rng: np.random.Generator, length: int, rate: float) -> tuple[np.ndarray, dict]:
    """Normal currents [3, L] of one operating point, and that operating point (frequency, slip, amplitude...),
    for recordings other than this dataset's segments (benchmarks/motor_files.py)."""
    state = _operating_point(rng, length, rate)
    return _normal_currents(state, rng), state


def _fault_window(rng: np.random.Generator, length: int) -> tuple[int, int]:
    duration = int(rng.integers(max(2, length // 10), max(3, length // 2)))
    start = int(rng.integers(0, length - duration + 1))
    return start, start + duration


def _inject_fault(kind: str, currents: np.ndarray, state: dict, rng: np.random.Generator) -> np.ndarray:
    """Add a fault to currents [3, L] in place; returns the point labels [L]."""
    length = currents.shape[1]
    labels = np.zeros(length, dtype=np.int8)
    start, stop = _fault_window(rng, length)
    window = slice(start, stop)
    if kind == "spikes":
        phase = rng.integers(0, 3)
        for _ in range(rng.integers(1, 5)):
            at = int(rng.integers(0, length - 3))
            width = int(rng.integers(1, 4))
            currents[phase, at : at + width] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.5)
            labels[at : at + width] = 1
        return labels
    if kind == "rotor_sidebands":
        strength = rng.uniform(0.04, 0.1)
        for order in (1 - 2 * state["slip"], 1 + 2 * state["slip"]):
            currents[:, window] += sinusoid(state, order, strength)[:, window]
    elif kind == "sag":
        currents[:, window] *= rng.uniform(0.5, 0.8)
    elif kind == "drift":
        phase = rng.integers(0, 3)
        window = slice(start, length)
        creep = np.linspace(0.0, rng.uniform(0.15, 0.4), length - start)
        currents[phase, window] += rng.choice([-1, 1]) * creep
    elif kind == "phase_imbalance":
        phase = rng.integers(0, 3)
        currents[phase, window] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.15, 0.3)
    elif kind == "harmonic_distortion":
        currents[:, window] += sinusoid(state, 3, rng.uniform(0.06, 0.12))[:, window]
    else:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    labels[window] = 1
    return labels


def synthesize_segment(
    seed: int, split: str, index: int, length: int, rate: float, fault: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """One segment [3, L] float32 and its point labels [L]; the same arguments always give the same arrays."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], index]))
    state = _operating_point(rng, length, rate)
    currents = _normal_currents(state, rng)
    labels = np.zeros(length, dtype=np.int8) if fault is None else _inject_fault(fault, currents, state, rng)
    return currents.astype(np.float32), labels


def _assign_faults(seed: int, split: str, count: int, anomaly_fraction: float) -> list[str | None]:
    """Exactly round(fraction * count) faulty segments at random positions, fault kinds in equal shares."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], 2**31]))
    anomalous = round(anomaly_fraction * count)
    faults: list[str | None] = [None] * count
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in rng.permutation(anomalous)]
    for position, kind in zip(rng.choice(count, anomalous, replace=False), kinds, strict=True):
        faults[int(position)] = kind
    return faults


def _validate(
    train_segments: int,
    val_segments: int,
    test_segments: int,
    segment_length: int,
    sampling_rate_hz: float,
    anomaly_fraction: float,
) -> None:
    if train_segments < 1:
        raise ValueError(f"train_segments: need at least 1, got {train_segments}")
    if segment_length < 16:
        raise ValueError(f"segment_length: need at least 16 points, got {segment_length}")
    if sampling_rate_hz <= 0:
        raise ValueError(f"sampling_rate_hz: must be positive, got {sampling_rate_hz}")
    if not 0 < anomaly_fraction < 1:
        raise ValueError(f"anomaly_fraction: must lie strictly between 0 and 1, got {anomaly_fraction}")
    for name, count in (("val_segments", val_segments), ("test_segments", test_segments)):
        if name == "test_segments" and count == 0:
            continue
        anomalous = round(anomaly_fraction * count)
        if not 0 < anomalous < count:
            raise ValueError(
                f"{name}: {count} segments at anomaly_fraction {anomaly_fraction} give {anomalous} faulty ones; "
                f"a labeled split needs both normal and faulty segments"
            )


def generate_synthetic_dataset(
    out: str | Path,
    *,
    train_segments: int = 256,
    val_segments: int = 128,
    test_segments: int = 128,
    segment_length: int = 2048,
    sampling_rate_hz: float = 1000.0,
    anomaly_fraction: float = 0.5,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    holdout_segments: int = 0,
) -> DatasetMeta:
    """Write the synthetic motor-current dataset to a new directory `out`; returns its metadata.

    `holdout_segments` normal segments go to a `holdout` split the model never trains on, where evaluation
    measures the statistics of normal scores."""
    _validate(train_segments, val_segments, test_segments, segment_length, sampling_rate_hz, anomaly_fraction)
    requested: dict[SplitName, int] = {
        "train": train_segments,
        "val": val_segments,
        "test": test_segments,
        "holdout": holdout_segments,
    }
    counts = {split: count for split, count in requested.items() if count > 0}
    faults = {
        split: (
            [None] * count if split in ("train", "holdout") else _assign_faults(seed, split, count, anomaly_fraction)
        )
        for split, count in counts.items()
    }
    provenance = {
        "generator": "tsmoe.data.synth",
        "seed": seed,
        "anomaly_fraction": anomaly_fraction,
        "supply_hz": SUPPLY_HZ,
        "fault_kinds": list(FAULT_KINDS),
        "faults": {split: kinds for split, kinds in faults.items() if split not in ("train", "holdout")},
    }
    writer = DatasetWriter(out, segment_length, list(CHANNELS), sampling_rate_hz, provenance=provenance)
    total, done = sum(counts.values()), 0
    for split, count in counts.items():
        arrays = writer.add_split(split, count, label_level=None if split in ("train", "holdout") else "point")
        for index, fault in enumerate(faults[split]):
            segment, labels = synthesize_segment(seed, split, index, segment_length, sampling_rate_hz, fault)
            arrays.segments[index] = segment
            if arrays.labels is not None:
                arrays.labels[index] = labels
            done += 1
            if progress is not None:
                progress(done, total)
    return writer.finish()
