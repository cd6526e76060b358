import json

import numpy as np
import pytest

from tsmoe.data.check import DatasetError, check_dataset
from tsmoe.data.curriculum import CropStage


def rewrite(path, update):
    array = np.load(path)
    array = update(array)
    np.save(path, array)


def problems_of(directory, **options):
    with pytest.raises(DatasetError) as raised:
        check_dataset(directory, **options)
    return raised.value.problems


def test_a_good_dataset_passes_with_a_summary(small_dataset):
    summary = check_dataset(small_dataset, crop_schedule="half_then_full")
    assert summary.splits["train"].segments == 12
    val = summary.splits["val"]
    assert (val.segments, val.label_level, val.anomalous_segments, val.runs) == (6, "point", 3, 2)
    assert val.anomalous_points == pytest.approx(3 * 4 / (6 * 32))
    assert "3 anomalous" in "\n".join(summary.lines())


def test_nan_is_reported_with_its_first_index(small_dataset):
    def poison(array):
        array[7, 1, 20] = np.nan
        array[9, 0, 3] = np.inf
        return array

    rewrite(small_dataset / "train.npy", poison)
    [problem] = problems_of(small_dataset)
    assert "train.npy: field values" in problem and "[7, 1, 20]" in problem and "'current_b'" in problem


def test_wrong_dtype_and_shape_name_the_field(small_dataset):
    rewrite(small_dataset / "train.npy", lambda a: a.astype(np.float64))
    rewrite(small_dataset / "val.npy", lambda a: a[:, :1])
    problems = problems_of(small_dataset)
    assert any("train.npy: field dtype: expected float32, found float64" in p for p in problems)
    assert any("val.npy: field shape: expected [N, 2, 32]" in p and "[6, 1, 32]" in p for p in problems)


def test_truncated_binary_names_the_incomplete_segment(small_dataset):
    segments = np.load(small_dataset / "train.npy")
    segments.tofile(small_dataset / "train.bin")
    with open(small_dataset / "train.bin", "r+b") as handle:
        handle.truncate(segments.nbytes - 10)
    meta = json.loads((small_dataset / "meta.json").read_text())
    meta["splits"]["train"]["segments"] = "train.bin"
    (small_dataset / "meta.json").write_text(json.dumps(meta))
    [problem] = problems_of(small_dataset)
    assert "train.bin: truncated or misaligned binary" in problem and "segment index 11 is incomplete" in problem


def test_binary_count_must_match_the_file(small_dataset):
    np.load(small_dataset / "train.npy").tofile(small_dataset / "train.bin")
    meta = json.loads((small_dataset / "meta.json").read_text())
    meta["splits"]["train"].update(segments="train.bin", count=13)
    (small_dataset / "meta.json").write_text(json.dumps(meta))
    [problem] = problems_of(small_dataset)
    assert "field count" in problem and "13" in problem and "12" in problem


def test_labels_must_match_their_segments(small_dataset):
    rewrite(small_dataset / "val_labels.npy", lambda a: a[:5])
    [problem] = problems_of(small_dataset)
    assert "val_labels.npy: field shape" in problem and "[6]" in problem and "[5, 32]" in problem


def test_labels_must_be_zero_or_one(small_dataset):
    def corrupt(array):
        array[4, 2] = 3
        return array

    rewrite(small_dataset / "val_labels.npy", corrupt)
    [problem] = problems_of(small_dataset)
    assert "labels must be 0 or 1, found 3 (first bad index [4, 2])" in problem


def test_single_class_labels_cannot_give_an_auroc(small_dataset):
    rewrite(small_dataset / "val_labels.npy", np.zeros_like)
    [problem] = problems_of(small_dataset)
    assert "every label is normal" in problem


def test_missing_files_are_all_listed(small_dataset):
    (small_dataset / "val.npy").unlink()
    (small_dataset / "val_runs.npy").unlink()
    problems = problems_of(small_dataset)
    assert len(problems) == 1 and "val.npy: missing" in problems[0] and "splits.val.segments" in problems[0]
    (small_dataset / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta\.json: missing"):
        check_dataset(small_dataset)


def test_crops_longer_than_the_segments_are_rejected(small_dataset):
    [problem] = problems_of(small_dataset, crop_schedule=[CropStage(until=1.0, length=64)])
    assert "field segment_length: 32 points" in problem and "crops of 64" in problem


def test_invalid_meta_names_the_field(small_dataset):
    meta = json.loads((small_dataset / "meta.json").read_text())
    meta["segment_length"] = "long"
    del meta["splits"]["val"]["labels"]
    (small_dataset / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta.json: field segment_length"):
        check_dataset(small_dataset)


def test_a_batch_larger_than_the_training_split_fails(small_dataset):
    check_dataset(small_dataset, batch_size=12)  # 12 training segments fill one batch
    with pytest.raises(
        DatasetError,
        match=r"train.npy: field data.batch_size: the training split holds 12 segments, "
        r"fewer than one batch of 16",
    ):
        check_dataset(small_dataset, batch_size=16)


def test_a_normal_split_may_mark_segments_from_no_run_but_a_labelled_split_may_not(small_dataset):
    meta = json.loads((small_dataset / "meta.json").read_text())
    meta["splits"]["train"]["runs"] = "train_runs.npy"
    (small_dataset / "meta.json").write_text(json.dumps(meta))
    # Training windows from a normal file (-1) beside windows cut from run 1's normal rows.
    np.save(small_dataset / "train_runs.npy", np.array([-1] * 6 + [1] * 6, dtype=np.int64))
    assert check_dataset(small_dataset).splits["train"].runs == 1
    np.save(small_dataset / "train_runs.npy", np.array([-2] * 12, dtype=np.int64))
    [problem] = problems_of(small_dataset)
    assert "train_runs.npy: field values: must be at least -1, found -2" in problem
    np.save(small_dataset / "train_runs.npy", np.zeros(12, dtype=np.int64))
    rewrite(small_dataset / "val_runs.npy", lambda runs: np.full_like(runs, -1))
    [problem] = problems_of(small_dataset)
    assert "val_runs.npy: field values: must not be negative, found -1" in problem
