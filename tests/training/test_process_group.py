"""tsmoe's torch.distributed backend for Ray Train: only the training workers import torch."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from ray.exceptions import ActorDiedError, GetTimeoutError

from tests.training.test_launch import _tiny_run
from tsmoe.training import process_group

BUILD = """
import pickle, sys
from pathlib import Path
from tsmoe.config import load_run_config
from tsmoe.training.launch import build_torch_trainer
trainer = build_torch_trainer(load_run_config(sys.argv[1]), Path(sys.argv[2]), workers=2, use_gpu=False,
                              cpus_per_worker=1)
Path(sys.argv[3]).write_bytes(pickle.dumps((trainer.backend_config, trainer.train_loop_per_worker)))
print("torch" in sys.modules)
"""
# What Ray Train's controller does with them: unpickle, then build the backend.
READ = """
import pickle, sys
from pathlib import Path
config, train_function = pickle.loads(Path(sys.argv[1]).read_bytes())
backend = config.backend_cls()
print(config.backend, config.framework.value, train_function.__name__, "torch" in sys.modules)
"""


def _python(code: str, *arguments) -> str:
    done = subprocess.run([sys.executable, "-c", code, *map(str, arguments)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_building_the_trainer_and_reading_its_backend_import_no_torch(tmp_path):
    run = _tiny_run(tmp_path)
    config = tmp_path / "tiny.yaml"
    pickled = tmp_path / "trainer.pickle"
    # A sweep trial's driver builds the trainer; Ray Train's controller reads its backend and worker function.
    assert _python(BUILD, config, tmp_path / "run", pickled) == "False"
    assert _python(READ, pickled) == "gloo torch train_worker False"
    assert run.data.path.is_dir()


# A worker on a machine without CUDA: the CPU, without Ray's torch module (a fifth of a second of every trial).
DEVICE = """
import sys
from tsmoe.training.process_group import worker_device
print(worker_device(), "ray.train.torch" in sys.modules)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA")
def test_a_worker_without_cuda_trains_on_the_cpu_without_importing_ray_train_torch():
    assert _python(DEVICE) == "cpu False"


class _WorkerGroup:
    """What the backend's shutdown sees of Ray Train's worker group."""

    def __len__(self) -> int:
        return 2

    def execute_async(self, function, **arguments):
        self.called = (function.__name__, arguments)
        return ["reference"]


def _shut_down(monkeypatch, caplog, error: Exception) -> _WorkerGroup:
    def get(references, timeout):
        raise error

    monkeypatch.setattr(process_group.ray, "get", get)
    group = _WorkerGroup()
    with caplog.at_level(logging.DEBUG, logger=process_group.__name__):
        process_group._ProcessGroupBackend().on_shutdown(group, process_group.ProcessGroupConfig())
    return group


def test_shutdown_passes_over_a_worker_that_has_exited(monkeypatch, caplog):
    # A trial stopped by early stopping: Train shuts its workers down after Tune ended the trial.
    group = _shut_down(monkeypatch, caplog, ActorDiedError())
    assert group.called == ("_leave_process_group", {"destroy": True})
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]


def test_shutdown_warns_when_the_workers_do_not_leave_in_time(monkeypatch, caplog):
    _shut_down(monkeypatch, caplog, GetTimeoutError())
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert "did not leave the process group" in caplog.text
