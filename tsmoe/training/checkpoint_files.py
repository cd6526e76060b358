"""Checkpoint directories that are complete or recognised as broken: written with a manifest, checked before use.

A checkpoint can end up incomplete in several ways during a long run: the disk fills while it is
written, Ray's copy into the run's storage is cut off, a file is truncated later. The trainer writes its
files; `write_checkpoint` then records every file's size in `manifest.json`, and turns a full disk into
one line that says what is kept. `checkpoint_problem` finds what is wrong with a checkpoint directory
(a file missing or shorter than the manifest says, a torch or safetensors file cut short) and names the
file, so a resume uses the latest intact checkpoint or refuses with the file named, and never loads half
a checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tsmoe.data.store import DiskFullError

MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "trainer_state.json"  # epoch and metrics, readable without torch
MODEL_DIR = "model"  # the model in the reference format, adapters merged
# Beside the model, when the run's evaluation section has alternatives: the detector validation chose.
CHOSEN_DETECTOR_FILE = "evaluation.yaml"
# What every tsmoe checkpoint holds, whatever the strategy (written by rank 0).
REQUIRED_FILES = (SUMMARY_FILE, f"{MODEL_DIR}/config.json")


class CheckpointWriter(Protocol):
    """The part of the trainer that writes a checkpoint."""

    epoch: int
    rank: int

    def save_checkpoint(self, directory: str | Path) -> None: ...


def write_checkpoint(trainer: CheckpointWriter, directory: str | Path) -> None:
    """Write the trainer's checkpoint into `directory`, then its manifest; a full disk raises a
    one-line DiskFullError naming the epoch and saying that the earlier checkpoints are kept."""
    directory = Path(directory)
    try:
        trainer.save_checkpoint(directory)
        if trainer.rank == 0:
            write_manifest(directory)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise DiskFullError(
            f"{directory}: no space left on the device while writing the checkpoint of epoch {trainer.epoch} "
            f"(rank {trainer.rank}); the run's earlier checkpoints are kept and intact: free space and rerun "
            f"to resume from the latest"
        ) from None


def write_manifest(directory: Path) -> None:
    """Record the size of every file of the checkpoint in `directory` (written last, atomically)."""
    sizes = {
        path.relative_to(directory).as_posix(): path.stat().st_size
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    staging = directory / (MANIFEST_FILE + ".tmp")
    staging.write_text(json.dumps({"files": sizes}, indent=1) + "\n")
    os.replace(staging, directory / MANIFEST_FILE)


def checkpoint_problem(directory: str | Path) -> str | None:
    """What makes the checkpoint in `directory` unusable, naming the file; None when it is intact.

    Checkpoints written before manifests existed are checked by their files' own structure only."""
    directory = Path(directory)
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            return f"{directory / name}: missing, the checkpoint is incomplete"
    manifest = directory / MANIFEST_FILE
    if manifest.is_file():
        try:
            sizes = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError) as error:
            return f"{manifest}: unreadable ({error})"
        for name, size in sizes.items():
            path = directory / name
            if not path.is_file():
                return f"{path}: missing, the checkpoint is incomplete"
            found = path.stat().st_size
            if found != size:
                return f"{path}: truncated or altered, {found} bytes where {size} were written"
    for path in sorted(directory.rglob("*")):
        problem = _file_problem(path) if path.is_file() else None
        if problem:
            return problem
    return None


def _file_problem(path: Path) -> str | None:
    """A torch file (a zip archive) or a safetensors file that is cut short."""
    if path.suffix in (".pt", ".pth"):
        try:
            with zipfile.ZipFile(path) as archive:  # reads the central directory at the end of the file
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            return f"{path}: truncated or damaged torch file ({error})"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            # The header is all the check reads; numpy's reader does not import torch (the sweep's trial
            # driver checks checkpoints and never needs torch otherwise).
            with safe_open(str(path), framework="numpy") as tensors:
                tensors.keys()
        except Exception as error:  # safetensors' own error type; it checks that the data covers every tensor
            return f"{path}: truncated or damaged safetensors file ({error})"
    return None


def usable_checkpoint(
    offered: str | Path | None, fallback: str | Path | None, log: Callable[[str], None] | None = print
) -> Path | None:
    """The checkpoint a resuming worker loads: `offered` (Ray's latest) when intact, else `fallback` (the
    latest intact one the driver found) with a message naming the broken file. With no intact fallback,
    refuses with the file named rather than start the run again from scratch."""
    if offered is None:
        return Path(fallback) if fallback else None
    problem = checkpoint_problem(offered)
    if problem is None:
        return Path(offered)
    if fallback and Path(fallback).resolve() != Path(offered).resolve() and checkpoint_problem(fallback) is None:
        if log is not None:
            log(f"checkpoint refused: {problem}; resuming from the earlier checkpoint {fallback}")
        return Path(fallback)
    raise ValueError(
        f"checkpoint refused: {problem}; no earlier intact checkpoint to resume from: remove {offered} "
        f"to start this run again"
    )
