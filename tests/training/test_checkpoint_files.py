"""Checkpoints under faults: a full disk while one is written, one cut short, one copied only in part."""

from __future__ import annotations

import errno
import shutil

import pytest
import torch

from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.data.store import DiskFullError
from tsmoe.training.checkpoint_files import (
    MANIFEST_FILE,
    checkpoint_problem,
    usable_checkpoint,
    write_checkpoint,
)
from tsmoe.training.launch import RUN_NAME, latest_checkpoint
from tsmoe.training.strategy import STATE_FILE
from tsmoe.training.trainer import Trainer


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run's checkpoints after epochs 1 and 2, and the parameters each holds."""
    root = tmp_path_factory.mktemp("checkpoints")
    run = tiny_run(synthetic_data(root / "data"))
    trainer = Trainer(run)
    saved = {}
    for epoch in (1, 2):
        trainer.train_epoch()
        directory = root / "out" / RUN_NAME / f"checkpoint_{epoch - 1:06d}"
        write_checkpoint(trainer, directory)
        saved[epoch] = (directory, {name: value.clone() for name, value in trainer.module.state_dict().items()})
    return run, saved


def _copy(saved, epoch, target):
    directory = target / RUN_NAME / saved[epoch][0].name
    shutil.copytree(saved[epoch][0], directory)
    return directory


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _loads_as_saved(run, directory, parameters):
    trainer = Trainer(run)
    trainer.load_checkpoint(directory)
    for name, value in trainer.module.state_dict().items():
        torch.testing.assert_close(value, parameters[name], rtol=0, atol=0)
    return trainer.epoch


def test_an_intact_checkpoint_has_a_manifest_and_no_problem(two_checkpoints):
    _, saved = two_checkpoints
    for directory, _ in saved.values():
        assert (directory / MANIFEST_FILE).is_file()
        assert checkpoint_problem(directory) is None


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_the_previous_one_still_loads(
    two_checkpoints, tmp_path, monkeypatch
):
    run, saved = two_checkpoints
    trainer = Trainer(run)
    trainer.load_checkpoint(saved[2][0])
    trainer.train_epoch()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFullError) as raised:
        write_checkpoint(trainer, tmp_path / "checkpoint_000002")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'checkpoint_000002'}: no space left on the device while writing the ")
    assert "checkpoint of epoch 3 (rank 0); the run's earlier checkpoints are kept" in message
    assert "missing" in checkpoint_problem(tmp_path / "checkpoint_000002")  # never taken for a checkpoint
    monkeypatch.undo()
    assert _loads_as_saved(run, saved[2][0], saved[2][1]) == 2


@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_truncated_checkpoint_is_refused_naming_the_file_and_the_earlier_one_is_used(
    two_checkpoints, tmp_path, capsys, with_manifest
):
    run, saved = two_checkpoints
    earlier, latest = _copy(saved, 1, tmp_path), _copy(saved, 2, tmp_path)
    if not with_manifest:  # a checkpoint of an older tsmoe: its files' own structure gives it away
        (latest / MANIFEST_FILE).unlink()
    _truncate(latest / STATE_FILE)
    (tmp_path / RUN_NAME / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray Train's, not a checkpoint
    problem = checkpoint_problem(latest)
    assert problem.startswith(f"{latest / STATE_FILE}: truncated")

    # The driver's choice (`tsmoe train` and sweep trials): the latest intact checkpoint, the broken one named.
    assert latest_checkpoint(tmp_path) == earlier
    assert capsys.readouterr().out.splitlines() == [f"skipping a broken checkpoint: {problem}"]
    # A worker offered the broken one by Ray falls back to it, saying so; nothing finished is lost.
    messages = []
    assert usable_checkpoint(latest, earlier, log=messages.append) == earlier
    assert messages == [f"checkpoint refused: {problem}; resuming from the earlier checkpoint {earlier}"]
    assert _loads_as_saved(run, earlier, saved[1][1]) == 1
    # Without an intact one to fall back to, the run is refused rather than silently restarted.
    with pytest.raises(ValueError, match=rf"checkpoint refused: {latest / STATE_FILE}: truncated.*remove {latest}"):
        usable_checkpoint(latest, None)


def test_a_checkpoint_copied_only_in_part_is_not_used(two_checkpoints, tmp_path):
    _, saved = two_checkpoints
    latest = _copy(saved, 2, tmp_path)
    _truncate(latest / "model" / "model.safetensors", keep=0.9)
    assert checkpoint_problem(latest).startswith(f"{latest / 'model' / 'model.safetensors'}: truncated")
    (latest / "model" / "model.safetensors").unlink()
    assert (
        checkpoint_problem(latest) == f"{latest / 'model' / 'model.safetensors'}: missing, the checkpoint is incomplete"
    )
    assert latest_checkpoint(tmp_path) is None
