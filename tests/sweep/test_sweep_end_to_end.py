"""`tsmoe sweep`, `report`, `export` and `train` end to end on CPU through Ray Tune and Ray Train."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.sweep.conftest import TRIAL_ID_AS_TEXT
from tests.sweep.test_definition import write_sweep
from tests.training.test_loop import synthetic_data
from tsmoe.cli.main import main
from tsmoe.config import load_run_config
from tsmoe.sweep.searcher import TUNE_TRIAL_ID, study_storage

pytestmark = pytest.mark.slow

# Two trials at once, of which the first fails as it starts: 16 training segments cannot fill one batch of 32,
# and Optuna's seed 0 samples batch 32 for the first trial and 4 for the second.
ONE_TRIAL_CRASHES = {
    "space": {
        "data.batch_size": {"type": "categorical", "choices": [4, 32]},
        "training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "num_trials": 2,
    "max_concurrent_trials": 2,
    "early_stopping": {"scheduler": "none"},
}


def _history(run_directory):
    return [json.loads(line) for line in (run_directory / "metrics.jsonl").read_text().splitlines()]


def test_a_small_sweep_writes_results_plots_and_an_export_that_trains_to_the_same_figures(tmp_path, capsys):
    definition = write_sweep(tmp_path, synthetic_data(tmp_path / "data"), num_trials=3, max_concurrent_trials=2)
    assert main(["sweep", str(definition)]) == 0
    out = capsys.readouterr().out
    assert "Ray dashboard: http://127.0.0.1:" in out and "Pareto front" in out

    directory = tmp_path / "sweeps" / "tiny"
    for name in (
        "trials.csv",
        "trials.parquet",
        "pareto.csv",
        "pareto.png",
        "pareto.html",
        "parallel_coordinates.html",
        "optuna.db",
    ):
        assert (directory / name).stat().st_size > 0, name
    table = pd.read_parquet(directory / "trials.parquet")
    assert len(table) == 3 and set(table["status"]) <= {"completed", "stopped"}
    assert (table["status"] == "completed").any()
    for _, row in table.iterrows():
        history = _history(directory / "trials" / row["trial_id"]) if row["status"] == "completed" else None
        if row["status"] == "completed":
            assert row["epochs"] == 2 and row["stop_reason"] == ""
            assert row["best_val_auroc"] == pytest.approx(max(epoch["val_auroc"] for epoch in history))
        else:
            assert row["epochs"] == 1 and row["stop_reason"].startswith(("moasha: Pareto rank", "plateau:"))
    front = pd.read_csv(directory / "pareto.csv", dtype=TRIAL_ID_AS_TEXT)
    assert set(front["trial_id"]) <= set(table.loc[table["status"] == "completed", "trial_id"])

    # Optuna was told the same story: completed trials with their figures, stopped ones as pruned.
    study = optuna.load_study(study_name="tiny", storage=study_storage(directory))
    told = {trial.user_attrs[TUNE_TRIAL_ID]: trial for trial in study.trials}
    for _, row in table.iterrows():
        trial = told[row["trial_id"]]
        if row["status"] == "completed":
            assert trial.state == TrialState.COMPLETE
            assert trial.values == pytest.approx([row["best_val_auroc"], row["samples_s"]])
        else:
            assert trial.state == TrialState.PRUNED

    # Running the same definition again without --resume is refused: nothing is overwritten.
    assert main(["sweep", str(definition)]) == 2
    assert "pass --resume" in capsys.readouterr().err

    assert main(["report", str(directory)]) == 0
    reported = capsys.readouterr().out
    assert "3 trials:" in reported and "hypervolume (reference AUROC 0.5, samples_s 0): " in reported
    assert (directory / "hypervolume.png").stat().st_size > 0

    exported = tmp_path / "best.yaml"
    before = {path: path.stat().st_mtime_ns for path in directory.rglob("*")}
    assert main(["export", str(directory), "-o", str(exported), "--policy", "best_auroc"]) == 0
    # Export reads the sweep; the only file it writes is its output.
    assert {path: path.stat().st_mtime_ns for path in directory.rglob("*")} == before
    config = load_run_config(exported)
    trial_id = config.origin.trial_id
    trial_directory = directory / "trials" / trial_id
    assert config.model_copy(update={"origin": None}) == load_run_config(trial_directory / "config.yaml")
    chosen = table.set_index("trial_id").loc[trial_id]
    assert chosen["status"] == "completed"
    assert config.origin.metrics["best_val_auroc"] == pytest.approx(table["best_val_auroc"].max())
    assert main(["export", str(directory), "-o", str(exported)]) == 2  # never overwritten unasked
    capsys.readouterr()

    # The exported config trains outside Tune to the trial's own losses: the same run, reproduced.
    assert main(["train", str(exported), "--output", str(tmp_path / "reproduced")]) == 0
    assert f"reproducing trial {trial_id}" in capsys.readouterr().out
    reproduced, original = _history(tmp_path / "reproduced"), _history(trial_directory)
    assert [epoch["loss"] for epoch in reproduced] == pytest.approx([epoch["loss"] for epoch in original], rel=1e-5)
    assert [epoch["val_auroc"] for epoch in reproduced] == pytest.approx(
        [epoch["val_auroc"] for epoch in original], rel=1e-5
    )


def test_a_sweep_killed_mid_way_resumes_without_losing_or_rerunning_finished_trials(tmp_path):
    # MOASHA judges every trial at epoch 1; its rung history must survive the kill.
    definition = write_sweep(
        tmp_path,
        synthetic_data(tmp_path / "data", train=32),
        num_trials=4,
        max_concurrent_trials=2,
        early_stopping={"scheduler": "moasha", "grace_period": 1, "reduction_factor": 2},
    )
    directory = tmp_path / "sweeps" / "tiny"
    command = [sys.executable, "-m", "tsmoe.cli.main", "sweep", str(definition)]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    finished = []
    while not finished and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        finished = sorted(path.parent.parent.name for path in (directory / "trials").glob("*/model/config.json"))
    time.sleep(11)  # past Tune's periodic save of the sweep's state (TUNE_GLOBAL_CHECKPOINT_S, 10 s)
    os.killpg(first.pid, signal.SIGKILL)  # the driver, the trials and Ray itself, without warning
    first.wait()
    assert finished, "no trial finished before the kill"
    kept = {trial_id: (directory / "trials" / trial_id / "metrics.jsonl").read_text() for trial_id in finished}
    rungs_before = json.loads((directory / "moasha_rungs.jsonl").read_text())["rungs"]["1"]
    assert set(finished) <= set(rungs_before)

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the sweep" in resumed.stdout
    table = pd.read_csv(directory / "trials.csv", dtype=TRIAL_ID_AS_TEXT)
    assert len(table) == 4 and set(table["status"]) <= {"completed", "stopped"}
    # Every trial judged before the kill is still on the rung, with the same figures, beside the new ones.
    rungs_after = json.loads((directory / "moasha_rungs.jsonl").read_text())["rungs"]["1"]
    assert {trial_id: rungs_after[trial_id] for trial_id in rungs_before} == rungs_before
    assert set(rungs_after) == set(table["trial_id"])
    for trial_id, metrics in kept.items():
        assert (directory / "trials" / trial_id / "metrics.jsonl").read_text() == metrics
        assert len(_history(directory / "trials" / trial_id)) == 2


def test_a_crashing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, capsys):
    definition = write_sweep(tmp_path, synthetic_data(tmp_path / "data"), **ONE_TRIAL_CRASHES)
    assert main(["sweep", str(definition)]) == 0
    assert "1 completed, 1 error" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "sweeps" / "tiny" / "trials.csv").set_index("param.data.batch_size")
    assert table.loc[4, "status"] == "completed"
    assert table.loc[32, "status"] == "error"
    assert "no full batch of 32" in table.loc[32, "stop_reason"]
    study = optuna.load_study(study_name="tiny", storage=study_storage(tmp_path / "sweeps" / "tiny"))
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE", "FAIL"]


def test_a_sweep_kept_in_object_storage_trains_reports_and_exports_from_the_bucket(tmp_path, capsys, s3_bucket):
    import pyarrow.fs

    from tsmoe.sweep.object_storage import join, list_files

    storage = join(s3_bucket, "team")
    definition = write_sweep(
        tmp_path, synthetic_data(tmp_path / "data"), **ONE_TRIAL_CRASHES, storage=storage, local_storage="driver"
    )
    assert main(["sweep", str(definition)]) == 0
    assert "1 completed, 1 error" in capsys.readouterr().out

    directory = tmp_path / "driver" / "tiny"
    table = pd.read_csv(directory / "trials.csv", dtype=TRIAL_ID_AS_TEXT).set_index("param.data.batch_size")
    trained, failed = table.loc[4, "trial_id"], table.loc[32, "trial_id"]
    assert table.loc[4, "status"] == "completed" and table.loc[32, "status"] == "error"
    # Every run's files are in the bucket: Ray Train's checkpoints and what the trial's process wrote.
    stored = list_files(join(storage, "tiny", "trials"))
    assert {f"{trained}/config.yaml", f"{trained}/metrics.jsonl", f"{trained}/model/config.json"} <= set(stored)
    assert any(name.startswith(f"{trained}/train/checkpoint_") for name in stored)
    assert f"{failed}/failure.jsonl" in stored
    # The driver's copy has the finished run's outputs, not its checkpoints, and its figures from them.
    local = directory / "trials" / trained
    assert not list(local.glob("train/checkpoint_*")) and (local / "model" / "config.json").is_file()
    assert table.loc[4, "best_val_auroc"] == pytest.approx(max(epoch["val_auroc"] for epoch in _history(local)))
    study = optuna.load_study(study_name="tiny", storage=study_storage(directory))
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE", "FAIL"]

    assert main(["sweep", str(definition)]) == 2  # the bucket holds this sweep: never started over unasked
    assert "pass --resume" in capsys.readouterr().err

    # A run stopped before it wrote its outputs (as early stopping leaves one): `tsmoe report` completes them
    # from its checkpoints in the bucket and puts them back there.
    filesystem, root = pyarrow.fs.FileSystem.from_uri(str(join(storage, "tiny", "trials", trained)))
    for name in ("model", "best_model"):
        filesystem.delete_dir(f"{root}/{name}")
        shutil.rmtree(local / name)
    filesystem.delete_file(f"{root}/metrics.jsonl")
    (local / "metrics.jsonl").unlink()
    assert main(["report", str(directory)]) == 0
    assert "1 completed, 1 error" in capsys.readouterr().out
    assert {"metrics.jsonl", "model/config.json", "best_model/config.json"} <= set(
        list_files(join(storage, "tiny", "trials", trained))
    )
    assert (local / "model" / "config.json").is_file()

    exported = tmp_path / "best.yaml"
    assert main(["export", str(directory), "-o", str(exported)]) == 0
    config = load_run_config(exported)
    assert config.origin.trial_id == trained
    assert config.model_copy(update={"origin": None}) == load_run_config(local / "config.yaml")
