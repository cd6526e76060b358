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
    csv_to_dataset(tmp_path / "data", train_files=[normal], val_files=[run], layout=LAYOUT, segment_length=8,
                   stride=4, normal_prefix=20)
    dataset = open_dataset(tmp_path / "data")
    assert dataset.meta.channels == ["a", "b"] and dataset.meta.run_names == ["run.csv"]
    # Train: normal.csv windows at 0, 4 and the prefix's at 0, 4, 8, 12.
    train = dataset.split("train").segments
    assert train.shape == (6, 2, 8)
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
    meta = csv_to_dataset(tmp_path / "data", train_files=[], val_files=[run], layout=LAYOUT, segment_length=8,
                          stride=8, normal_prefix=20)
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
        csv_to_dataset(out, val_files=[good], **{**arguments, "layout": CsvLayout(separator=";", channels=["pressure"])})
    with pytest.raises(ValueError, match="a labeled \\(validation or test\\) run needs the label column"):
        csv_to_dataset(out, val_files=[_write_run(tmp_path / "plain.csv", values)], **arguments)
    assert not out.exists() and not (tmp_path / "data.partial").exists()
