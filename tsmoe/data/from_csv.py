"""CSV time series to a segment dataset, by sliding windows.

Two kinds of file go in. Normal files (`train_files`) hold normal operation only. Labeled runs
(`val_files`, `test_files`) hold a label column; with point labels they may begin with `normal_prefix`
normal rows, which train like a normal file, and the rest of the run is cut into labeled evaluation windows.

Normalisation (`normalize`):

- "run": each file is normalised by its own normal rows, because recordings from different machines
  differ in offset and gain. A labeled run then needs at least 2 normal prefix rows, or a normal file of its
  name (train/NAME beside test/NAME), whose rows normalise it.
- "train": every file is normalised by the statistics of all training rows, for recordings of the same
  machine, where an offset is itself a sign of a fault. No prefix is needed.

A channel without spread in the rows that normalise it keeps a std of 1 (its values are only centred) and
a note names it: a constant sensor must not divide by zero, and a later change of it still scores.

Held-out normal data (`holdout_fraction`): the last share of every normal part long enough to spare whole
windows (at least one segment both held out and left to train) becomes the `holdout` split. The model never
trains on it; evaluation measures the statistics of normal scores there, not on the windows the model fit.

Validation (`val_fraction`): instead of naming validation files, a seeded share of the labeled runs (whole
runs, at least one, never all) becomes the validation split and the rest the test split, so the model, its
best epoch and a sweep are chosen on validation while the test split stays untouched.

File-level labels (`label_per_file`, or every labeled file with a constant label column and no normal
prefix): each labeled file is one sample, cut whole into windows that carry the file's label; evaluation
scores a file by aggregating its windows and reports AUROC over files. They need `normalize="train"`.

Whose normal data a training (or held-out) window is: the labelled run it was cut from (its normal prefix), or
the labelled run whose file has the same name as the normal file it was cut from (train/NAME beside test/NAME,
as server-metric datasets lay out each machine's recordings; only where exactly one labelled file has the
name), else none (NORMAL_FILE_RUN). Evaluation can then compare a run with its own normal operation.

Evaluation windows overlap (a stride below the segment length) and the last one is aligned to the run's
end, so every evaluation row is scored; `runs` and `starts` record where each window lies, so metrics can
count every row of a run once. Every file is read and checked before anything is written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tsmoe.data.meta import LABELED_SPLITS, NORMAL_FILE_RUN, DatasetMeta, SplitName
from tsmoe.data.store import NO_SPREAD, DatasetWriter, safe_std


@dataclass
class CsvLayout:
    """Which columns of the CSV files are what."""

    separator: str = ","
    time_column: str | None = None  # dropped: windows are cut by row, rows are evenly spaced
    channels: list[str] | None = None  # None: every column that is not time, label or ignored
    label_column: str | None = None  # 0/1 per row; needed in labeled runs
    ignore_columns: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """One file read and checked: its values [C, T], labels [T] or None, and which rows train or hold out."""

    path: Path
    channels: list[str]
    values: np.ndarray
    labels: np.ndarray | None
    normal_rows: int  # rows [0, normal_rows) are normal
    train_rows: int = 0  # rows [0, train_rows) train; [train_rows, normal_rows) are held out
    split: str = "train"

    @property
    def file_label(self) -> int:
        """The label of a file-level run (its labels are constant)."""
        assert self.labels is not None
        return int(self.labels[0])


def _read_table(path: Path, layout: CsvLayout) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    try:
        table = pd.read_csv(path, sep=layout.separator)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as CSV with separator {layout.separator!r} ({error})") from None
    table.columns = [str(column).strip() for column in table.columns]
    return table


def _channel_columns(path: Path, table: pd.DataFrame, layout: CsvLayout) -> list[str]:
    # Ignored columns may be absent: a normal file often lacks the columns that describe anomalies.
    required = ([layout.time_column] if layout.time_column else []) + (layout.channels or [])
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} not found (columns: {', '.join(table.columns)})")
    if layout.channels is not None:
        return list(layout.channels)
    dropped = {layout.time_column, layout.label_column, *layout.ignore_columns}
    return [column for column in table.columns if column not in dropped]


def _numeric(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        # Row numbers as a user sees them in an editor: line 1 is the header.
        raise ValueError(
            f"{path}: column {column!r}, line {row + 2}: {table[column].iloc[row]!r} is not a finite number"
        )
    return values


def _read_file(path: Path, layout: CsvLayout, labeled: bool) -> _Run:
    """Values and labels of one file; a labeled file must have the label column."""
    table = _read_table(path, layout)
    channels = _channel_columns(path, table, layout)
    values = np.stack([_numeric(path, table, column) for column in channels])
    labels = None
    if layout.label_column and layout.label_column in table.columns:
        labels = _numeric(path, table, layout.label_column)
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            raise ValueError(
                f"{path}: column {layout.label_column!r}, line {bad[0] + 2}: labels must be 0 or 1, "
                f"got {labels[bad[0]]}"
            )
        labels = labels.astype(np.int8)
    if labeled and labels is None:
        wanted = f"the label column {layout.label_column!r}" if layout.label_column else "a label column"
        raise ValueError(f"{path}: a labeled (validation or test) run needs {wanted}")
    return _Run(path, channels, values, labels, normal_rows=0)


def _prepare_normal_file(run: _Run, layout: CsvLayout, segment_length: int, paired: bool) -> None:
    if run.labels is not None and run.labels.any():
        raise ValueError(
            f"{run.path}: a training file must be normal, but column {layout.label_column!r} marks "
            f"{int(run.labels.sum())} rows anomalous (first at line {int(np.argmax(run.labels)) + 2})"
        )
    rows = run.values.shape[1]
    if rows < segment_length:
        if not paired:
            raise ValueError(f"{run.path}: {rows} rows, shorter than the segment length {segment_length}")
        # As a short normal prefix does: no training window, but its rows still normalise its labelled namesake.
        print(
            f"note: {run.path}: {rows} rows, shorter than the segment length {segment_length}: it gives no training "
            f"window, and only normalises the labelled file of its name",
            file=sys.stderr,
        )
    run.labels = None
    run.normal_rows = run.values.shape[1]


def _prepare_point_run(run: _Run, normal_prefix: int, segment_length: int, normalize: str, paired: bool) -> None:
    assert run.labels is not None
    normal_rows = min(normal_prefix, len(run.labels))
    if run.labels[:normal_rows].any():
        first = int(np.argmax(run.labels))
        print(
            f"note: {run.path}: the first anomaly is at row {first}, inside the normal prefix of {normal_prefix} "
            f"rows; its normal part ends there",
            file=sys.stderr,
        )
        normal_rows = first
    if normalize == "run" and normal_rows < 2 and not paired:
        raise ValueError(
            f"{run.path}: only {normal_rows} normal rows before the first anomaly; at least 2 are needed to "
            f"normalise the run by its own normal rows (or give a normal file of the same name, train/NAME, "
            f"or normalise by training statistics: normalize 'train')"
        )
    if len(run.labels) - normal_rows < segment_length:
        raise ValueError(
            f"{run.path}: {len(run.labels) - normal_rows} rows after the normal prefix, shorter than the "
            f"segment length {segment_length}"
        )
    evaluated = run.labels[normal_rows:]
    if evaluated.min() == evaluated.max():
        kind = "anomalous" if evaluated[0] else "normal"
        print(
            f"note: {run.path}: every evaluated row is {kind}; its point AUROC is undefined, so the run is "
            f"skipped from the per-run average (it still counts at run level)",
            file=sys.stderr,
        )
    run.normal_rows = normal_rows


def _prepare_file_run(run: _Run, segment_length: int) -> None:
    assert run.labels is not None
    changes = np.flatnonzero(run.labels != run.labels[0])
    if changes.size:
        raise ValueError(
            f"{run.path}: file-level labels must be constant in a file, but line {int(changes[0]) + 2} has "
            f"{int(run.labels[changes[0]])} after {int(run.labels[0])} on line 2"
        )
    if len(run.labels) < segment_length:
        raise ValueError(f"{run.path}: {len(run.labels)} rows, shorter than the segment length {segment_length}")
    run.normal_rows = 0


def _assign_holdout(runs: Sequence[_Run], fraction: float, segment_length: int) -> None:
    """The last `fraction` of each normal part is held out where it spares a whole segment either side."""
    for run in runs:
        run.train_rows = run.normal_rows
        held = round(run.normal_rows * fraction)
        if fraction > 0 and held >= segment_length and run.normal_rows - held >= segment_length:
            run.train_rows = run.normal_rows - held


def _choose_validation(labeled: Sequence[_Run], fraction: float, seed: int, file_level: bool) -> None:
    """Mark a seeded share of whole runs as validation, per class (a run with any anomaly is anomalous)."""
    if len(labeled) < 2:
        raise ValueError(
            f"val_fraction: needs at least 2 labeled runs to keep one for testing, got {len(labeled)}; "
            f"name validation files instead"
        )
    rng = np.random.default_rng(seed)
    classes: dict[int, list[int]] = {}
    for index, run in enumerate(labeled):
        assert run.labels is not None
        classes.setdefault(int(run.labels[run.normal_rows :].max()), []).append(index)
    chosen: list[int] = []
    for members in classes.values():
        # Both classes must reach validation when files are the samples, else its AUROC is undefined.
        wanted = round(len(members) * fraction)
        if file_level and len(classes) > 1:
            wanted = max(wanted, 1) if len(members) > 1 else 0
        chosen += rng.permutation(members)[:wanted].tolist()
    if not chosen:
        chosen = [int(rng.integers(len(labeled)))]
    if len(chosen) == len(labeled):
        chosen = chosen[:-1]
    for index, run in enumerate(labeled):
        run.split = "val" if index in chosen else "test"


def window_starts(length: int, segment_length: int, stride: int, align_end: bool) -> np.ndarray:
    """Window starts over `length` rows; with `align_end`, a last window ends exactly at the last row."""
    if length < segment_length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, length - segment_length + 1, stride, dtype=np.int64)
    if align_end and starts[-1] != length - segment_length:
        starts = np.append(starts, length - segment_length)
    return starts


def _statistics(path: Path, channels: list[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std [C, 1] of rows [C, T]; a constant channel keeps std 1, with a note."""
    mean = rows.mean(axis=1, keepdims=True)
    std = rows.std(axis=1, keepdims=True)
    constant = [channel for channel, spread in zip(channels, std[:, 0], strict=True) if spread <= NO_SPREAD]
    if constant:
        print(
            f"note: {path}: channel(s) {', '.join(constant)} are constant in the rows that normalise them; "
            f"they are centred but not scaled",
            file=sys.stderr,
        )
    return mean, safe_std(std)


def _normalizers(
    runs: Sequence[_Run], normalize: str, pairs: dict[int, _Run]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(mean, std) per run (by id): its own training rows (a labelled run without 2 of them: its paired normal
    file's), or the training rows of all files."""
    if normalize == "train":
        rows = np.concatenate([run.values[:, : run.train_rows] for run in runs if run.train_rows > 0], axis=1)
        shared = _statistics(Path("training rows of all files"), runs[0].channels, rows)
        return {id(run): shared for run in runs}
    by_source: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    own = {}
    for run in runs:
        source = pairs[id(run)] if run.train_rows < 2 and id(run) in pairs else run
        if id(source) not in by_source:  # a normal file that normalises its labelled pair too is noted once
            by_source[id(source)] = _statistics(source.path, source.channels, source.values[:, : source.train_rows])
        own[id(run)] = by_source[id(source)]
    return own


def _run_names(paths: Sequence[Path]) -> list[str]:
    """Names that tell runs apart: paths relative to the files' common folder."""
    if not paths:
        return []
    common = Path(os.path.commonpath([str(path.resolve().parent) for path in paths]))
    return [str(path.resolve().relative_to(common)) for path in paths]


def _paired_normal_files(runs: Sequence[_Run]) -> dict[int, _Run]:
    """Labelled runs (by `id`) and the normal file of the same name, where the name is one normal file's and
    one labelled file's alone (train/NAME beside test/NAME)."""
    normal: dict[str, list[_Run]] = {}
    labeled: dict[str, list[_Run]] = {}
    for run in runs:
        (normal if run.split == "train" else labeled).setdefault(run.path.name, []).append(run)
    return {
        id(labeled[name][0]): files[0]
        for name, files in normal.items()
        if len(files) == 1 and len(labeled.get(name, [])) == 1
    }


def _normal_data_owners(labeled: Sequence[_Run], pairs: dict[int, _Run]) -> dict[int, int]:
    """The labelled run id (index in `labeled`) whose normal data each file's normal rows are, by `id(file)`:
    a labelled run's own prefix, or its paired normal file. Others are absent."""
    owners = {id(run): run_id for run_id, run in enumerate(labeled)}
    for run_id, run in enumerate(labeled):
        if id(run) in pairs:
            owners[id(pairs[id(run)])] = run_id
    return owners


def csv_to_dataset(
    out: str | Path,
    *,
    train_files: Sequence[Path],
    val_files: Sequence[Path] = (),
    test_files: Sequence[Path] = (),
    layout: CsvLayout,
    segment_length: int,
    stride: int,
    normal_prefix: int = 0,
    normalize: Literal["run", "train"] = "run",
    val_fraction: float | None = None,
    label_per_file: bool = False,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    sampling_rate_hz: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetMeta:
    """Cut CSV files into a new dataset directory `out`; returns its metadata."""
    if segment_length < 2:
        raise ValueError(f"segment_length: need at least 2 rows, got {segment_length}")
    if stride < 1:
        raise ValueError(f"stride: need at least 1 row, got {stride}")
    if normal_prefix < 0:
        raise ValueError(f"normal_prefix: must not be negative, got {normal_prefix}")
    if normalize not in ("run", "train"):
        raise ValueError(f"normalize: expected 'run' or 'train', got {normalize!r}")
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction: expected a share in [0, 1), got {holdout_fraction}")
    if val_fraction is not None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: expected a share in (0, 1), got {val_fraction}")
        if val_files:
            raise ValueError("val_fraction: give either validation files or a validation share, not both")
    elif not val_files:
        raise ValueError("val_files: a dataset needs labeled validation runs, or a val_fraction of the test runs")

    files = [(Path(path), "train") for path in train_files]
    files += [(Path(path), "val") for path in val_files] + [(Path(path), "test") for path in test_files]
    runs: list[_Run] = []
    for done, (path, split) in enumerate(files, start=1):
        run = _read_file(path, layout, labeled=split != "train")
        run.split = split
        runs.append(run)
        if progress is not None:
            progress(done, len(files))
    channels = runs[0].channels
    for run in runs[1:]:
        if run.channels != channels:
            raise ValueError(
                f"{run.path}: channel columns {run.channels} differ from {runs[0].path}'s {channels}; "
                f"name the channels explicitly"
            )

    labeled = [run for run in runs if run.split != "train"]
    constant_labels = all(run.labels is not None and run.labels.min() == run.labels.max() for run in labeled)
    file_level = label_per_file or (normal_prefix == 0 and normalize == "train" and bool(labeled) and constant_labels)
    if file_level and normalize != "train":
        raise ValueError(
            "label_per_file: a file-level labeled file has no normal prefix to normalise it by; "
            "normalise by training statistics (normalize 'train')"
        )
    if file_level and normal_prefix:
        raise ValueError(f"normal_prefix: file-level labels evaluate whole files, so it must be 0, got {normal_prefix}")
    pairs = _paired_normal_files(runs)
    paired_normal = {id(normal) for normal in pairs.values()}
    if pairs:
        print(
            f"note: {len(pairs)} of {len(labeled)} labelled files have a normal file of the same name, which is "
            f"their own normal data (evaluation.normal_reference: run)"
            + (" and normalises them where they have no normal prefix" if normalize == "run" else ""),
            file=sys.stderr,
        )
    for run in runs:
        if run.split == "train":
            _prepare_normal_file(run, layout, segment_length, id(run) in paired_normal)
        elif file_level:
            _prepare_file_run(run, segment_length)
        else:
            _prepare_point_run(run, normal_prefix, segment_length, normalize, id(run) in pairs)
    if val_fraction is not None:
        _choose_validation(labeled, val_fraction, seed, file_level)
    if not any(run.split == "val" for run in labeled):
        raise ValueError("val_files: no labeled run is left for validation")
    _assign_holdout(runs, holdout_fraction, segment_length)

    train_windows = [
        (run, start) for run in runs for start in window_starts(run.train_rows, segment_length, stride, False)
    ]
    if not train_windows:
        raise ValueError(
            f"no training windows: no normal file and no labeled run has {segment_length} normal rows; "
            f"give train files or a longer normal prefix"
        )
    holdout_windows = [
        (run, run.train_rows + start)
        for run in runs
        for start in window_starts(run.normal_rows - run.train_rows, segment_length, stride, False)
    ]
    names = _run_names([run.path for run in labeled])
    provenance = {
        "generator": "tsmoe.data.from_csv",
        "train_files": _run_names([run.path for run in runs if run.split == "train"]),
        "normal_prefix": normal_prefix,
        "stride": stride,
        "normalize": normalize,
        "label_level": "file" if file_level else "point",
        "holdout_fraction": holdout_fraction,
        "normal_rows": {name: run.normal_rows for name, run in zip(names, labeled, strict=True)},
        "splits": {name: run.split for name, run in zip(names, labeled, strict=True)},
        "normal_files": {
            name: pairs[id(run)].path.name for name, run in zip(names, labeled, strict=True) if id(run) in pairs
        },
    }
    writer = DatasetWriter(out, segment_length, channels, sampling_rate_hz, provenance=provenance, run_names=names)
    normalizers = _normalizers(runs, normalize, pairs)
    normalized = {
        id(run): ((run.values - normalizers[id(run)][0]) / normalizers[id(run)][1]).astype(np.float32) for run in runs
    }
    normal_splits: list[tuple[SplitName, list[tuple[_Run, int]]]] = [
        ("train", train_windows),
        ("holdout", holdout_windows),
    ]
    run_ids = _normal_data_owners(labeled, pairs)
    for name, windows in normal_splits:
        if not windows:
            continue
        # Each window carries the id of the labelled run whose normal data it is (NORMAL_FILE_RUN for none), so
        # that a run can be compared with its own normal operation (evaluation.normal_reference: run).
        from_runs = any(id(run) in run_ids for run, _ in windows)
        arrays = writer.add_split(name, len(windows), with_runs=from_runs)
        for index, (run, start) in enumerate(windows):
            arrays.segments[index] = normalized[id(run)][:, start : start + segment_length]
            if arrays.runs is not None:
                arrays.runs[index] = run_ids.get(id(run), NORMAL_FILE_RUN)
    for split in LABELED_SPLITS:
        windows_of_split = [
            (run_id, run, start)
            for run_id, run in enumerate(labeled)
            if run.split == split
            for start in window_starts(len(run.values[0]) - run.normal_rows, segment_length, stride, True)
        ]
        if not windows_of_split:
            continue
        arrays = writer.add_split(
            split,
            len(windows_of_split),
            label_level="segment" if file_level else "point",
            with_runs=True,
            with_starts=True,
        )
        assert arrays.labels is not None and arrays.runs is not None and arrays.starts is not None
        for index, (run_id, run, start) in enumerate(windows_of_split):
            begin = run.normal_rows + int(start)
            arrays.segments[index] = normalized[id(run)][:, begin : begin + segment_length]
            assert run.labels is not None
            arrays.labels[index] = run.file_label if file_level else run.labels[begin : begin + segment_length]
            arrays.runs[index] = run_id
            arrays.starts[index] = start
    return writer.finish()
