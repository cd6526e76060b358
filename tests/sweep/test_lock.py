"""The sweep directory's lock: one sweep at a time, the owner named, stale locks taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tsmoe.sweep.lock import LOCK_FILE, LockOwner, SweepLocked, acquire, release, sweep_lock


def _write_lock(directory, **fields):
    owner = {"host": socket.gethostname(), "pid": 1, "started": 0.0, "command": "tsmoe sweep other.yaml"} | fields
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_FILE).write_text(json.dumps(owner))
    return owner


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_names_this_process_and_is_released_on_exit(tmp_path):
    with sweep_lock(tmp_path / "sweep") as owner:
        stored = json.loads((tmp_path / "sweep" / LOCK_FILE).read_text())
        assert stored["pid"] == owner.pid and stored["host"] == socket.gethostname()
    assert not (tmp_path / "sweep" / LOCK_FILE).exists()
    assert list((tmp_path / "sweep").iterdir()) == []  # no staging file left behind


def test_a_second_sweep_into_a_running_ones_directory_is_refused_naming_it(tmp_path):
    live = LockOwner.this_process()  # the test process: alive, on this host
    _write_lock(tmp_path / "sweep", pid=live.pid, started=live.started, command="tsmoe sweep first.yaml")
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tsmoe.sweep.lock import acquire; from pathlib import Path; acquire(Path(sys.argv[1]))",
            str(tmp_path / "sweep"),
        ],
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0
    assert f"a sweep is running here already: pid {live.pid} on host {socket.gethostname()}" in other.stderr
    assert "(tsmoe sweep first.yaml)" in other.stderr
    assert json.loads((tmp_path / "sweep" / LOCK_FILE).read_text())["pid"] == live.pid  # left as it was


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_message(tmp_path, capsys):
    dead = _dead_pid()
    _write_lock(tmp_path / "sweep", pid=dead)
    owner = acquire(tmp_path / "sweep")
    assert f"taking over a stale sweep lock: pid {dead} on host" in capsys.readouterr().out
    assert json.loads((tmp_path / "sweep" / LOCK_FILE).read_text())["pid"] == owner.pid
    release(tmp_path / "sweep", owner)
    assert not (tmp_path / "sweep" / LOCK_FILE).exists()


def test_a_lock_whose_pid_now_belongs_to_a_later_process_is_stale(tmp_path, capsys):
    this = LockOwner.this_process()
    _write_lock(tmp_path / "sweep", pid=this.pid, started=this.started - 3600.0)
    assert acquire(tmp_path / "sweep").started == this.started
    assert "taking over a stale sweep lock" in capsys.readouterr().out


def test_a_lock_held_on_another_host_is_refused_with_how_to_remove_it(tmp_path):
    _write_lock(tmp_path / "sweep", host="gpu-node-7", pid=4242)
    with pytest.raises(
        SweepLocked, match=r"pid 4242 on host gpu-node-7 .*; if that sweep is gone, remove .*sweep\.lock"
    ):
        acquire(tmp_path / "sweep")


def test_a_damaged_lock_file_is_refused_naming_it(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / LOCK_FILE).write_text("{not json")
    with pytest.raises(SweepLocked, match=r"sweep\.lock: unreadable sweep lock"):
        acquire(tmp_path / "sweep")
