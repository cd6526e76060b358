"""Fixed-shape training batches: random crops of normalised segments, sharded across DDP ranks.

The batch sampler, not the dataset, decides each batch's crop length and crop starts. Samplers run in
the training process and only their output travels to the loader workers, so the curriculum can change
the crop length mid-training while the workers stay alive (`persistent_workers`): an attribute changed on
the dataset would never reach a persistent worker's copy. Every batch has one crop length, so batches
need no padding, and every rank uses the same length at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tsmoe.data.config import DataConfig
from tsmoe.data.curriculum import crop_length_at
from tsmoe.data.meta import NORMAL_FILE_RUN, Normalization
from tsmoe.data.store import SegmentSplit

# (segment index, crop start, crop length)
Crop = tuple[int, int, int]


class CropBatch(NamedTuple):
    """A training batch: normalised crops [B, C, length] and the run id [B] of each crop's segment (whose
    normal data it is; NORMAL_FILE_RUN where the split records none), which a per-run view reads."""

    segments: torch.Tensor
    runs: torch.Tensor


class CroppedSegments(Dataset):
    """Map-style dataset of normalised crops [C, length], addressed by `Crop` triples."""

    def __init__(self, split: SegmentSplit, normalization: Normalization):
        self.split = split
        self.mean = np.asarray(normalization.mean, dtype=np.float32)[:, None]
        self.std = np.asarray(normalization.std, dtype=np.float32)[:, None]
        runs = split.runs
        self.runs = np.full(len(split), NORMAL_FILE_RUN, dtype=np.int64) if runs is None else runs

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, crop: Crop) -> torch.Tensor:
        return self.__getitems__([crop]).segments[0]

    def __getitems__(self, crops: Sequence[Crop]) -> CropBatch:
        """A whole batch in one read: sorted rows of the memory map are much cheaper than one read each."""
        indices = np.fromiter((crop[0] for crop in crops), dtype=np.int64, count=len(crops))
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(crops), *self.split.segments.shape[1:]), dtype=np.float32)
        rows[order] = self.split.segments[indices[order]]
        length = crops[0][2]
        batch = np.empty((len(crops), rows.shape[1], length), dtype=np.float32)
        for row, (_, start, crop_length) in enumerate(crops):
            if crop_length != length:
                raise ValueError("every crop of a batch must have the same length")
            batch[row] = rows[row, :, start : start + length]
        batch -= self.mean
        batch /= self.std
        return CropBatch(torch.from_numpy(batch), torch.from_numpy(self.runs[indices]))


def _collate_batch(batch: Any) -> CropBatch:
    # __getitems__ already returns the stacked batch (torch types a batch as the list it would otherwise be).
    return batch


class CropBatchSampler(Sampler[list[Crop]]):
    """Batches of crops for one rank: shuffled, sharded, same-length crops per batch, curriculum-aware.

    The crop length of a batch follows `crop_length_at(schedule, progress)`, where progress counts
    batches over `epochs` epochs. Call `set_epoch` before each epoch (as with DistributedSampler);
    `start_batch` skips the batches a resumed run has already trained on. An epoch shorter than
    `config.min_batches_per_epoch` batches passes over the shard several times, each pass shuffled anew.
    """

    def __init__(
        self,
        num_segments: int,
        segment_length: int,
        config: DataConfig,
        epochs: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.segment_length = segment_length
        self.config = config
        self.epochs = epochs
        self.rank = rank
        # DistributedSampler handles the shuffling and the even split across ranks; batching and crops are ours.
        # It reads only the length of its dataset, so the segment indices stand in for the segments.
        self.indices: DistributedSampler[int] = DistributedSampler(
            cast(Dataset[int], range(num_segments)),
            num_replicas=world_size,
            rank=rank,
            shuffle=config.shuffle,
            seed=config.seed,
            drop_last=True,
        )
        self.epoch = 0
        self.start_batch = 0
        one_pass = len(self.indices) // config.batch_size
        if one_pass == 0:
            raise ValueError(
                f"{num_segments} training segments give no full batch of {config.batch_size} on each of "
                f"{world_size} worker(s); lower data.batch_size or add segments"
            )
        self.passes = max(1, math.ceil(config.min_batches_per_epoch / one_pass))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's shuffle and crops; skip `start_batch` batches when resuming mid-epoch."""
        self.epoch = epoch
        self.start_batch = start_batch
        self.indices.set_epoch(epoch)

    def __len__(self) -> int:
        # Fixed shapes: an incomplete last batch is dropped (once per epoch, not once per pass).
        return max(len(self.indices) // self.config.batch_size, self.config.min_batches_per_epoch)

    def _epoch_indices(self) -> list[int]:
        if self.passes == 1:
            return list(self.indices)
        # Each pass is its own DistributedSampler epoch, so passes differ and a resumed epoch replays them.
        indices: list[int] = []
        for one_pass in range(self.passes):
            self.indices.set_epoch(self.epoch * self.passes + one_pass)
            indices.extend(self.indices)
        self.indices.set_epoch(self.epoch)
        return indices

    def crop_length(self, epoch: int, batch: int) -> int:
        """The crop length of batch `batch` of epoch `epoch`."""
        progress = (epoch + batch / len(self)) / self.epochs
        return crop_length_at(self.config.crop_schedule, self.segment_length, progress)

    def __iter__(self) -> Iterator[list[Crop]]:
        indices = self._epoch_indices()
        # Crop starts are drawn from a generator keyed by (seed, epoch, rank): the same on a resumed run.
        generator = np.random.default_rng([self.config.seed, self.epoch, self.rank])
        batch_size = self.config.batch_size
        for batch in range(len(self)):
            length = self.crop_length(self.epoch, batch)
            starts = generator.integers(0, self.segment_length - length + 1, size=batch_size)
            if batch < self.start_batch:
                continue
            members = indices[batch * batch_size : (batch + 1) * batch_size]
            yield [(int(index), int(start), length) for index, start in zip(members, starts, strict=True)]


def build_train_loader(
    split: SegmentSplit,
    normalization: Normalization,
    config: DataConfig,
    epochs: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The training DataLoader: fixed-shape `CropBatch`es ([B, C, crop] crops and their run ids), worker
    processes kept across epochs."""
    sampler = CropBatchSampler(len(split), split.meta.segment_length, config, epochs, rank, world_size)
    workers = config.num_workers
    return DataLoader(
        CroppedSegments(split, normalization),
        batch_sampler=sampler,
        collate_fn=_collate_batch,
        num_workers=workers,
        pin_memory=pin_memory if config.pin_memory is None else config.pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=config.prefetch_factor if workers > 0 else None,
    )


def normalized_segments(split: SegmentSplit, normalization: Normalization, start: int, stop: int) -> np.ndarray:
    """Full segments [start:stop] normalised with the training statistics (for scoring)."""
    return _normalized(split.segments[start:stop], normalization)


def normalized_rows(split: SegmentSplit, normalization: Normalization, indices: np.ndarray) -> np.ndarray:
    """Full segments at `indices` (in that order) normalised with the training statistics."""
    return _normalized(split.segments[indices], normalization)


def _normalized(segments: np.ndarray, normalization: Normalization) -> np.ndarray:
    mean = np.asarray(normalization.mean, dtype=np.float32)[:, None]
    std = np.asarray(normalization.std, dtype=np.float32)[:, None]
    return (np.asarray(segments, dtype=np.float32) - mean) / std
