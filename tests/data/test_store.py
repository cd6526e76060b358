import pickle

import numpy as np
import pytest

from tsmoe.data.meta import read_meta
from tsmoe.data.store import DatasetWriter, open_dataset, update_normalization
from tests.data.conftest import SEGMENT_LENGTH, write_small_dataset


def test_normalization_comes_from_the_training_split_only(small_dataset):
    dataset = open_dataset(small_dataset)
    train = np.asarray(dataset.split("train").segments, dtype=np.float64)
    np.testing.assert_allclose(dataset.normalization.mean, train.mean(axis=(0, 2)), rtol=1e-10)
    np.testing.assert_allclose(dataset.normalization.std, train.std(axis=(0, 2)), rtol=1e-10)
    val_mean = np.asarray(dataset.split("val").segments).mean(axis=(0, 2))
    assert not np.allclose(dataset.normalization.mean, val_mean)


def test_splits_are_memory_maps_and_pickle_without_their_data(small_dataset):
    split = open_dataset(small_dataset).split("train")
    assert isinstance(split.segments, np.memmap)
    restored = pickle.loads(pickle.dumps(split))
    assert len(pickle.dumps(split)) < split.segments.nbytes
    np.testing.assert_array_equal(restored.segments, split.segments)


def test_labels_runs_and_starts_are_read_back(small_dataset):
    val = open_dataset(small_dataset).split("val")
    assert val.label_level == "point"
    np.testing.assert_array_equal(val.segment_labels(), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(val.runs, [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(val.starts, [0, 0, 8, 8, 16, 16])


def test_writer_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "precious.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        write_small_dataset(tmp_path / "dataset")
    assert (tmp_path / "dataset" / "precious.txt").read_text() == "user data"


def test_an_unfinished_write_leaves_no_dataset_behind(tmp_path):
    writer = DatasetWriter(tmp_path / "dataset", SEGMENT_LENGTH, ["a"], sampling_rate_hz=1.0)
    writer.add_split("train", 2)
    assert not (tmp_path / "dataset").exists()
    del writer


def test_raw_binary_segments_are_read_with_the_shape_from_meta(small_dataset):
    segments = np.load(small_dataset / "train.npy")
    segments.tofile(small_dataset / "train.bin")
    meta = read_meta(small_dataset)
    meta.splits["train"].segments = "train.bin"
    (small_dataset / "meta.json").write_text(meta.model_dump_json())
    (small_dataset / "train.npy").unlink()
    np.testing.assert_array_equal(open_dataset(small_dataset).split("train").segments, segments)


def test_stats_are_computed_for_a_dataset_without_them(small_dataset):
    expected = open_dataset(small_dataset).normalization
    meta = read_meta(small_dataset)
    (small_dataset / "meta.json").write_text(meta.model_copy(update={"normalization": None}).model_dump_json())
    with pytest.raises(ValueError, match="tsmoe data stats"):
        open_dataset(small_dataset).normalization
    update_normalization(small_dataset)
    assert open_dataset(small_dataset).normalization == expected
