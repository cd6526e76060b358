"""CSV runs become windows: normal parts train, the rest is labeled, each run normalised by its normal rows."""

from __future__ import annotations

import numpy as np
import pytest

from tsmoe.data.from_csv import CsvLayout, csv_to_dataset, window_starts
from tsmoe.data.store import open_dataset

LAYOUT = CsvLayout(separator=";", time_column="time", label_column="anomaly", ignore_columns=["changepoint"])


def _write_run(path, values, labels=None):
    header = "time;a;b" + (";anomaly;changepoint" if labels is not None else "")
    lines = [header]
    for row, (a, b) in enumerate(values):
        line = f"2020-01-01 00:00:{row:02d};{a};{b}"
        if labels is not None:
            line += f";{labels[row]}.0;0.0"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_window_starts_cover_the_end():
    assert window_starts(10, 4, 3, align_end=False).tolist() == [0, 3, 6]
    assert window_starts(11, 4, 3, align_end=True).tolist() == [0, 3, 6, 7]
    assert window_starts(3, 4, 1, align_end=True).tolist() == []


def test_runs_are_windowed_normalised_and_labeled(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros(50, dtype=int)
    labels[30:40] = 1
    # The run sits at offset 100, scale 10: its normal prefix (20 rows) normalises it.
    values = 100 + 10 * rng.normal(size=(50, 2))
    run = _write_run(tmp_path / "run.csv", values, labels)
    normal = _write_run(tmp_path / "normal.csv", rng.normal(size=(12, 2)))
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=[run],
        layout=LAYOUT,
        segment_length=8,
        stride=4,
        normal_prefix=20,
    )
    dataset = open_dataset(tmp_path / "data")
    assert dataset.meta.channels == ["a", "b"] and dataset.meta.run_names == ["run.csv"]
    # Train: normal.csv windows at 0, 4 and the prefix's at 0, 4, 8, 12.
    train = dataset.split("train").segments
    assert train.shape == (6, 2, 8)
    # Which run each training window came from: normal.csv's none, the prefix's the run's own id.
    assert dataset.split("train").runs.tolist() == [-1, -1, 0, 0, 0, 0]
    prefix = values[:20].T
    expected = (prefix - prefix.mean(axis=1, keepdims=True)) / prefix.std(axis=1, keepdims=True)
    np.testing.assert_allclose(train[2], expected[:, 0:8], rtol=1e-5)
    val = dataset.split("val")
    # 30 evaluation rows: windows at 0, 4, ..., 20 and one aligned to the end at 22.
    assert val.starts.tolist() == [0, 4, 8, 12, 16, 20, 22] and val.runs.tolist() == [0] * 7
    assert val.labels[2].tolist() == labels[28:36].tolist()
    run_values = (values.T - prefix.mean(axis=1, keepdims=True)) / prefix.std(axis=1, keepdims=True)
    np.testing.assert_allclose(val.segments[6], run_values[:, 42:50], rtol=1e-5)


def test_an_anomaly_inside_the_prefix_shortens_it(tmp_path, capsys):
    labels = np.zeros(40, dtype=int)
    labels[15:18] = 1
    run = _write_run(tmp_path / "run.csv", np.random.default_rng(1).normal(size=(40, 2)), labels)
    meta = csv_to_dataset(
        tmp_path / "data", train_files=[], val_files=[run], layout=LAYOUT, segment_length=8, stride=8, normal_prefix=20
    )
    assert meta.provenance["normal_rows"] == {"run.csv": 15}
    assert "first anomaly is at row 15" in capsys.readouterr().err


def test_errors_name_the_file_column_and_line_and_write_nothing(tmp_path):
    labels = np.zeros(30, dtype=int)
    values = np.random.default_rng(2).normal(size=(30, 2))
    good = _write_run(tmp_path / "good.csv", values, labels)
    bad = _write_run(tmp_path / "bad.csv", values, labels)
    text = bad.read_text().splitlines()
    text[5] = text[5].replace(text[5].split(";")[2], "oops")
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "data"
    arguments = dict(train_files=[], layout=LAYOUT, segment_length=8, stride=4, normal_prefix=10)
    with pytest.raises(ValueError, match=r"bad.csv: column 'b', line 6: 'oops' is not a finite number"):
        csv_to_dataset(out, val_files=[good, bad], **arguments)
    with pytest.raises(ValueError, match=r"column 'pressure' not found"):
        csv_to_dataset(
            out, val_files=[good], **{**arguments, "layout": CsvLayout(separator=";", channels=["pressure"])}
        )
    with pytest.raises(ValueError, match="a labeled \\(validation or test\\) run needs the label column"):
        csv_to_dataset(out, val_files=[_write_run(tmp_path / "plain.csv", values)], **arguments)
    assert not out.exists() and not (tmp_path / "data.partial").exists()


def _labeled_runs(tmp_path, count, rows=40, anomalous=(25, 30), seed=3, offsets=None):
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        labels = np.zeros(rows, dtype=int)
        labels[anomalous[0] : anomalous[1]] = 1
        offset = 0 if offsets is None else offsets[index]
        paths.append(_write_run(tmp_path / f"run{index}.csv", offset + rng.normal(size=(rows, 2)), labels))
    return paths


def test_normalize_train_uses_training_rows_for_every_file(tmp_path):
    rng = np.random.default_rng(4)
    normal_values = 50 + 5 * rng.normal(size=(24, 2))
    normal = _write_run(tmp_path / "normal.csv", normal_values)
    (run,) = _labeled_runs(tmp_path, 1, offsets=[60])
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=[run],
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normalize="train",
        holdout_fraction=0.0,
    )
    dataset = open_dataset(tmp_path / "data")
    mean, std = normal_values.mean(axis=0), normal_values.std(axis=0)
    run_values = np.loadtxt(run, delimiter=";", skiprows=1, usecols=(1, 2))
    # No prefix: the whole run is evaluated, offset 10 above training, not re-centred on itself.
    np.testing.assert_allclose(dataset.split("val").segments[0], ((run_values[:8] - mean) / std).T, rtol=1e-5)
    assert dataset.meta.provenance["normalize"] == "train"
    # Every training window is from the normal file: the split records no runs, as before runs were recorded.
    assert dataset.split("train").runs is None


def test_a_channel_constant_in_training_is_centred_not_divided(tmp_path, capsys):
    values = np.column_stack([np.random.default_rng(5).normal(size=24), np.full(24, 3.0)])
    normal = _write_run(tmp_path / "normal.csv", values)
    run_values = np.column_stack([np.zeros(40), np.full(40, 5.0)])
    labels = np.zeros(40, dtype=int)
    labels[20:] = 1
    run = _write_run(tmp_path / "run.csv", run_values, labels)
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=[run],
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normalize="train",
    )
    segments = open_dataset(tmp_path / "data").split("val").segments
    assert np.isfinite(segments).all()
    np.testing.assert_allclose(segments[0, 1], 2.0)  # 5 - 3, std kept at 1
    assert "channel(s) b are constant" in capsys.readouterr().err


def test_val_fraction_takes_whole_runs_seeded(tmp_path):
    paths = _labeled_runs(tmp_path, 4)
    arguments = dict(
        train_files=[],
        test_files=paths,
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normal_prefix=20,
        val_fraction=0.5,
        seed=1,
    )
    first = csv_to_dataset(tmp_path / "a", **arguments)
    second = csv_to_dataset(tmp_path / "b", **arguments)
    assert first.provenance["splits"] == second.provenance["splits"]
    assert sorted(first.provenance["splits"].values()) == ["test", "test", "val", "val"]
    dataset = open_dataset(tmp_path / "a")
    val_runs = set(dataset.split("val").runs.tolist())
    test_runs = set(dataset.split("test").runs.tolist())
    assert len(val_runs) == 2 and len(test_runs) == 2 and not val_runs & test_runs


def test_val_fraction_errors(tmp_path):
    paths = _labeled_runs(tmp_path, 2)
    arguments = dict(train_files=[], layout=LAYOUT, segment_length=8, stride=8, normal_prefix=20)
    with pytest.raises(ValueError, match="at least 2 labeled runs"):
        csv_to_dataset(tmp_path / "a", test_files=paths[:1], val_fraction=0.5, **arguments)
    with pytest.raises(ValueError, match="either validation files or a validation share"):
        csv_to_dataset(tmp_path / "b", val_files=paths[:1], test_files=paths[1:], val_fraction=0.5, **arguments)
    with pytest.raises(ValueError, match="or a val_fraction"):
        csv_to_dataset(tmp_path / "c", test_files=paths, **arguments)


def test_holdout_is_the_end_of_long_normal_parts(tmp_path):
    values = np.random.default_rng(6).normal(size=(40, 2))
    normal = _write_run(tmp_path / "normal.csv", values)
    (run,) = _labeled_runs(tmp_path, 1)
    meta = csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=[run],
        layout=LAYOUT,
        segment_length=8,
        stride=4,
        normal_prefix=20,
        holdout_fraction=0.25,
    )
    dataset = open_dataset(tmp_path / "data")
    # normal.csv: 10 rows held out (>= 8, and 30 left); the 20-row prefix spares only 5, so it all trains.
    assert "holdout" in meta.splits and len(dataset.split("holdout")) == 1
    train_rows = values[:30].T
    normalized = (values.T - train_rows.mean(axis=1, keepdims=True)) / train_rows.std(axis=1, keepdims=True)
    np.testing.assert_allclose(dataset.split("holdout").segments[0], normalized[:, 30:38], rtol=1e-5)
    assert len(dataset.split("train")) == 6 + 4  # windows at 0..20 of 30 rows, 0..12 of the prefix


def test_file_level_labels_make_one_sample_per_file(tmp_path):
    rng = np.random.default_rng(7)
    normal = _write_run(tmp_path / "normal.csv", rng.normal(size=(30, 2)))
    files = [
        _write_run(tmp_path / f"file{index}.csv", rng.normal(size=(20, 2)), np.full(20, label))
        for index, label in enumerate([0, 1, 0, 1])
    ]
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        test_files=files,
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normalize="train",
        label_per_file=True,
        val_fraction=0.5,
    )
    dataset = open_dataset(tmp_path / "data")
    val = dataset.split("val")
    assert val.label_level == "segment"
    # Stratified: one file of each class validates; every window carries its file's label.
    by_run = {run: set(val.labels[val.runs == run].tolist()) for run in np.unique(val.runs)}
    assert sorted(label for labels in by_run.values() for label in labels) == [0, 1]
    assert all(len(labels) == 1 for labels in by_run.values())
    assert val.starts[val.runs == val.runs[0]].tolist() == [0, 8, 12]


def test_file_level_label_errors(tmp_path):
    rng = np.random.default_rng(8)
    normal = _write_run(tmp_path / "normal.csv", rng.normal(size=(30, 2)))
    mixed = np.zeros(20, dtype=int)
    mixed[10:] = 1
    bad = _write_run(tmp_path / "mixed.csv", rng.normal(size=(20, 2)), mixed)
    arguments = dict(train_files=[normal], layout=LAYOUT, segment_length=8, stride=8, label_per_file=True)
    with pytest.raises(ValueError, match=r"mixed.csv: file-level labels must be constant in a file, but line 12"):
        csv_to_dataset(tmp_path / "a", val_files=[bad], normalize="train", **arguments)
    good = _write_run(tmp_path / "good.csv", rng.normal(size=(20, 2)), np.ones(20, dtype=int))
    with pytest.raises(ValueError, match="normalize 'train'"):
        csv_to_dataset(tmp_path / "b", val_files=[good], normalize="run", **arguments)
    unlabeled = _write_run(tmp_path / "plain.csv", rng.normal(size=(20, 2)))
    with pytest.raises(ValueError, match=r"plain.csv: a labeled \(validation or test\) run needs the label column"):
        csv_to_dataset(tmp_path / "c", val_files=[unlabeled], normalize="train", **arguments)


def test_a_run_with_one_class_is_noted(tmp_path, capsys):
    (run,) = _labeled_runs(tmp_path, 1, anomalous=(0, 0))
    csv_to_dataset(
        tmp_path / "data", train_files=[], val_files=[run], layout=LAYOUT, segment_length=8, stride=8, normal_prefix=20
    )
    assert "every evaluated row is normal" in capsys.readouterr().err


def test_a_normal_file_named_as_one_labelled_file_is_that_runs_normal_data(tmp_path, capsys):
    # Server-metric layout: each machine's normal recording in train/, its labelled one under the same name in test/.
    rng = np.random.default_rng(5)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    normal = [_write_run(tmp_path / "train" / name, rng.normal(size=(16, 2))) for name in ("m1.csv", "m2.csv", "x.csv")]
    labels = np.zeros(16, dtype=int)
    labels[10:12] = 1
    labelled = [_write_run(tmp_path / "test" / name, rng.normal(size=(16, 2)), labels) for name in ("m2.csv", "m1.csv")]
    csv_to_dataset(
        tmp_path / "data",
        train_files=normal,
        val_files=labelled,
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normalize="train",
        holdout_fraction=0.0,
    )
    dataset = open_dataset(tmp_path / "data")
    assert dataset.meta.run_names == ["m2.csv", "m1.csv"]
    # Two windows per file: m1's are run 1's normal data, m2's run 0's, x.csv is nobody's.
    assert dataset.split("train").runs.tolist() == [1, 1, 0, 0, -1, -1]
    assert dataset.meta.provenance["normal_files"] == {"m2.csv": "m2.csv", "m1.csv": "m1.csv"}
    assert "note: 2 of 2 labelled files have a normal file of the same name" in capsys.readouterr().err


def test_a_constant_channel_of_a_paired_normal_file_is_noted_once(tmp_path, capsys):
    rng = np.random.default_rng(7)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    normal = _write_run(tmp_path / "train" / "m1.csv", np.column_stack([rng.normal(size=16), np.full(16, 3.0)]))
    labels = np.zeros(16, dtype=int)
    labels[10:12] = 1
    labelled = _write_run(tmp_path / "test" / "m1.csv", rng.normal(size=(16, 2)), labels)
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=[labelled],
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        holdout_fraction=0.0,
    )
    # The normal file normalises itself and its labelled pair: one note, not one per use.
    assert capsys.readouterr().err.count("channel(s) b are constant") == 1


def test_a_normal_file_named_as_several_labelled_files_is_nobodys(tmp_path):
    rng = np.random.default_rng(6)
    labels = np.zeros(16, dtype=int)
    labels[10:12] = 1
    for folder in ("train", "a", "b"):
        (tmp_path / folder).mkdir()
    normal = _write_run(tmp_path / "train" / "m1.csv", rng.normal(size=(16, 2)))
    labelled = [_write_run(tmp_path / folder / "m1.csv", rng.normal(size=(16, 2)), labels) for folder in ("a", "b")]
    csv_to_dataset(
        tmp_path / "data",
        train_files=[normal],
        val_files=labelled,
        layout=LAYOUT,
        segment_length=8,
        stride=8,
        normalize="train",
        holdout_fraction=0.0,
    )
    assert open_dataset(tmp_path / "data").split("train").runs is None


def test_under_normalize_run_a_labelled_file_without_a_prefix_is_normalised_by_its_namesake(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    # Two machines at their own operating points; each labelled recording starts with its anomaly, no prefix.
    normal = {
        name: offset + scale * rng.normal(size=(24, 2))
        for name, offset, scale in (("m1.csv", 100, 10), ("m2.csv", -5, 2))
    }
    train_files = [_write_run(tmp_path / "train" / name, values) for name, values in normal.items()]
    labels = np.zeros(16, dtype=int)
    labels[:4] = 1
    recorded = {name: values[:16] + 1.0 for name, values in normal.items()}
    test_files = [_write_run(tmp_path / "test" / name, values, labels) for name, values in recorded.items()]
    arguments = dict(layout=LAYOUT, segment_length=8, stride=8, holdout_fraction=0.0)
    csv_to_dataset(tmp_path / "data", train_files=train_files, val_files=test_files, **arguments)
    val = open_dataset(tmp_path / "data").split("val")
    for run_id, name in enumerate(recorded):
        mean, std = normal[name].mean(axis=0), normal[name].std(axis=0)
        np.testing.assert_allclose(val.segments[2 * run_id], ((recorded[name][:8] - mean) / std).T, rtol=1e-5)
    # Without its namesake a file without a prefix cannot be normalised by its own rows.
    with pytest.raises(ValueError, match=r"m2.csv: only 0 normal rows .* a normal file of the same name"):
        csv_to_dataset(tmp_path / "other", train_files=train_files[:1], val_files=test_files, **arguments)


def test_a_normal_file_shorter_than_a_segment_still_normalises_its_namesake(tmp_path, capsys):
    rng = np.random.default_rng(8)
    for folder in ("train", "test"):
        (tmp_path / folder).mkdir()
    long_normal = _write_run(tmp_path / "train" / "m1.csv", rng.normal(size=(24, 2)))
    short_values = 50 + 5 * rng.normal(size=(5, 2))
    short_normal = _write_run(tmp_path / "train" / "m2.csv", short_values)
    labels = np.zeros(16, dtype=int)
    labels[:4] = 1
    recorded = 50 + 5 * rng.normal(size=(16, 2))
    labelled = _write_run(tmp_path / "test" / "m2.csv", recorded, labels)
    arguments = dict(layout=LAYOUT, segment_length=8, stride=8, holdout_fraction=0.0)
    csv_to_dataset(tmp_path / "data", train_files=[long_normal, short_normal], val_files=[labelled], **arguments)
    assert "m2.csv: 5 rows, shorter than the segment length 8: it gives no training window" in capsys.readouterr().err
    dataset = open_dataset(tmp_path / "data")
    assert len(dataset.split("train")) == 3  # m1's windows only
    mean, std = short_values.mean(axis=0), short_values.std(axis=0)
    np.testing.assert_allclose(dataset.split("val").segments[0], ((recorded[:8] - mean) / std).T, rtol=1e-5)
    # A short normal file that normalises nothing is refused, as before.
    unpaired = _write_run(tmp_path / "test" / "m3.csv", recorded, labels)
    with pytest.raises(ValueError, match=r"m2.csv: 5 rows, shorter than the segment length 8$"):
        csv_to_dataset(tmp_path / "other", train_files=[long_normal, short_normal], val_files=[unpaired], **arguments)
