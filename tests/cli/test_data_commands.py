"""`tsmoe data ...`: the commands a user runs on a dataset directory."""

from __future__ import annotations

import numpy as np

from tests.data.conftest import write_small_dataset
from tsmoe.cli.main import main
from tsmoe.data.store import open_dataset


def test_check_prints_a_summary_of_a_good_dataset(tmp_path, capsys):
    directory = write_small_dataset(tmp_path / "data")
    assert main(["data", "check", str(directory)]) == 0
    out = capsys.readouterr().out
    assert f"{directory}: OK" in out and "val: 6 segments, 3 anomalous, point labels" in out


def test_check_exits_non_zero_naming_the_file_field_and_index(tmp_path, capsys):
    directory = write_small_dataset(tmp_path / "data")
    segments = np.load(directory / "val.npy")
    segments[2, 0, 7] = np.nan
    np.save(directory / "val.npy", segments)
    assert main(["data", "check", str(directory)]) == 2
    err = capsys.readouterr().err
    assert f"{directory / 'val.npy'}: field values: NaN or inf at first bad index [2, 0, 7]" in err


def test_synth_writes_a_dataset_that_passes_the_check(tmp_path, capsys):
    out = tmp_path / "synthetic"
    arguments = [
        "data",
        "synth",
        str(out),
        "--train-segments",
        "4",
        "--val-segments",
        "4",
        "--test-segments",
        "0",
        "--segment-length",
        "128",
        "--seed",
        "3",
    ]
    assert main(arguments) == 0
    assert "val: 4 segments, 2 anomalous" in capsys.readouterr().out
    dataset = open_dataset(out)
    assert set(dataset.splits) == {"train", "val"} and dataset.meta.segment_length == 128


def test_synth_refuses_to_overwrite_a_directory(tmp_path, capsys):
    out = tmp_path / "synthetic"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["data", "synth", str(out), "--train-segments", "2", "--val-segments", "2"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_from_csv_builds_a_dataset_from_runs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    runs = []
    for index in range(2):
        path = tmp_path / f"run{index}.csv"
        values = rng.normal(size=(120, 2)) + index * 5
        labels = np.zeros(120, dtype=int)
        labels[90:100] = 1
        lines = ["time;a;b;anomaly"] + [
            f"{row};{a};{b};{label}" for row, ((a, b), label) in enumerate(zip(values, labels, strict=True))
        ]
        path.write_text("\n".join(lines) + "\n")
        runs.append(str(path))
    out = tmp_path / "dataset"
    arguments = [
        "data",
        "from-csv",
        str(out),
        "--val",
        *runs,
        "--separator",
        ";",
        "--time-column",
        "time",
        "--label-column",
        "anomaly",
        "--normal-prefix",
        "60",
        "--segment-length",
        "32",
        "--stride",
        "16",
    ]
    assert main(arguments) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    dataset = open_dataset(out)
    assert dataset.meta.channels == ["a", "b"] and len(dataset.meta.run_names) == 2
    assert len(dataset.split("train")) > 0 and dataset.split("val").label_level == "point"
