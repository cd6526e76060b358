"""CSV time series to a segment dataset, by sliding windows.

Two kinds of file go in. Normal files (`train_files`) hold normal operation only; all their windows train.
Labeled runs (`val_files`, `test_files`) hold a label column and begin with `normal_prefix` normal rows:
the prefix's windows train, the rest of the run is cut into labeled evaluation windows. Each file is one
run and is normalised by its own normal rows, because recordings differ in offset and gain; the dataset's
stored statistics are then close to zero mean and unit std and leave the data as it is.

Evaluation windows overlap (a stride below the segment length) and the last one is aligned to the run's
end, so every evaluation row is scored; `runs` and `starts` record where each window lies, so metrics can
count every row of a run once. Every file is read and checked before anything is written.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tsmoe.data.meta import LABELED_SPLITS, DatasetMeta
from tsmoe.data.store import DatasetWriter, safe_std


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
    """One file read and checked: its values [C, T], labels [T] or None, and where its normal part ends."""

    path: Path
    channels: list[str]
    values: np.ndarray
    labels: np.ndarray | None
    normal_rows: int  # rows [0, normal_rows) are normal and train


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
        raise ValueError(f"{path}: column {column!r}, line {row + 2}: {table[column].iloc[row]!r} is not a finite number")
    return values


def _read_run(path: Path, layout: CsvLayout, labeled: bool, normal_prefix: int, segment_length: int) -> _Run:
    table = _read_table(path, layout)
    channels = _channel_columns(path, table, layout)
    values = np.stack([_numeric(path, table, column) for column in channels])
    labels = None
    if layout.label_column and layout.label_column in table.columns:
        labels = _numeric(path, table, layout.label_column)
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            raise ValueError(f"{path}: column {layout.label_column!r}, line {bad[0] + 2}: labels must be 0 or 1, "
                             f"got {labels[bad[0]]}")
        labels = labels.astype(np.int8)
    if not labeled:
        if labels is not None and labels.any():
            raise ValueError(f"{path}: a training file must be normal, but column {layout.label_column!r} marks "
                             f"{int(labels.sum())} rows anomalous (first at line {int(np.argmax(labels)) + 2})")
        if values.shape[1] < segment_length:
            raise ValueError(f"{path}: {values.shape[1]} rows, shorter than the segment length {segment_length}")
        return _Run(path, channels, values, None, values.shape[1])
    if labels is None:
        wanted = f"the label column {layout.label_column!r}" if layout.label_column else "a label column"
        raise ValueError(f"{path}: a labeled (validation or test) run needs {wanted}")
    normal_rows = min(normal_prefix, len(labels))
    if labels[:normal_rows].any():
        first = int(np.argmax(labels))
        print(f"note: {path}: the first anomaly is at row {first}, inside the normal prefix of {normal_prefix} "
              f"rows; its normal part ends there", file=sys.stderr)
        normal_rows = first
    if normal_rows < 2:
        raise ValueError(f"{path}: only {normal_rows} normal rows before the first anomaly; "
                         f"at least 2 are needed to normalise the run")
    if len(labels) - normal_rows < segment_length:
        raise ValueError(f"{path}: {len(labels) - normal_rows} rows after the normal prefix, shorter than the "
                         f"segment length {segment_length}")
    return _Run(path, channels, values, labels, normal_rows)


def window_starts(length: int, segment_length: int, stride: int, align_end: bool) -> np.ndarray:
    """Window starts over `length` rows; with `align_end`, a last window ends exactly at the last row."""
    if length < segment_length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, length - segment_length + 1, stride, dtype=np.int64)
    if align_end and starts[-1] != length - segment_length:
        starts = np.append(starts, length - segment_length)
    return starts


def _normalized(run: _Run) -> np.ndarray:
    normal = run.values[:, : run.normal_rows]
    std = normal.std(axis=1, keepdims=True)
    return ((run.values - normal.mean(axis=1, keepdims=True)) / safe_std(std)).astype(np.float32)


def _run_names(paths: Sequence[Path]) -> list[str]:
    """Names that tell runs apart: paths relative to the files' common folder."""
    if not paths:
        return []
    common = Path(os.path.commonpath([str(path.resolve().parent) for path in paths]))
    return [str(path.resolve().relative_to(common)) for path in paths]


def csv_to_dataset(out: str | Path, *, train_files: Sequence[Path], val_files: Sequence[Path],
                   test_files: Sequence[Path] = (), layout: CsvLayout, segment_length: int, stride: int,
                   normal_prefix: int, sampling_rate_hz: float = 1.0,
                   progress: Callable[[int, int], None] | None = None) -> DatasetMeta:
    """Cut CSV files into a new dataset directory `out`; returns its metadata."""
    if segment_length < 2:
        raise ValueError(f"segment_length: need at least 2 rows, got {segment_length}")
    if stride < 1:
        raise ValueError(f"stride: need at least 1 row, got {stride}")
    if normal_prefix < 0:
        raise ValueError(f"normal_prefix: must not be negative, got {normal_prefix}")
    if not val_files:
        raise ValueError("val_files: a dataset needs at least one labeled validation run")
    files = [(Path(path), "train") for path in train_files] + [(Path(path), "val") for path in val_files] + \
            [(Path(path), "test") for path in test_files]
    runs: list[tuple[_Run, str]] = []
    for done, (path, split) in enumerate(files, start=1):
        runs.append((_read_run(path, layout, split != "train", normal_prefix, segment_length), split))
        if progress is not None:
            progress(done, len(files))
    channels = runs[0][0].channels
    for run, _ in runs[1:]:
        if run.channels != channels:
            raise ValueError(f"{run.path}: channel columns {run.channels} differ from {runs[0][0].path}'s "
                             f"{channels}; name the channels explicitly")

    train_windows = [(run, start) for run, _ in runs
                     for start in window_starts(run.normal_rows, segment_length, stride, align_end=False)]
    if not train_windows:
        raise ValueError(f"no training windows: no normal file and no labeled run has {segment_length} normal "
                         f"rows; give --train files or a longer --normal-prefix")
    labeled = [(run, split) for run, split in runs if split != "train"]
    names = _run_names([run.path for run, _ in labeled])
    provenance = {
        "generator": "tsmoe.data.from_csv",
        "train_files": _run_names([run.path for run, split in runs if split == "train"]),
        "normal_prefix": normal_prefix,
        "stride": stride,
        "normal_rows": {name: run.normal_rows for name, (run, _) in zip(names, labeled)},
    }
    writer = DatasetWriter(out, segment_length, channels, sampling_rate_hz, provenance=provenance, run_names=names)
    normalized = {id(run): _normalized(run) for run, _ in runs}
    train = writer.add_split("train", len(train_windows))
    for index, (run, start) in enumerate(train_windows):
        train.segments[index] = normalized[id(run)][:, start : start + segment_length]
    for split in LABELED_SPLITS:
        windows = [(run_id, run, start) for run_id, (run, run_split) in enumerate(labeled) if run_split == split
                   for start in window_starts(run.values.shape[1] - run.normal_rows, segment_length, stride, True)]
        if not windows:
            continue
        arrays = writer.add_split(split, len(windows), label_level="point", with_runs=True, with_starts=True)
        labels, run_ids, starts = arrays.labels, arrays.runs, arrays.starts
        assert labels is not None and run_ids is not None and starts is not None  # add_split was asked for them
        for index, (run_id, run, start) in enumerate(windows):
            assert run.labels is not None  # a labeled run's labels were read and checked by _read_run
            begin = run.normal_rows + int(start)
            arrays.segments[index] = normalized[id(run)][:, begin : begin + segment_length]
            labels[index] = run.labels[begin : begin + segment_length]
            run_ids[index] = run_id
            starts[index] = start
    return writer.finish()
