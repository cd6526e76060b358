"""Motor-current recordings labelled per file: a dataset for the `--label-per-file` path.

Each CSV file is one recording of a three-phase induction motor (the built-in data's physics,
`tsmoe/data/synth.py`) at its own operating point. A faulty file carries its fault for the whole recording,
as a file-labelled dataset of a broken rotor bar or a worn bearing does, and a mild one, so that no detector
scores it for free. Normal files train; half the labelled files are healthy.

    fault                what the file carries throughout
    rotor_sidebands      sidebands at f(1 - 2s) and f(1 + 2s), 2% to 5% of the fundamental
    phase_imbalance      one phase's amplitude 5% to 15% off the other two
    harmonic_distortion  a 3rd harmonic of 2% to 6%
    drift                one sensor's offset creeping to 0.05 to 0.2
    spikes               two to five short transients on one phase
    noise                sensor noise 1 to 2 times stronger added

`benchmarks/detection.py --motor-files` trains and scores on it; this script writes the CSV files alone,
to run the CLI by hand:

    python benchmarks/motor_files.py OUT --seed 0
    tsmoe data from-csv DATA --train OUT/train/*.csv --test OUT/test/*.csv --label-column label \\
        --label-per-file --normalize train --val-fraction 0.3 --segment-length 512 --sampling-rate 1000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from tsmoe.data.from_csv import CsvLayout, csv_to_dataset
from tsmoe.data.store import SegmentDataset
from tsmoe.data.synth import CHANNELS, normal_recording, sinusoid
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.grouping import run_scores

LENGTH = 4096
RATE_HZ = 1000.0
SEGMENT_LENGTH = 512
LAYOUT = CsvLayout(label_column="label")


def _rotor_sidebands(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    strength = rng.uniform(0.02, 0.05)
    for order in (1 - 2 * state["slip"], 1 + 2 * state["slip"]):
        currents += sinusoid(state, order, strength)


def _phase_imbalance(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    currents[rng.integers(0, 3)] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15)


def _harmonic_distortion(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    currents += sinusoid(state, 3, rng.uniform(0.02, 0.06))


def _drift(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    currents[rng.integers(0, 3)] += rng.choice([-1, 1]) * np.linspace(0.0, rng.uniform(0.05, 0.2), LENGTH)


def _spikes(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    phase = rng.integers(0, 3)
    for _ in range(rng.integers(2, 6)):
        at = int(rng.integers(0, LENGTH - 3))
        currents[phase, at : at + int(rng.integers(1, 4))] += rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)


def _noise(currents: np.ndarray, state: dict, rng: np.random.Generator) -> None:
    currents += rng.normal(0.0, state["noise"] * rng.uniform(1.0, 2.0), size=currents.shape)


FAULTS: dict[str, Callable[[np.ndarray, dict, np.random.Generator], None]] = {
    "rotor_sidebands": _rotor_sidebands,
    "phase_imbalance": _phase_imbalance,
    "harmonic_distortion": _harmonic_distortion,
    "drift": _drift,
    "spikes": _spikes,
    "noise": _noise,
}


def _write(path: Path, currents: np.ndarray, label: int | None) -> None:
    frame = pd.DataFrame(currents.T, columns=list(CHANNELS))
    if label is not None:
        frame["label"] = label
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.5f")


def write_motor_files(out: Path, seed: int = 0, normal: int = 20, healthy: int = 24, faulty: int = 24) -> None:
    """`normal` training files in OUT/train, `healthy` and `faulty` labelled ones in OUT/test (faults in equal
    shares, named in the file name: fault_NN_KIND.csv); the same seed always writes the same files."""
    rng = np.random.default_rng(seed)
    for index in range(normal):
        _write(out / "train" / f"normal_{index:02d}.csv", normal_recording(rng, LENGTH, RATE_HZ)[0], None)
    for index in range(healthy):
        _write(out / "test" / f"healthy_{index:02d}.csv", normal_recording(rng, LENGTH, RATE_HZ)[0], 0)
    kinds = list(FAULTS)
    for index in range(faulty):
        kind = kinds[index % len(kinds)]
        currents, state = normal_recording(rng, LENGTH, RATE_HZ)
        FAULTS[kind](currents, state, rng)
        _write(out / "test" / f"fault_{index:02d}_{kind}.csv", currents, 1)


def build_motor_files(out: Path, seed: int = 0, val_fraction: float = 0.3) -> None:
    """The recordings as a dataset in `out` (CSV files beside it, in OUT.csv): files labelled as a whole,
    normalised by the training files' statistics, a seeded share of the labelled files validating."""
    csv = out.with_name(out.name + ".csv")
    write_motor_files(csv, seed)
    csv_to_dataset(
        out,
        train_files=sorted((csv / "train").glob("*.csv")),
        test_files=sorted((csv / "test").glob("*.csv")),
        val_fraction=val_fraction,
        seed=seed,
        layout=LAYOUT,
        segment_length=SEGMENT_LENGTH,
        stride=SEGMENT_LENGTH // 4,
        normalize="train",
        label_per_file=True,
        sampling_rate_hz=RATE_HZ,
    )


def fault_kind_auroc(
    scores: dict[str, np.ndarray], dataset: SegmentDataset, split_name: str, config: EvaluationConfig
) -> pd.DataFrame:
    """Run AUROC of every detector over the healthy files and those of one fault kind: one column per kind."""
    split = dataset.split(split_name)
    runs = np.asarray(split.runs)
    names = [Path(dataset.meta.run_names[run]).stem for run in np.unique(runs)]
    table: dict[str, dict[str, float]] = {}
    for detector, point_scores in scores.items():
        file_scores, labels = run_scores(point_scores, split.segment_labels(), runs, split.starts, config)
        for kind in FAULTS:
            members = np.array([name.startswith("healthy") or name.endswith(kind) for name in names])
            if np.unique(labels[members]).size == 2:
                table.setdefault(detector, {})[kind] = roc_auc_score(labels[members], file_scores[members])
    return pd.DataFrame.from_dict(table, orient="index")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a new directory for the CSV files")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.out.exists() and any(arguments.out.iterdir()):
        raise SystemExit(f"{arguments.out}: exists and is not empty; give a new directory")
    write_motor_files(arguments.out, arguments.seed)
    print(f"wrote {arguments.out}/train (20 normal files) and {arguments.out}/test (24 healthy, 24 faulty)")


if __name__ == "__main__":
    main()
