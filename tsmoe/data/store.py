"""Reading and writing segment datasets through memory maps.

Readers never load a split whole: `SegmentSplit.segments` is a read-only memory map, opened lazily in
the process that touches it, so a split object can be handed to DataLoader workers without copying the
data into each of them.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsmoe.data.meta import META_FILE, DatasetMeta, Normalization, SplitFiles, SplitName, read_meta, write_meta

FLOAT32_BYTES = 4


class DiskFullError(OSError):
    """The disk filled while tsmoe wrote a file; the message says what was written and what was kept."""

    def __init__(self, message: str):
        super().__init__(message)  # one line, without the "[Errno 28]" prefix of a two-argument OSError
        self.errno = errno.ENOSPC


class SegmentSplit:
    """One split of a dataset: segments [N, C, L] plus optional labels, run ids and run offsets."""

    def __init__(self, directory: Path, name: SplitName, files: SplitFiles, meta: DatasetMeta):
        self.directory = directory
        self.name = name
        self.files = files
        self.meta = meta
        self._segments: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would carry its whole contents; workers reopen the file instead.
        return {**self.__dict__, "_segments": None}

    @property
    def segments(self) -> np.ndarray:
        """The split's segments as a read-only float32 memory map [N, C, L]."""
        if self._segments is None:
            self._segments = open_segments(self.directory / self.files.segments, self.meta, self.files.count)
        return self._segments

    def __len__(self) -> int:
        return self.segments.shape[0]

    def _optional(self, name: str | None) -> np.ndarray | None:
        return None if name is None else np.load(self.directory / name, mmap_mode="r")

    @property
    def labels(self) -> np.ndarray | None:
        """Labels as stored: [N] per segment or [N, L] per point; None for an unlabeled split."""
        return self._optional(self.files.labels)

    @property
    def label_level(self) -> str | None:
        """'point', 'segment', or None when the split has no labels."""
        labels = self.labels
        return None if labels is None else ("point" if labels.ndim == 2 else "segment")

    def segment_labels(self) -> np.ndarray:
        """One 0/1 label per segment; a segment with any anomalous point is anomalous."""
        labels = self.labels
        if labels is None:
            raise ValueError(f"{self.name} split has no labels")
        labels = np.asarray(labels)
        return (labels.max(axis=1) if labels.ndim == 2 else labels).astype(np.int8)

    @property
    def runs(self) -> np.ndarray | None:
        """Run id of every segment [N], or None when every segment stands alone."""
        runs = self._optional(self.files.runs)
        return None if runs is None else np.asarray(runs, dtype=np.int64)

    @property
    def starts(self) -> np.ndarray | None:
        """Offset of every segment within its run [N], or None."""
        starts = self._optional(self.files.starts)
        return None if starts is None else np.asarray(starts, dtype=np.int64)


@dataclass
class SegmentDataset:
    """An opened dataset directory."""

    directory: Path
    meta: DatasetMeta
    splits: dict[str, SegmentSplit] = field(default_factory=dict)

    def split(self, name: str) -> SegmentSplit:
        """The named split; a clear error when the dataset has none of that name."""
        if name not in self.splits:
            raise ValueError(f"{self.directory}: no {name!r} split (it has {', '.join(self.splits)})")
        return self.splits[name]

    @property
    def normalization(self) -> Normalization:
        """The training statistics; datasets written by tsmoe always have them."""
        if self.meta.normalization is None:
            raise ValueError(
                f"{self.directory / META_FILE}: field normalization is missing; "
                f"run `tsmoe data stats {self.directory}` to compute it from the training split"
            )
        return self.meta.normalization


def open_dataset(directory: str | Path) -> SegmentDataset:
    """Open a dataset directory (reads `meta.json`; arrays are mapped when first used)."""
    directory = Path(directory)
    meta = read_meta(directory)
    splits: dict[str, SegmentSplit] = {
        name: SegmentSplit(directory, name, files, meta) for name, files in meta.splits.items()
    }
    return SegmentDataset(directory, meta, splits)


def open_segments(path: Path, meta: DatasetMeta, count: int | None = None) -> np.ndarray:
    """Map a .npy or raw float32 .bin segment file read-only; shape problems raise ValueError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (named in {META_FILE})")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    segment_bytes = meta.num_channels * meta.segment_length * FLOAT32_BYTES
    size = path.stat().st_size
    if size % segment_bytes:
        complete = size // segment_bytes
        raise ValueError(
            f"{path}: truncated or misaligned binary: {size} bytes is not a whole number of segments of "
            f"{meta.num_channels} channels x {meta.segment_length} float32 points ({segment_bytes} bytes); "
            f"segment index {complete} is incomplete"
        )
    found = size // segment_bytes
    if count is not None and count != found:
        raise ValueError(f"{path}: field count in {META_FILE} says {count} segments, the file holds {found}")
    if found == 0:
        return np.zeros((0, meta.num_channels, meta.segment_length), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(found, meta.num_channels, meta.segment_length))


# Spreads at or below this are treated as none: the values are constant up to rounding.
NO_SPREAD = 1e-12


def safe_std(std: np.ndarray) -> np.ndarray:
    """`std` with every spread too small to divide by replaced by 1: a constant channel (or bucket, or
    feature) carries no signal, and dividing by it must leave its values as they are, not blow them up."""
    return np.where(std > NO_SPREAD, std, 1.0)


def compute_normalization(segments: np.ndarray, chunk_segments: int = 256) -> Normalization:
    """Per-channel mean and std of [N, C, L] segments, accumulated chunk by chunk in float64."""
    if len(segments) == 0:
        raise ValueError("cannot compute normalization statistics from an empty training split")
    channels = segments.shape[1]
    total, total_squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(segments), chunk_segments):
        chunk = np.asarray(segments[start : start + chunk_segments], dtype=np.float64)
        total += chunk.sum(axis=(0, 2))
        total_squares += np.square(chunk).sum(axis=(0, 2))
        count += chunk.shape[0] * chunk.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - mean**2, 0.0))
    std = safe_std(std)
    return Normalization(mean=mean.tolist(), std=std.tolist())


@dataclass
class SplitArrays:
    """Writable arrays of one split, as `DatasetWriter.add_split` hands them out."""

    segments: np.ndarray
    labels: np.ndarray | None = None
    runs: np.ndarray | None = None
    starts: np.ndarray | None = None


class DatasetWriter:
    """Writes a dataset into a fresh directory, atomically.

    Arrays are created as .npy memory maps in `OUT.partial/`, filled by the caller, and the directory is
    renamed to `OUT` by `finish()`, which also computes the training statistics and writes `meta.json`.
    An existing `OUT` is never overwritten.
    """

    def __init__(
        self,
        out: str | Path,
        segment_length: int,
        channels: list[str],
        sampling_rate_hz: float,
        provenance: dict[str, Any] | None = None,
        run_names: list[str] | None = None,
    ):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise FileExistsError(f"{self.out}: already exists and is not empty; choose a new output directory")
        self.partial = self.out.with_name(self.out.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)  # the leftover of an earlier interrupted write, never user data
        self.partial.mkdir(parents=True)
        self.segment_length = segment_length
        self.channels = list(channels)
        self.sampling_rate_hz = sampling_rate_hz
        self.provenance = dict(provenance or {})
        self.run_names = list(run_names or [])
        self.splits: dict[str, SplitFiles] = {}
        self.arrays: dict[str, SplitArrays] = {}

    def add_split(
        self,
        name: SplitName,
        count: int,
        label_level: str | None = None,
        with_runs: bool = False,
        with_starts: bool = False,
    ) -> SplitArrays:
        """Create the split's arrays (zero-filled memory maps) and return them to be filled."""
        shape = (count, len(self.channels), self.segment_length)
        files = SplitFiles(segments=f"{name}.npy")
        arrays = SplitArrays(segments=self._create(files.segments, shape, np.float32))
        if label_level is not None:
            label_shape = (count, self.segment_length) if label_level == "point" else (count,)
            files.labels = f"{name}_labels.npy"
            arrays.labels = self._create(files.labels, label_shape, np.int8)
        if with_runs:
            files.runs = f"{name}_runs.npy"
            arrays.runs = self._create(files.runs, (count,), np.int64)
        if with_starts:
            files.starts = f"{name}_starts.npy"
            arrays.starts = self._create(files.starts, (count,), np.int64)
        self.splits[name] = files
        self.arrays[name] = arrays
        return arrays

    def _create(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        path = self.partial / name
        array = self._guarded(
            f"creating {name}", lambda: np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        )
        self._guarded(f"reserving space for {name}", lambda: _reserve_space(path))
        return array

    def _guarded(self, step: str, action: Callable[[], Any]) -> Any:
        """Run one write step; a full disk removes the partial dataset and says so in one line."""
        try:
            return action()
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            self.arrays.clear()
            shutil.rmtree(self.partial, ignore_errors=True)
            raise DiskFullError(
                f"{self.out}: no space left on the device while {step}; nothing was written "
                f"(the partial dataset {self.partial.name} is removed), free space and run again",
            ) from None

    def finish(self) -> DatasetMeta:
        """Flush the arrays, write `meta.json` with training statistics and move the directory into place."""
        for arrays in self.arrays.values():
            for array in (arrays.segments, arrays.labels, arrays.runs, arrays.starts):
                if isinstance(array, np.memmap):
                    self._guarded("flushing the arrays", array.flush)
        meta = DatasetMeta(
            segment_length=self.segment_length,
            channels=self.channels,
            sampling_rate_hz=self.sampling_rate_hz,
            normalization=compute_normalization(self.arrays["train"].segments),
            splits=self.splits,
            run_names=self.run_names,
            provenance=self.provenance,
        )
        self._guarded(f"writing {META_FILE}", lambda: write_meta(self.partial, meta))
        self.arrays.clear()
        if self.out.exists():
            self.out.rmdir()  # checked empty in __init__
        self.partial.rename(self.out)
        return meta


def _reserve_space(path: Path) -> None:
    """Allocate the blocks of a freshly created memory-mapped file now.

    open_memmap leaves a sparse file: on a full disk, the first write into a page without a block kills
    the process with SIGBUS instead of raising an error. Reserving the blocks here turns that into an
    ENOSPC OSError before any data is written. Systems without posix_fallocate (macOS) keep the sparse file.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    size = path.stat().st_size
    if size == 0:
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return  # a filesystem without allocation (some network filesystems): sparse as before
        raise
    finally:
        os.close(descriptor)


def update_normalization(directory: str | Path) -> Normalization:
    """Compute the training statistics of an existing dataset and store them in its `meta.json`."""
    dataset = open_dataset(directory)
    statistics = compute_normalization(dataset.split("train").segments)
    write_meta(dataset.directory, dataset.meta.model_copy(update={"normalization": statistics}))
    return statistics
