"""One sweep at a time in a sweep directory: a lock file that names its owner.

`tsmoe sweep` holds SWEEP_DIR/sweep.lock while it runs. The file records the owner's host, pid, the
start time of that process and the command line, and is created in one step (written under a unique
name, then hard-linked into place, which fails if the lock exists; this also holds on NFS, where
O_EXCL is not reliable). A second sweep into the same directory is refused at once with the owner named.

A lock whose owner died without releasing it (`kill -9`, a power cut) is stale: on the owner's own host
a dead pid (or a pid now used by a process started later) is detected, the lock is taken over and a
message says so. A lock from another host cannot be checked from here; the refusal says which host holds
it and how to remove the file once that sweep is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LOCK_FILE = "sweep.lock"
# Two clocks read the same process's start time: what the owner wrote and what psutil reads now.
START_TIME_TOLERANCE_S = 1.0


class SweepLocked(FileExistsError):
    """Another `tsmoe sweep` is running in this directory (or its lock cannot be checked from here)."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a sweep directory's lock."""

    host: str
    pid: int
    started: float  # the owner process's start time (seconds since the epoch), to tell a reused pid
    command: str

    @classmethod
    def this_process(cls) -> LockOwner:
        """The owner record of the running process."""
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(), " ".join(sys.argv))

    def describe(self) -> str:
        """The owner as a message names it."""
        return f"pid {self.pid} on host {self.host} ({self.command})"

    def is_dead(self) -> bool:
        """Whether the owner is known to have exited: only decidable on its own host."""
        if self.host != socket.gethostname():
            return False
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started) > START_TIME_TOLERANCE_S
        except psutil.NoSuchProcess:
            return True
        except psutil.AccessDenied:
            return False  # another user's live process holds the pid


def _read_owner(path: Path) -> LockOwner | None:
    """The owner a lock file names; None when the file is gone or unreadable."""
    try:
        values = json.loads(path.read_text())
        return LockOwner(str(values["host"]), int(values["pid"]), float(values["started"]), str(values["command"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        # Created in one step, a lock is never half written by tsmoe; a damaged one needs a person.
        raise SweepLocked(f"{path}: unreadable sweep lock ({error}); remove it if no sweep runs here") from None


def _try_create(path: Path, owner: LockOwner) -> bool:
    """Create the lock file holding `owner`; False when a lock is already there."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_text(json.dumps(asdict(owner)) + "\n")
    try:
        os.link(staging, path)
        return True
    except FileExistsError:
        return False
    finally:
        staging.unlink()


def _take_over(path: Path, stale: LockOwner) -> bool:
    """Move a stale lock aside; False when another process changed the lock meanwhile."""
    aside = path.with_name(f".{path.name}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another sweep took it over first; the next attempt to create decides
    if _read_owner(aside) != stale:
        # A new owner's lock was moved instead of the stale one: put it back and let it win.
        os.rename(aside, path)
        return False
    aside.unlink()
    return True


def acquire(directory: Path, attempts: int = 5) -> LockOwner:
    """Take the sweep directory's lock for this process, taking over a stale one; refuses a live owner."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    owner = LockOwner.this_process()
    for _ in range(attempts):
        if _try_create(path, owner):
            return owner
        holder = _read_owner(path)
        if holder is None:
            continue  # released between the two steps
        if holder.pid == owner.pid and holder.host == owner.host and holder.started == owner.started:
            raise SweepLocked(f"{directory}: this process holds the sweep lock already ({path})")
        if not holder.is_dead():
            where = "" if holder.host == owner.host else f"; if that sweep is gone, remove {path}"
            raise SweepLocked(f"{directory}: a sweep is running here already: {holder.describe()}{where}")
        if _take_over(path, holder):
            print(f"{path}: taking over a stale sweep lock: {holder.describe()} is no longer running")
    raise SweepLocked(f"{directory}: could not take the sweep lock {path}: other sweeps keep taking it")


def release(directory: Path, owner: LockOwner) -> None:
    """Remove the lock if this owner still holds it."""
    path = directory / LOCK_FILE
    if _read_owner(path) == owner:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sweep_lock(directory: str | Path) -> Iterator[LockOwner]:
    """Hold the sweep directory's lock while the block runs."""
    directory = Path(directory)
    owner = acquire(directory)
    try:
        yield owner
    finally:
        release(directory, owner)
