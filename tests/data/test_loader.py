import numpy as np
import pytest
import torch

from tsmoe.data.config import DataConfig
from tsmoe.data.curriculum import CropStage
from tsmoe.data.loader import CropBatchSampler, CroppedSegments, build_train_loader
from tsmoe.data.meta import NORMAL_FILE_RUN
from tsmoe.data.store import DatasetWriter, open_dataset

SCHEDULE = [CropStage(until=0.5, length=8), CropStage(until=1.0, length=1.0)]


def sampler_for(rank=0, world_size=1, num_segments=12, **overrides):
    config = DataConfig(batch_size=2, crop_schedule=SCHEDULE, **overrides)
    return CropBatchSampler(num_segments, 32, config, epochs=2, rank=rank, world_size=world_size)


def test_batches_have_one_crop_length_that_follows_the_curriculum():
    sampler = sampler_for()
    lengths = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len({length for _, _, length in batch}) == 1
            assert all(0 <= start <= 32 - length for _, start, length in batch)
            lengths.append(batch[0][2])
    assert lengths == [8] * 6 + [32] * 6


def test_ranks_see_disjoint_segments_and_the_same_crop_lengths():
    seen, lengths = [], []
    for rank in range(2):
        sampler = sampler_for(rank=rank, world_size=2)
        sampler.set_epoch(0)
        batches = list(sampler)
        seen.append({index for batch in batches for index, _, _ in batch})
        lengths.append([batch[0][2] for batch in batches])
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12
    assert lengths[0] == lengths[1]


def test_epochs_reshuffle_and_a_resumed_epoch_replays_the_same_batches():
    sampler = sampler_for()
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0, start_batch=4)
    assert list(sampler) == first[4:]


def test_a_short_split_is_passed_over_until_an_epoch_has_its_minimum_of_batches():
    sampler = sampler_for(num_segments=5, min_batches_per_epoch=7)  # one pass: 2 batches of 2
    assert sampler.passes == 4 and len(sampler) == 7
    sampler.set_epoch(0)
    epoch = list(sampler)
    assert len(epoch) == 7
    members = [index for batch in epoch for index, _, _ in batch]
    # Each pass is a permutation of all 5 segments (only the epoch's last batch is dropped), shuffled anew.
    first_pass, second_pass = members[:5], members[5:10]
    assert sorted(first_pass) == sorted(second_pass) == list(range(5)) and first_pass != second_pass
    sampler.set_epoch(0, start_batch=3)
    assert list(sampler) == epoch[3:]
    assert len(sampler_for(num_segments=12, min_batches_per_epoch=4)) == 6  # a long split keeps its epoch


def test_too_few_segments_for_one_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="no full batch of 2 on each of 4 worker"):
        sampler_for(num_segments=7, world_size=4)
    with pytest.raises(ValueError, match="no full batch"):
        sampler_for(num_segments=7, world_size=4, min_batches_per_epoch=10)


def test_crops_are_normalised_slices_of_the_stored_segments(small_dataset):
    dataset = open_dataset(small_dataset)
    split = dataset.split("train")
    batch = CroppedSegments(split, dataset.normalization).__getitems__([(5, 3, 8), (1, 0, 8), (5, 10, 8)])
    crops = batch.segments
    # This training split records no run ids: every crop is a normal file's.
    assert batch.runs.tolist() == [NORMAL_FILE_RUN] * 3
    mean = np.asarray(dataset.normalization.mean)[:, None]
    std = np.asarray(dataset.normalization.std)[:, None]
    assert crops.shape == (3, 2, 8) and crops.dtype == torch.float32
    for crop, (index, start) in zip(crops, [(5, 3), (1, 0), (5, 10)], strict=True):
        expected = (split.segments[index, :, start : start + 8] - mean) / std
        np.testing.assert_allclose(crop.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_each_crop_carries_the_run_id_of_its_segment(tmp_path):
    writer = DatasetWriter(tmp_path / "data", 16, ["x"], sampling_rate_hz=1.0)
    arrays = writer.add_split("train", 4, with_runs=True)
    arrays.segments[:] = np.random.default_rng(0).normal(size=(4, 1, 16))
    arrays.runs[:] = [3, NORMAL_FILE_RUN, 0, 3]
    writer.add_split("val", 1, label_level="segment")
    writer.finish()
    dataset = open_dataset(tmp_path / "data")
    batch = CroppedSegments(dataset.split("train"), dataset.normalization).__getitems__(
        [(2, 0, 8), (1, 4, 8), (3, 8, 8)]
    )
    assert batch.runs.dtype == torch.int64 and batch.runs.tolist() == [0, NORMAL_FILE_RUN, 3]


def test_loader_workers_follow_the_curriculum_across_epochs(small_dataset):
    dataset = open_dataset(small_dataset)
    config = DataConfig(path=small_dataset, batch_size=4, crop_schedule=SCHEDULE, num_workers=1, prefetch_factor=2)
    loader = build_train_loader(dataset.split("train"), dataset.normalization, config, epochs=2)
    shapes = []
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        shapes += [tuple(batch.segments.shape) for batch in loader]
    assert shapes == [(4, 2, 8)] * 3 + [(4, 2, 32)] * 3
    assert loader.persistent_workers
