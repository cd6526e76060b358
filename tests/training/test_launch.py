"""`tsmoe train` end to end through Ray Train: outputs, reruns and refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.model.tiny import TINY
from tests.training.test_loop import synthetic_data
from tsmoe.cli.main import main
from tsmoe.config import load_detector, load_run_config
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.checkpoint_files import CHOSEN_DETECTOR_FILE
from tsmoe.training.epoch_choice import kept_epoch
from tsmoe.training.launch import WORKER_DEATH, failure_summary, latest_checkpoint
from tsmoe.training.loop import fit


def _write_config(path, data, epochs=2, **evaluation):
    config = {
        "model": TINY,
        "data": {"path": str(data), "batch_size": 4, "num_workers": 0},
        "training": {"epochs": epochs, "warmup_steps": 1, "log_every_steps": 2},
        "evaluation": {"statistics_segments": 4, "baselines": [], **evaluation},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # starts Ray
def test_train_writes_config_metrics_checkpoints_and_models_then_refuses_another_config(tmp_path, capsys):
    alternatives = [{"density_weight": 0.0}, {"forecast_weight": 0.0}]
    config = _write_config(
        tmp_path / "tiny.yaml", synthetic_data(tmp_path / "data"), density_weight=1.0, alternatives=alternatives
    )
    output = tmp_path / "run"
    assert main(["train", str(config), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "trained 2 epochs" in out
    assert f"detector: {output / 'best_model' / CHOSEN_DETECTOR_FILE}, the candidate validation chose" in out

    assert load_run_config(output / "config.yaml") == load_run_config(config)
    history = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [metrics["epoch"] for metrics in history] == [1, 2]
    for metrics in history:
        for key in (
            "loss",
            "val_auroc",
            "val_auroc_se",
            "selection_score",
            "val_auprc",
            "it_s",
            "samples_s",
            "tokens_s",
            "data_wait_frac",
            "peak_memory_mib",
            "step_time_s",
            "nan_steps",
            "crop_length",
            "routing_entropy_min",
        ):
            assert key in metrics, key
    model = TimeMoE.from_pretrained(output / "model")
    assert model.config.hidden_size == TINY["hidden_size"]
    assert (output / "best_model" / "config.json").is_file()
    # Each model directory carries the detector its epoch's validation chose among the three candidates.
    candidates = load_run_config(config).detector_settings().candidates()
    best = next(metrics for metrics in history if metrics["epoch"] == kept_epoch(history))
    for directory, epoch in (("model", history[-1]), ("best_model", best)):
        assert load_detector(output / directory / CHOSEN_DETECTOR_FILE) == candidates[int(epoch["val_detector"])]

    # The same config again: nothing to train, the outputs are collected from the checkpoints.
    assert main(["train", str(config), "--output", str(output)]) == 0
    assert "already trained for 2 epochs" in capsys.readouterr().out

    # The latest checkpoint cut short (a full disk, a crash while copying): the rerun names the broken file,
    # resumes from the earlier intact checkpoint and trains the lost epoch again.
    latest = latest_checkpoint(output)
    state = latest / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert main(["train", str(config), "--output", str(output)]) == 0
    captured = capsys.readouterr()
    assert f"skipping a broken checkpoint: {state}: truncated" in captured.out
    assert "resumed from the checkpoint after epoch 1" in captured.out + captured.err
    assert [metrics["epoch"] for metrics in _history(output)] == [1, 2]
    assert _history(output)[0] == history[0]  # the finished epoch is kept as it was

    # Another config into the same directory is refused before any work, naming the field.
    other = _write_config(
        tmp_path / "other.yaml", tmp_path / "data", epochs=3, density_weight=1.0, alternatives=alternatives
    )
    assert main(["train", str(other), "--output", str(output)]) == 2
    assert "fields training.epochs differ" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_one(tmp_path):
    data = synthetic_data(tmp_path / "data", train=64, val=8, length=256)
    config = _write_config(tmp_path / "tiny.yaml", data, epochs=4)
    output = tmp_path / "run"
    command = [sys.executable, "-m", "tsmoe.cli.main", "train", str(config), "--output", str(output)]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while latest_checkpoint(output) is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started, mid-run
    first.wait()
    resumed_after = json.loads((latest_checkpoint(output) / "trainer_state.json").read_text())["epoch"]
    assert 1 <= resumed_after < 4

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"resumed from the checkpoint after epoch {resumed_after}" in finished.stdout + finished.stderr
    history = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [metrics["epoch"] for metrics in history] == [1, 2, 3, 4]
    _, uninterrupted = fit(load_run_config(config))
    assert [metrics["loss"] for metrics in history] == pytest.approx(
        [metrics["loss"] for metrics in uninterrupted], rel=1e-5
    )


def _history(output):
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_a_worker_process_that_died_without_an_error_is_named_as_killed_or_crashed():
    ray_report = (
        "Training failed due to worker errors:\n[Rank 0]\nray.exceptions.ActorDiedError: The actor died "
        "unexpectedly before finishing this task.\nThe actor is dead because its worker process has died. "
        "Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error "
        "code 2. End of file."
    )
    summary = failure_summary(ray_report)
    assert summary == WORKER_DEATH and "SIGKILL" in summary and "OOM killer" in summary
    # A worker's own error stays what it said.
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: no full batch of 32'
    assert failure_summary(traceback) == "ValueError: no full batch of 32"


def test_bad_config_fails_before_ray_naming_the_field(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"training": {"epochs": 0}}))
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "field training.epochs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_deepspeed_zero2_trains_on_two_cpu_workers_inside_ray_train(tmp_path, capsys):
    config = _write_config(tmp_path / "tiny.yaml", synthetic_data(tmp_path / "data"), epochs=1)
    values = yaml.safe_load(config.read_text())
    values["training"]["strategy"] = "deepspeed"
    values["training"]["deepspeed"] = {"stage": 2}
    config.write_text(yaml.safe_dump(values))
    output = tmp_path / "run"
    assert main(["train", str(config), "--output", str(output), "--workers", "2"]) == 0
    history = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == 2 and history[0]["nan_steps"] == 0
    # ZeRO-2 partitions the optimizer state: each rank wrote its shard into the one checkpoint.
    # (named bf16_zero_pp_rank_* where the CPU trains in bfloat16)
    shards = sorted(path.name for path in latest_checkpoint(output).glob("deepspeed/state/*zero_pp_rank_*"))
    assert [name.split("zero_pp_")[1] for name in shards] == [
        "rank_0_mp_rank_00_optim_states.pt",
        "rank_1_mp_rank_00_optim_states.pt",
    ]
    assert TimeMoE.from_pretrained(output / "model").config.num_experts == TINY["num_experts"]


class _StopBeforeTraining(Exception):
    pass


def _tiny_run(tmp_path):
    """A tiny run config on a small synthetic dataset under tmp_path."""
    data = synthetic_data(tmp_path / "data", train=4, val=4, length=32)
    return load_run_config(_write_config(tmp_path / "tiny.yaml", data))


def _fake_ray(monkeypatch, *, init, trainer, is_initialized, cluster_resources):
    """Ray around `launch.run_training` replaced: joining or starting it, its resources, and the trainer."""
    import ray

    from tsmoe.training import launch

    monkeypatch.setattr(ray, "is_initialized", is_initialized)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", cluster_resources)
    monkeypatch.setattr(launch, "build_torch_trainer", trainer)


def test_joining_a_gpu_cluster_gives_no_worker_the_cpu_environment(tmp_path, monkeypatch):
    from tsmoe.training import launch

    run = _tiny_run(tmp_path)
    joined = {}

    def fake_init(**kwargs):
        joined["job_environment"] = kwargs["runtime_env"]["env_vars"]
        joined["connected"] = True

    def fake_trainer(run, output, workers, use_gpu, cpus_per_worker):
        joined["use_gpu"], joined["worker_environment"] = use_gpu, launch.worker_environment(use_gpu)
        raise _StopBeforeTraining

    _fake_ray(
        monkeypatch,
        init=fake_init,
        trainer=fake_trainer,
        is_initialized=lambda: joined.get("connected", False),
        # What the cluster reports, answered only once joined (as Ray does).
        cluster_resources=lambda: {"CPU": 16.0, "GPU": 2.0} if joined else {},
    )
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the driver's own host has no GPU
    with pytest.raises(_StopBeforeTraining):
        launch.run_training(run, tmp_path / "run", address="ray://head:10001")
    assert joined["use_gpu"] is True
    assert "DS_ACCELERATOR" not in joined["job_environment"]
    assert "DS_ACCELERATOR" not in joined["worker_environment"]
    assert launch.worker_environment(False)["DS_ACCELERATOR"] == "cpu"
    # A joined cluster may drain nodes: Train's preemption watcher stays as Ray has it.
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in joined["job_environment"]


def test_a_spectral_window_longer_than_the_shortest_crop_fails_before_ray(tmp_path, capsys):
    synthetic_data(tmp_path / "data", train=4, val=2, length=64)
    config = tmp_path / "spectral.yaml"
    data = {"path": str(tmp_path / "data"), "crop_schedule": "half_then_full", "views": ["time", "spectrum"]}
    config.write_text(yaml.safe_dump({"data": {**data, "spectrum_window": 64, "batch_size": 2}}))
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "field data.spectrum_window: 64 points, longer than the shortest crop (32" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_cluster_started_for_the_run_has_no_preemption_watcher(tmp_path, monkeypatch):
    from tsmoe.training import launch

    run = _tiny_run(tmp_path)
    started = {}

    def fake_init(**kwargs):
        started["job_environment"] = kwargs["runtime_env"]["env_vars"]

    def fake_trainer(run, output, workers, use_gpu, cpus_per_worker):
        # What the Train controller reads, in the process that calls fit().
        started["driver"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
        raise _StopBeforeTraining

    _fake_ray(
        monkeypatch,
        init=fake_init,
        trainer=fake_trainer,
        is_initialized=lambda: False,
        cluster_resources=lambda: {"CPU": 2.0},
    )
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")  # undone after the test
    with pytest.raises(_StopBeforeTraining):
        launch.run_training(run, tmp_path / "run")
    assert started["job_environment"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert started["driver"] == "0"


def test_only_the_train_workers_environment_asks_the_setup_hook_to_patch_torch(tmp_path):
    from tsmoe.training.launch import build_torch_trainer, worker_environment
    from tsmoe.training.loopback import PROCESS_GROUP_VARIABLE

    run = _tiny_run(tmp_path)
    trainer = build_torch_trainer(run, tmp_path / "run", workers=2, use_gpu=False, cpus_per_worker=1)
    workers = trainer.run_config.worker_runtime_env["env_vars"]
    assert workers[PROCESS_GROUP_VARIABLE] == "1"
    # The job-wide environment (trial drivers, Train's controller and helper actors) leaves it out.
    assert PROCESS_GROUP_VARIABLE not in worker_environment(use_gpu=False, local_cluster=True)


def test_cpu_workers_run_torch_on_their_share_of_the_cpus(tmp_path):
    from tsmoe.training.launch import build_torch_trainer

    run = _tiny_run(tmp_path)

    def threads(**resources) -> str | None:
        trainer = build_torch_trainer(run, tmp_path / "run", workers=2, **resources)
        return trainer.run_config.worker_runtime_env["env_vars"].get("OMP_NUM_THREADS")

    assert threads(use_gpu=False, cpus_per_worker=1) == "1"
    assert threads(use_gpu=False, cpus_per_worker=3) == "3"
    assert threads(use_gpu=False, cpus_per_worker=0.5) == "1"  # a fractional share still runs one thread
    assert threads(use_gpu=True, cpus_per_worker=1) is None  # GPU workers keep torch's default
