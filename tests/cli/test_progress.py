"""Progress lines: silent for quick work, every tenth on a log, with counts and time left."""

from __future__ import annotations

import io

from tsmoe.cli import progress as progress_module
from tsmoe.cli.progress import Progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_quick_work_prints_nothing_and_long_work_prints_each_tenth(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    quick, log = Progress("quick", io.StringIO()), io.StringIO()
    for done in range(1, 11):
        quick(done, 10)
    assert quick.stream.getvalue() == ""

    slow = Progress("reading", log)
    for done in range(1, 101):
        clock.now = done * 0.1  # 10 s in all; the first 2 s stay quiet
        slow(done, 100)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("reading: 20/100 (20%), 2 s elapsed, ~8 s left")
    assert lines[-1].startswith("reading: 100/100 (100%)") and len(lines) == 9
