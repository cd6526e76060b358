import errno
import os
import pickle

import numpy as np
import pytest

from tests.data.conftest import SEGMENT_LENGTH, write_small_dataset
from tsmoe.cli.main import main
from tsmoe.data import store
from tsmoe.data.meta import read_meta
from tsmoe.data.store import DatasetWriter, open_dataset, update_normalization


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
        _ = open_dataset(small_dataset).normalization
    update_normalization(small_dataset)
    assert open_dataset(small_dataset).normalization == expected


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate on this system")
def test_the_writer_reserves_the_blocks_of_its_arrays_so_a_full_disk_is_an_error_not_a_sigbus(tmp_path):
    writer = DatasetWriter(tmp_path / "dataset", 4096, ["a", "b"], sampling_rate_hz=1.0)
    segments = writer.add_split("train", 64).segments
    allocated = os.stat(writer.partial / "train.npy").st_blocks * 512
    assert allocated >= segments.nbytes  # not a sparse file: every page has its block already


@pytest.mark.parametrize("step", ["posix_fallocate", "write_meta"])
def test_a_full_disk_while_writing_a_dataset_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, step):
    if step == "posix_fallocate":
        if not hasattr(os, "posix_fallocate"):
            pytest.skip("no posix_fallocate on this system")
        monkeypatch.setattr(store.os, "posix_fallocate", _disk_full)
    else:
        monkeypatch.setattr(store, "write_meta", _disk_full)
    out = tmp_path / "synthetic"
    arguments = ["data", "synth", str(out), "--train-segments", "4", "--val-segments", "2", "--test-segments", "0"]
    assert main([*arguments, "--segment-length", "64"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(f"tsmoe data: error: {out}: no space left on the device while ")
    assert ("reserving space for train.npy" if step == "posix_fallocate" else "writing meta.json") in error
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # neither OUT nor OUT.partial
