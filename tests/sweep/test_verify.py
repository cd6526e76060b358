"""`tsmoe export --verify-seeds N`: the pick retrained with N new seeds as Ray trials, and their spread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep.conftest import TRIAL_ID_AS_TEXT
from tests.sweep.test_definition import write_sweep
from tests.sweep.test_seed_spread import FRONT, spreads
from tests.training.test_loop import synthetic_data
from tsmoe.cli.main import main
from tsmoe.config import load_run_config
from tsmoe.sweep.seed_spread import leads_over_neighbours
from tsmoe.sweep.verify import Verification, fresh_directory, new_seeds


@pytest.mark.parametrize("count", ["1", "0", "-3"])
def test_fewer_than_two_seeds_are_refused_before_anything_is_read_or_written(tmp_path, capsys, count):
    output = tmp_path / "best.yaml"
    # The directory does not even exist: the seed count is checked first, before the sweep is read.
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(output), "--verify-seeds", count]) == 2
    error = capsys.readouterr().err
    assert f"--verify-seeds: needs at least 2 seeds to measure a spread, got {count}" in error
    assert not output.exists()


def test_an_address_without_verify_seeds_is_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "best.yaml"), "--address", "head:6379"]) == 2
    assert "--address: only used by --verify-seeds" in capsys.readouterr().err


def test_new_seeds_follow_the_trials_own_one():
    assert new_seeds(7, 3) == [8, 9, 10]


def test_each_verification_gets_a_new_directory_and_leaves_the_earlier_ones_alone(tmp_path):
    first = fresh_directory(tmp_path, "abc_00001")
    (first / "summary.json").write_text("kept")
    second = fresh_directory(tmp_path, "abc_00001")
    assert (first.name, second.name) == ("verify_seeds_abc_00001", "verify_seeds_abc_00001_2")
    assert (first / "summary.json").read_text() == "kept" and list(second.iterdir()) == []


def _history(run_directory) -> list[dict]:
    return [json.loads(line) for line in (run_directory / "metrics.jsonl").read_text().splitlines()]


def _modification_times(directory, leave_out) -> dict:
    return {path: path.stat().st_mtime_ns for path in directory.rglob("*") if leave_out not in (path, *path.parents)}


@pytest.mark.slow
def test_verify_seeds_retrains_the_pick_with_distinct_seeds_and_reports_their_spread(tmp_path, capsys):
    # One epoch, no early stopping: both trials complete, and the seeds' runs are as short as can be.
    base = {"training": {"epochs": 1, "warmup_steps": 1, "log_every_steps": 1000}}
    definition = write_sweep(
        tmp_path,
        synthetic_data(tmp_path / "data"),
        base=base,
        num_trials=2,
        max_concurrent_trials=2,
        early_stopping={"scheduler": "none"},
    )
    assert main(["sweep", str(definition)]) == 0
    capsys.readouterr()
    directory = tmp_path / "sweeps" / "tiny"
    before = _modification_times(directory, directory / "none")

    exported_path = tmp_path / "best.yaml"
    assert main(["export", str(directory), "-o", str(exported_path), "--verify-seeds", "2"]) == 0
    out = capsys.readouterr().out
    exported = load_run_config(exported_path)
    pick = exported.origin.trial_id
    verification = directory / f"verify_seeds_{pick}"
    # The export wrote its file as always, and into the sweep only the new verification directory.
    assert _modification_times(directory, verification) == before

    # Two Ray Tune trials ran, one per new seed, each the pick's config with only the seed changed.
    runs = pd.read_csv(verification / "seeds.csv")
    trial_seed = exported.training.seed
    assert runs["seed"].tolist() == [trial_seed + 1, trial_seed + 2]
    assert runs["status"].tolist() == ["completed", "completed"] and runs["trial_id"].nunique() == 2
    pick_config = exported.model_copy(update={"origin": None})
    first_losses = []
    for _, run in runs.iterrows():
        run_directory = verification / "trials" / run["trial_id"]
        config = load_run_config(run_directory / "config.yaml")
        assert config.training.seed == run["seed"]
        same_seed = config.training.model_copy(update={"seed": trial_seed})
        assert config.model_copy(update={"training": same_seed}) == pick_config
        history = _history(run_directory)
        # The figures Tune reported are the run's own: best validation AUROC and the last epoch's throughput.
        assert run["best_val_auroc"] == pytest.approx(max(epoch["val_auroc"] for epoch in history))
        assert run["samples_s"] == pytest.approx(history[-1]["samples_s"])
        first_losses.append(history[0]["loss"])
    assert first_losses[0] != first_losses[1]  # the seeds took effect

    # The statistics are those of the per-seed figures.
    summary = json.loads((verification / "summary.json").read_text())
    assert summary["pick"] == pick and summary["seeds"] == runs["seed"].tolist()
    for objective in ("best_val_auroc", "samples_s"):
        values = runs[objective].to_numpy()
        spread = summary["spreads"][objective]
        assert spread["mean"] == pytest.approx(values.mean())
        assert spread["std"] == pytest.approx(values.std(ddof=1))
        assert (spread["min"], spread["max"], spread["count"]) == (values.min(), values.max(), 2)

    # Each lead is the gap to a neighbour on the front, warned about exactly when it is within the spread.
    front = pd.read_csv(directory / "pareto.csv", dtype=TRIAL_ID_AS_TEXT).set_index("trial_id")
    for lead in summary["leads"]:
        objective = lead["objective"]
        assert lead["lead"] == pytest.approx(front.loc[pick, objective] - front.loc[lead["neighbour"], objective])
        assert lead["within_spread"] == (lead["lead"] <= summary["spreads"][objective]["std"])
        assert (lead["neighbour"] in "\n".join(summary["warnings"])) == lead["within_spread"]
    assert len(summary["leads"]) == len(front) - 1  # two trials: one neighbour when both are on the front
    for warning in summary["warnings"]:
        assert warning in out
    assert f"trial {pick} (knee) retrained with 2 new seeds ({trial_seed + 1}, {trial_seed + 2}): 2 finished" in out
    mean = summary["spreads"]["best_val_auroc"]["mean"]
    assert math.isfinite(mean) and f"{mean:.4g}" in out


def test_the_printed_verification_marks_the_pick_on_the_front_and_names_failed_seeds():
    measured = spreads(0.01, 350.0)
    runs = pd.DataFrame(
        [
            {"seed": 1, "status": "completed", "reason": "", "best_val_auroc": 0.92, "samples_s": 380.0},
            {"seed": 2, "status": "error", "reason": "training failed: boom", "best_val_auroc": math.nan},
        ]
    )
    leads = leads_over_neighbours(FRONT, "middle", measured, "best_val_auroc", "samples_s")
    directory = Path("sweep/verify_seeds_middle")
    verification = Verification(directory, "middle", "knee", [1, 2], runs, measured, {}, leads, FRONT)
    lines = verification.lines("samples_s").splitlines()
    assert lines[0] == f"trial middle (knee) retrained with 2 new seeds (1, 2): 1 finished; {directory}"
    assert [line.split() for line in lines if line.lstrip().startswith(("*", "accurate", "fast "))] == [
        ["accurate", "0.95", "100"],
        ["*", "middle", "0.93", "400"],
        ["fast", "0.8", "500"],
    ]
    assert "seed 2 error: training failed: boom" in lines
    assert (
        verification.warnings == [lead.line("middle") for lead in leads[:1]] and lines[-2] == verification.warnings[0]
    )
