"""`tsmoe data check`: validate a dataset directory before any worker touches it.

Every problem is reported as `FILE: field FIELD: what is wrong (first bad index ...)`, and all files are
checked before reporting, so one run of the check lists everything to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsmoe.data.curriculum import CropStage, crop_lengths
from tsmoe.data.meta import LABELED_SPLITS, META_FILE, NORMAL_FILE_RUN, DatasetMeta, SplitFiles, read_meta
from tsmoe.data.store import open_segments

SCAN_CHUNK_SEGMENTS = 64


class DatasetError(ValueError):
    """A dataset failed its check; `problems` holds one line per problem."""

    def __init__(self, directory: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{directory}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class SplitSummary:
    """What the check found in one split."""

    segments: int
    label_level: str | None = None
    anomalous_segments: int = 0
    anomalous_points: float = 0.0  # fraction of labeled points; segment-level splits leave it 0
    runs: int = 0


@dataclass
class DatasetSummary:
    """What the check found in a dataset that passed."""

    meta: DatasetMeta
    splits: dict[str, SplitSummary] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """A short human-readable description, one line per split."""
        meta = self.meta
        head = (
            f"{len(meta.channels)} channel(s) ({', '.join(meta.channels)}), segments of {meta.segment_length} "
            f"points at {meta.sampling_rate_hz:g} Hz"
        )
        lines = [head]
        for name, split in self.splits.items():
            line = f"  {name}: {split.segments} segments"
            if split.label_level is not None:
                line += f", {split.anomalous_segments} anomalous, {split.label_level} labels"
                if split.label_level == "point":
                    line += f" ({split.anomalous_points:.1%} of points anomalous)"
            if split.runs:
                line += f", {split.runs} runs"
            lines.append(line)
        return lines


def check_dataset(
    directory: str | Path,
    crop_schedule: str | list[CropStage] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    batch_size: int | None = None,
) -> DatasetSummary:
    """Check shapes, dtypes, values and labels of every split; raise DatasetError listing every problem.

    With `batch_size` (segments per step over all workers), also that the training split fills one batch:
    incomplete batches are dropped, so a smaller split would train on nothing.
    """
    directory = Path(directory)
    meta = read_meta(directory)  # raises with the field named when meta.json itself is wrong
    problems: list[str] = []
    summary = DatasetSummary(meta)
    if meta.normalization is None:
        problems.append(
            f"{directory / META_FILE}: field normalization: missing; "
            f"`tsmoe data stats {directory}` computes it from the training split"
        )
    if crop_schedule is not None:
        longest = max(crop_lengths(crop_schedule, meta.segment_length))
        if longest > meta.segment_length:
            problems.append(
                f"{directory / META_FILE}: field segment_length: {meta.segment_length} points, but the "
                f"crop schedule {_schedule_name(crop_schedule)} asks for crops of {longest}"
            )
    for name, files in meta.splits.items():
        split_summary = _check_split(directory, name, files, meta, problems, progress)
        if split_summary is not None:
            summary.splits[name] = split_summary
    train = summary.splits.get("train")
    if batch_size is not None and train is not None and train.segments < batch_size:
        problems.append(
            f"{directory / meta.splits['train'].segments}: field data.batch_size: the training split "
            f"holds {train.segments} segments, fewer than one batch of {batch_size} (data.batch_size "
            f"x workers); incomplete batches are dropped, so lower data.batch_size"
        )
    if problems:
        raise DatasetError(directory, problems)
    return summary


def _schedule_name(schedule: str | list[CropStage]) -> str:
    return repr(schedule) if isinstance(schedule, str) else "in the config"


def _check_split(
    directory: Path,
    name: str,
    files: SplitFiles,
    meta: DatasetMeta,
    problems: list[str],
    progress: Callable[[str, int, int], None] | None,
) -> SplitSummary | None:
    path = directory / files.segments
    try:
        segments = open_segments(path, meta, files.count)
    except FileNotFoundError:
        problems.append(f"{path}: missing (named in {META_FILE} field splits.{name}.segments)")
        return None
    except ValueError as error:
        message = str(error)
        problems.append(message if message.startswith(str(path)) else f"{path}: not a valid .npy file ({message})")
        return None

    expected = (meta.num_channels, meta.segment_length)
    if segments.dtype != np.float32:
        problems.append(f"{path}: field dtype: expected float32, found {segments.dtype}")
        return None
    if segments.ndim != 3 or tuple(segments.shape[1:]) != expected:
        problems.append(
            f"{path}: field shape: expected [N, {expected[0]}, {expected[1]}] (channels and "
            f"segment_length from {META_FILE}), found {list(segments.shape)}"
        )
        return None
    count = len(segments)
    if count == 0:
        problems.append(f"{path}: field shape: the {name} split holds no segments")
        return None

    bad = _first_non_finite(segments, lambda done: progress and progress(name, done, count))
    if bad is not None:
        index, channel, point = bad
        problems.append(
            f"{path}: field values: NaN or inf at first bad index [{index}, {channel}, {point}] "
            f"(segment {index}, channel {meta.channels[channel]!r}, point {point})"
        )

    summary = SplitSummary(segments=count)
    if files.labels is not None:
        _check_labels(directory / files.labels, f"splits.{name}.labels", count, meta, summary, problems)
    if files.runs is not None:
        # A normal split's segments from a normal file carry NORMAL_FILE_RUN; labelled splits' all name a run.
        lowest = NORMAL_FILE_RUN if name not in LABELED_SPLITS else 0
        runs = _load_index_array(directory / files.runs, f"splits.{name}.runs", count, problems, lowest)
        if runs is not None:
            summary.runs = len(np.unique(runs[runs >= 0]))
            if meta.run_names and runs.max(initial=0) >= len(meta.run_names):
                first = int(np.argmax(runs >= len(meta.run_names)))
                problems.append(
                    f"{directory / files.runs}: field values: run id {runs[first]} has no entry in "
                    f"{META_FILE} field run_names ({len(meta.run_names)} names) "
                    f"(first bad index {first})"
                )
    if files.starts is not None:
        _load_index_array(directory / files.starts, f"splits.{name}.starts", count, problems)
    return summary


def _first_non_finite(segments: np.ndarray, report: Callable[[int], object]) -> tuple[int, int, int] | None:
    """Index [segment, channel, point] of the first NaN or inf, scanning in bounded chunks."""
    for start in range(0, len(segments), SCAN_CHUNK_SEGMENTS):
        chunk = np.asarray(segments[start : start + SCAN_CHUNK_SEGMENTS])
        finite = np.isfinite(chunk)
        if not finite.all():
            index, channel, point = np.argwhere(~finite)[0]
            return start + int(index), int(channel), int(point)
        report(min(start + SCAN_CHUNK_SEGMENTS, len(segments)))
    return None


def _check_labels(
    path: Path, field_name: str, count: int, meta: DatasetMeta, summary: SplitSummary, problems: list[str]
) -> None:
    labels = _load_array(path, field_name, problems)
    if labels is None:
        return
    if labels.shape not in ((count,), (count, meta.segment_length)):
        problems.append(
            f"{path}: field shape: labels must be [{count}] per segment or [{count}, "
            f"{meta.segment_length}] per point to match the segments, found {list(labels.shape)}"
        )
        return
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        problems.append(f"{path}: field dtype: labels must be integers 0/1 or bool, found {labels.dtype}")
        return
    values = np.asarray(labels)
    invalid = (values != 0) & (values != 1)
    if invalid.any():
        first = tuple(int(i) for i in np.argwhere(invalid)[0])
        problems.append(
            f"{path}: field values: labels must be 0 or 1, found {values[first]} (first bad index {list(first)})"
        )
        return
    per_segment = values.max(axis=1) if values.ndim == 2 else values
    summary.label_level = "point" if values.ndim == 2 else "segment"
    summary.anomalous_segments = int(per_segment.sum())
    if values.ndim == 2:
        summary.anomalous_points = float(values.mean())
    if summary.anomalous_segments in (0, count) and (values.ndim == 1 or values.min() == values.max()):
        kind = "anomalous" if summary.anomalous_segments else "normal"
        problems.append(f"{path}: field values: every label is {kind}; AUROC needs both normal and anomalous points")


def _load_index_array(
    path: Path, field_name: str, count: int, problems: list[str], lowest: int = 0
) -> np.ndarray | None:
    array = _load_array(path, field_name, problems)
    if array is None:
        return None
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        problems.append(
            f"{path}: field shape: expected {count} integers (one per segment), found {array.dtype} {list(array.shape)}"
        )
        return None
    if (array < lowest).any():
        first = int(np.argmax(array < lowest))
        expected = "must not be negative" if lowest == 0 else f"must be at least {lowest}"
        problems.append(f"{path}: field values: {expected}, found {array[first]} (first bad index {first})")
        return None
    return np.asarray(array)


def _load_array(path: Path, field_name: str, problems: list[str]) -> np.ndarray | None:
    if not path.is_file():
        problems.append(f"{path}: missing (named in {META_FILE} field {field_name})")
        return None
    try:
        return np.load(path, mmap_mode="r")
    except ValueError as error:
        problems.append(f"{path}: not a valid .npy file ({error})")
        return None
