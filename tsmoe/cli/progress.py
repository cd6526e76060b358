"""A one-line progress display for long commands, on stderr so stdout stays parseable."""

from __future__ import annotations

import sys
import time

# Work that finishes sooner than this shows no progress at all: a bar that flashes past is noise.
QUIET_SECONDS = 2.0


class Progress:
    """Call with (done, total): redraws one line on a terminal, prints every ~10% to a log otherwise."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.last_tenth = -1
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        finished = done >= total
        if elapsed < QUIET_SECONDS and not (finished and self.shown):
            return
        remaining = elapsed / fraction - elapsed if fraction > 0 else float("nan")
        line = f"{self.label}: {done}/{total} ({fraction:.0%}), {elapsed:.0f} s elapsed, ~{remaining:.0f} s left"
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if finished else ""))
            self.stream.flush()
            self.shown = True
        elif int(fraction * 10) > self.last_tenth:
            self.last_tenth = int(fraction * 10)
            print(line, file=self.stream, flush=True)
            self.shown = True
