"""The whole detection flow once: synthesize, train briefly, save, `tsmoe evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.model.tiny import TINY
from tsmoe.cli.main import main
from tsmoe.config import RunConfig, dump_detector, dump_run_config
from tsmoe.data.config import DataConfig
from tsmoe.evaluation.config import BASELINE_NAMES
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE
from tsmoe.training.config import TrainingConfig
from tsmoe.training.loop import fit


def synthesize(data, train: int, val: int, test: int, length: int) -> int:
    """`tsmoe data synth` into `data` with these split sizes and segment length; its exit code."""
    arguments = ["--train-segments", train, "--val-segments", val, "--test-segments", test, "--segment-length", length]
    return main(["data", "synth", str(data), *map(str, arguments)])


def test_evaluate_prints_the_model_beside_every_baseline(tmp_path, capsys):
    data = tmp_path / "synthetic"
    assert synthesize(data, train=8, val=8, test=4, length=128) == 0
    run = RunConfig(
        model=TimeMoEConfig(**TINY),
        data=DataConfig(path=data, batch_size=4, num_workers=0),
        training=TrainingConfig(epochs=2, warmup_steps=1),
    )
    model, _ = fit(run)
    model.save_pretrained(tmp_path / "model")
    capsys.readouterr()

    table = tmp_path / "table.json"
    arguments = [
        "evaluate",
        str(tmp_path / "model"),
        "--data",
        str(data),
        "--split",
        "test",
        "--heads",
        "1",
        "4",
        "--json",
        str(table),
    ]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    rows = json.loads(table.read_text())
    detectors = ["time-moe", *BASELINE_NAMES]
    assert [(row["detector"], row["level"]) for row in rows] == [
        (name, level) for name in detectors for level in ("segment", "point")
    ]
    for row in rows:
        assert 0 <= row["auroc"] <= 1 and 0 < row["auprc"] <= 1 and 0 < row["best_f1"] <= 1
        assert row["groups_scored"] == 1
        assert f"{row['auroc']:.3f}" in out


def test_evaluate_with_a_head_the_model_lacks_fails_before_scoring(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=2, test=0, length=64)
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "model"), "--data", str(data), "--heads", "3"]) == 2
    assert "--heads [3]: the model in" in capsys.readouterr().err


def test_evaluate_with_a_density_layer_the_model_lacks_fails_before_scoring(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=2, test=0, length=64)
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    arguments = ["evaluate", str(tmp_path / "model"), "--data", str(data), "--density-weight", "1"]
    assert main([*arguments, "--density-layer", "3"]) == 2
    assert "evaluation.density_layer 3: the model in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*arguments, "--density-layer", "top"])
    assert "expected final or a layer number (0 for the embedding), got 'top'" in capsys.readouterr().err


def test_evaluate_uses_the_run_directory_config_and_says_so(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=4, test=0, length=64)
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data))
    run.evaluation.smoothing_window = 5
    run.evaluation.baselines = []
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "run" / "model")
    capsys.readouterr()
    table = tmp_path / "table.json"
    assert main(["evaluate", str(tmp_path / "run" / "model"), "--data", str(data), "--json", str(table)]) == 0
    out = capsys.readouterr().out
    assert f"detector: the evaluation section of {tmp_path / 'run' / 'config.yaml'}" in out
    # The run's baselines (none) were used, not the defaults (all of them).
    assert {row["detector"] for row in json.loads(table.read_text())} == {"time-moe"}
    assert main(["evaluate", str(tmp_path / "run" / "model"), "--data", str(data), "--baselines", "pca"]) == 0
    assert "with baselines from the command line" in capsys.readouterr().out


def test_evaluate_takes_the_runs_context_window_unless_the_command_line_sets_one(tmp_path, capsys, monkeypatch):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=4, test=0, length=64)
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data))
    run.evaluation.context_window = 16
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "run" / "model")
    used = []

    def record(dataset, split, config, model, progress, views):
        used.append(config.context_window)
        return pd.DataFrame({"detector": ["time-moe"], "level": ["point"], "auroc": [0.5], "groups_scored": [1]})

    monkeypatch.setattr("tsmoe.cli.evaluate_command.evaluate_detectors", record)
    arguments = ["evaluate", str(tmp_path / "run" / "model"), "--data", str(data)]
    for extra in ([], ["--context-window", "all"], ["--context-window", "8"]):
        assert main([*arguments, *extra]) == 0
    assert used == [16, None, 8]
    with pytest.raises(SystemExit):
        main([*arguments, "--context-window", "wide"])
    assert "expected a number of points or all, got 'wide'" in capsys.readouterr().err


def test_evaluate_scores_with_the_views_the_run_trained_with(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=4, test=0, length=64)
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data, views=["time", "spectrum"]))
    run.data.spectrum_window, run.data.spectrum_bands = 8, 2
    run.evaluation.baselines = []
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "run" / "model")
    capsys.readouterr()
    spectral, plain = tmp_path / "spectral.json", tmp_path / "plain.json"
    assert main(["evaluate", str(tmp_path / "run" / "model"), "--data", str(data), "--json", str(spectral)]) == 0
    assert f"views: time, spectrum (2 bands over 8 points) from {tmp_path / 'run' / 'config.yaml'}" in (
        capsys.readouterr().out
    )
    # The same model scored on the time series alone (its checkpoint moved out of the run) scores otherwise.
    (tmp_path / "run" / "model").rename(tmp_path / "model")
    assert main(["evaluate", str(tmp_path / "model"), "--data", str(data), "--json", str(plain)]) == 0
    assert "views: time\n" in capsys.readouterr().out
    assert json.loads(spectral.read_text()) != json.loads(plain.read_text())


def test_evaluate_with_a_reconstruction_weight_needs_a_model_with_the_reconstruction_path(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=2, test=0, length=64)
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    arguments = ["evaluate", str(tmp_path / "model"), "--data", str(data), "--baselines"]
    assert main([*arguments, "--reconstruction-weight", "1"]) == 2
    assert "evaluation.reconstruction_weight is 1.0 but the model has no reconstruction path" in capsys.readouterr().err
    # A run directory whose loss was forecast: its config's weight is left out, as its training validated.
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data))
    run.evaluation.reconstruction_weight = 0.5
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "run" / "model")
    assert main(["evaluate", str(tmp_path / "run" / "model"), "--data", str(data), "--baselines"]) == 0


def test_evaluate_says_how_many_residual_series_the_run_trained_with(tmp_path, capsys):
    # The built-in data's three phase currents sum to about zero: one residual series.
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=4, test=0, length=64)
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data, views=["time", "residual"]))
    run.evaluation.baselines = []
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "run" / "model")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "model"), "--data", str(data)]) == 0
    assert f"views: time, residual (1 cross-channel series) from {tmp_path / 'run' / 'config.yaml'}" in (
        capsys.readouterr().out
    )


def test_evaluate_uses_the_detector_training_chose_on_validation_and_says_so(tmp_path, capsys):
    data = tmp_path / "synthetic"
    synthesize(data, train=2, val=4, test=0, length=64)
    run = RunConfig(model=TimeMoEConfig(**TINY), data=DataConfig(path=data))
    run.evaluation = run.evaluation.model_copy(
        update={"baselines": [], "density_weight": 1.0, "alternatives": [{"forecast_weight": 0.0}]}
    )
    (tmp_path / "run").mkdir()
    dump_run_config(run, tmp_path / "run" / "config.yaml")
    model = tmp_path / "run" / "model"
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(model)
    capsys.readouterr()
    # Without a choice (a run that never validated), the section as written, and a word on its alternatives.
    assert main(["evaluate", str(model), "--data", str(data), "--json", str(tmp_path / "written.json")]) == 0
    assert "as written (its 1 alternatives are chosen among by training)" in capsys.readouterr().out
    dump_detector(run.evaluation.candidates()[1], model / CHOSEN_DETECTOR_FILE)
    assert main(["evaluate", str(model), "--data", str(data), "--json", str(tmp_path / "chosen.json")]) == 0
    assert f"detector: {model / CHOSEN_DETECTOR_FILE}, the one of the run's candidate" in capsys.readouterr().out
    written, chosen = (json.loads((tmp_path / name).read_text()) for name in ("written.json", "chosen.json"))
    # The chosen detector (density alone) scores differently from the section (forecast and density).
    assert [row["auroc"] for row in written] != [row["auroc"] for row in chosen]


def test_evaluate_leaves_out_a_level_without_figures_and_says_why(tmp_path, capsys):
    # Files labelled as a whole: every file's segments hold one class, so the per-run segment level has no AUROC.
    rng = np.random.default_rng(0)
    csv = tmp_path / "csv"
    csv.mkdir()
    for name in ("normal_a", "normal_b"):
        pd.DataFrame({"x": rng.normal(size=96)}).to_csv(csv / f"{name}.csv", index=False)
    for name in ("healthy_a", "healthy_b", "healthy_v", "faulty_a", "faulty_b", "faulty_v"):
        label = int(name.startswith("faulty"))
        values = rng.normal(size=96) * (3.0 if label else 1.0)
        pd.DataFrame({"x": values, "label": label}).to_csv(csv / f"{name}.csv", index=False)
    data = tmp_path / "data"
    arguments = ["data", "from-csv", str(data), "--train", str(csv / "normal_a.csv"), str(csv / "normal_b.csv")]
    arguments += ["--test", *(str(csv / f"{name}.csv") for name in ("healthy_a", "healthy_b", "faulty_a", "faulty_b"))]
    arguments += ["--val", str(csv / "healthy_v.csv"), str(csv / "faulty_v.csv")]
    arguments += ["--label-column", "label", "--label-per-file", "--normalize", "train", "--segment-length", "32"]
    assert main(arguments) == 0
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "model")
    capsys.readouterr()

    table = tmp_path / "table.json"
    evaluate = ["evaluate", str(tmp_path / "model"), "--data", str(data), "--split", "test", "--heads", "1"]
    assert main([*evaluate, "--baselines", "moving_variance", "--json", str(table)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(table.read_text())
    assert {(row["level"], row["groups_scored"]) for row in rows} == {("segment", 0), ("run", 1)}
    printed = [line.split() for line in out.splitlines()]
    assert [words[:2] for words in printed if words[:2] in (["time-moe", "run"], ["time-moe", "segment"])] == [
        ["time-moe", "run"]
    ]
    assert "NaN" not in out
    assert "segment level left out: no run holds both classes there, so it has no AUROC" in out
    # The baseline that sees the faulty files' larger spread ranks them first.
    moving_variance = next(row for row in rows if row["detector"] == "moving_variance" and row["level"] == "run")
    assert moving_variance["auroc"] == 1.0
