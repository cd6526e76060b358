"""What `tsmoe sweep` refuses before starting Ray, and what it needs to fit on the cluster."""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import threading
import time

import pandas as pd
import psutil
import pytest

from tests.sweep.conftest import TRIAL_ID_AS_TEXT
from tests.sweep.test_definition import write_sweep
from tests.sweep.test_pareto import trials_table
from tests.training.test_expert_loads import _write_metrics
from tests.training.test_loop import synthetic_data
from tsmoe.cli.main import main
from tsmoe.sweep.definition import load_sweep
from tsmoe.sweep.lock import LOCK_FILE
from tsmoe.sweep.runner import (
    TRIAL_DRIVER,
    _check_directory,
    _store_definition,
    check_resources,
    pick_expert_loads,
    read_stored_sweep,
)
from tsmoe.training.checkpoint_files import checkpoint_problem
from tsmoe.training.launch import latest_checkpoint


@pytest.fixture
def sweep(tmp_path):
    return load_sweep(write_sweep(tmp_path, synthetic_data(tmp_path / "data")))


def test_a_sweep_directory_with_other_settings_is_refused_naming_them(sweep):
    _store_definition(sweep, segment_length=64)
    sweep.config.num_trials = 9
    sweep.config.sampler = "nsga2"
    with pytest.raises(FileExistsError, match=r"other settings \(sampler, num_trials differ\)"):
        _check_directory(sweep, resume=True)


def test_a_stored_sweep_reads_back_as_it_was_run(sweep):
    _store_definition(sweep, segment_length=64)
    stored = read_stored_sweep(sweep.config.directory)
    assert stored.config == sweep.config and stored.base == sweep.base
    assert stored.space.parameters == sweep.space.parameters and stored.epochs == 2


def test_a_non_empty_directory_that_holds_no_sweep_is_refused(sweep):
    sweep.config.directory.mkdir(parents=True)
    (sweep.config.directory / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no tsmoe sweep"):
        _check_directory(sweep, resume=True)


def test_a_trial_larger_than_the_cluster_fails_before_any_trial(sweep):
    sweep.config.resources.workers = 4
    with pytest.raises(ValueError, match=r"4 workers x 1 CPUs = 4, the cluster has 2"):
        check_resources(sweep.config, {"CPU": 2.0}, "sweep.yaml")
    sweep.config.resources.workers, sweep.config.resources.gpus_per_worker = 1, 0.5
    with pytest.raises(ValueError, match=r"sweep\.yaml: field resources: a trial needs 0\.5 GPUs, the cluster has 0"):
        check_resources(sweep.config, {"CPU": 2.0}, "sweep.yaml")


def test_each_trial_driver_holds_one_of_the_sweeps_driver_slots_or_a_sliver_of_a_cpu(sweep):
    assert check_resources(sweep.config, {"CPU": 2.0, TRIAL_DRIVER: 2.0}) == {TRIAL_DRIVER: 1}
    assert check_resources(sweep.config, {"CPU": 2.0}) == {"CPU": 0.01}


def test_a_sweep_into_a_directory_where_one_runs_is_refused_at_once_naming_it(tmp_path, capsys):
    definition = write_sweep(tmp_path, synthetic_data(tmp_path / "data"))
    running = psutil.Process().parent()  # alive on this host for the whole test
    lock = {"host": socket.gethostname(), "pid": running.pid, "started": running.create_time(), "command": "first"}
    (tmp_path / "sweeps" / "tiny").mkdir(parents=True)
    (tmp_path / "sweeps" / "tiny" / LOCK_FILE).write_text(json.dumps(lock))
    assert main(["sweep", str(definition), "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"a sweep is running here already: pid {running.pid} on host {socket.gethostname()} (first)" in error
    assert sorted(path.name for path in (tmp_path / "sweeps" / "tiny").iterdir()) == [LOCK_FILE]  # nothing written


def _ray_processes():
    """This process and every process it started: the local Ray node, the trials and their Train workers."""
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _exposed_sockets(processes):
    """Listening TCP sockets that are not on a loopback address, with the process that holds each."""
    exposed = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
            name = process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for connection in connections:
            if connection.status != psutil.CONN_LISTEN:
                continue
            address = ipaddress.ip_address(connection.laddr.ip)
            mapped = getattr(address, "ipv4_mapped", None)
            if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
                exposed.append(f"{name} (pid {process.pid}) on {connection.laddr.ip}:{connection.laddr.port}")
    return exposed


def _train_workers():
    workers = []
    for process in _ray_processes():
        try:  # a process listed a moment ago may have exited since (a trial ending, a worker restarting)
            if process.name().startswith("ray::RayTrainWorker"):
                workers.append(process)
        except psutil.NoSuchProcess:
            continue
    return workers


def _tune_epochs(directory):
    """The last epoch Tune recorded for the sweep's trial (its result.json, one line per report)."""
    results = [path.read_text().splitlines() for path in directory.glob("run_trial_*/result.json")]
    return max((json.loads(lines[-1])["epoch"] for lines in results if lines), default=0)


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.mark.slow
def test_a_local_sweep_listens_on_loopback_only_and_survives_a_killed_train_worker(tmp_path, capsys):
    # One trial of 3 long-ish epochs with one retry: its Train worker is killed with SIGKILL mid-epoch
    # twice. The first time the trial resumes from its last checkpoint; the second time no retry is
    # left and it is recorded as an error naming the signal. Every finished epoch is kept throughout.
    # The second kill waits until Tune has heard of epoch 2, which took up to 10 s after its checkpoint here,
    # so epoch 3 must outlast that: epochs 1 and 2 train on crops of 64 points (a few seconds each), epoch 3
    # on the full 256 (four times the work). With 64-point segments throughout, epoch 3 sometimes ended before
    # the kill arrived, and the trial completed.
    data = synthetic_data(tmp_path / "data", train=1536, length=256)
    short_then_full = [{"until": 0.6, "length": 64}, {"until": 1.0, "length": 1.0}]
    base = {
        "data": {"path": str(data), "batch_size": 4, "num_workers": 0, "crop_schedule": short_then_full},
        "training": {"epochs": 3, "warmup_steps": 1, "log_every_steps": 1000},
    }
    definition = write_sweep(
        tmp_path,
        data,
        base=base,
        num_trials=1,
        max_concurrent_trials=1,
        max_failures=1,
        early_stopping={"scheduler": "none"},
    )
    directory = tmp_path / "sweeps" / "tiny"
    observed = {}

    def fault_injector():
        trials = directory / "trials"
        run = _wait_for(lambda: next(trials.glob("*/train"), None) if trials.is_dir() else None, 900)
        first = _wait_for(lambda: latest_checkpoint(run.parent), 900)
        observed["exposed"] = _exposed_sockets(_ray_processes())
        observed["first"] = json.loads((first / "trainer_state.json").read_text())
        worker = _wait_for(_train_workers, 120)[0]
        worker.send_signal(signal.SIGKILL)
        # The retried trial resumes from epoch 1 and checkpoints epoch 2; then its worker dies again.
        second = _wait_for(
            lambda: latest_checkpoint(run.parent) if latest_checkpoint(run.parent) != first else None, 240
        )
        observed["second"] = json.loads((second / "trainer_state.json").read_text())
        # Tune hears of an epoch a moment after its checkpoint is written: kill once it has.
        _wait_for(lambda: _tune_epochs(directory) >= 2, 300)
        _wait_for(_train_workers, 120)[0].send_signal(signal.SIGKILL)
        observed["run"] = run.parent

    def record_failure():
        try:
            fault_injector()
        except Exception as error:  # shown by the assertions below instead of lost in the thread
            observed["injector_error"] = repr(error)

    injector = threading.Thread(target=record_failure, daemon=True)
    injector.start()
    assert main(["sweep", str(definition)]) == 0
    injector.join(timeout=5)
    capsys.readouterr()

    assert "injector_error" not in observed, observed["injector_error"]
    assert observed["exposed"] == [], "Ray servers listening beyond the loopback interface"
    assert observed["first"]["epoch"] == 1 and observed["second"]["epoch"] == 2
    table = pd.read_csv(directory / "trials.csv", dtype=TRIAL_ID_AS_TEXT)
    assert len(table) == 1
    row = table.iloc[0]
    # The retry resumed from epoch 1; the second kill found no retry left: an error naming the signal.
    assert row["status"] == "error" and "SIGKILL" in row["stop_reason"], row["stop_reason"]
    assert row["epochs"] == 2
    # Nothing finished was lost: epoch 1 as first recorded is epoch 1 of the resumed run, and the trial's
    # outputs are collected from its latest intact checkpoint.
    assert observed["second"]["history"][0] == observed["first"]["history"][0]
    run = observed["run"]
    assert checkpoint_problem(latest_checkpoint(run)) is None
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [epoch["epoch"] for epoch in history] == [1, 2]
    assert history[0] == observed["first"]["history"][0]


def test_report_draws_the_expert_loads_of_the_knee_trial_or_says_why_not(tmp_path):
    table = trials_table(
        [("slow", "completed", 0.95, 50.0), ("knee", "completed", 0.9, 180.0), ("fast", "completed", 0.6, 200.0)]
    )
    table["output"] = [str(tmp_path / "trials" / trial_id) for trial_id in table["trial_id"]]
    _write_metrics(tmp_path / "trials" / "knee", [[[0.3, 0.2, 0.25, 0.25]]])
    assert pick_expert_loads(tmp_path, table, "samples_s") == tmp_path / "expert_loads.png"
    assert (tmp_path / "expert_loads.png").is_file()
    why = pick_expert_loads(tmp_path / "other", table[table["trial_id"] == "fast"], "samples_s")
    assert why.endswith("no metrics.jsonl (is this a run directory of `tsmoe train`?)")
