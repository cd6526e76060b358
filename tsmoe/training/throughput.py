"""Throughput figures as docs/design.md section 4 defines them, and model FLOP utilisation on GPUs."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import torch

# Dense bf16 tensor-core peaks (FLOP/s) of common training GPUs, by a substring of the device name.
BFLOAT16_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "A6000": 155e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The GPU's bf16 peak, or None when unknown (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in BFLOAT16_PEAK_FLOPS.items() if key in name), None)


def peak_memory_mib(device: torch.device) -> float:
    """Peak allocated GPU memory, or on CPU the process's peak resident set, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class EpochClock:
    """Times an epoch's training steps, leaving out warm-up steps and everything outside the steps."""

    warmup_steps: int = 0
    steps: int = 0  # optimizer steps measured
    micro_batches: int = 0
    samples: int = 0  # segments on this rank
    tokens: int = 0  # points x channels on this rank
    step_seconds: float = 0.0
    wait_seconds: float = 0.0
    _skipped: int = field(default=0, repr=False)

    def add_step(self, seconds: float, waited: float, samples: int, tokens: int, micro_batches: int) -> None:
        """Record one optimizer step: its wall time, time spent waiting for data, and what it consumed."""
        if self._skipped < self.warmup_steps:
            self._skipped += 1
            return
        self.steps += 1
        self.micro_batches += micro_batches
        self.step_seconds += seconds
        self.wait_seconds += waited
        self.samples += samples
        self.tokens += tokens

    def figures(self, world_size: int) -> dict[str, float]:
        """it_s, samples_s and tokens_s over all ranks, data_wait_frac, mean step time, and the steps and
        seconds they were measured over."""
        if self.steps == 0 or self.step_seconds <= 0:
            nan = float("nan")
            return {
                "it_s": nan,
                "samples_s": nan,
                "tokens_s": nan,
                "data_wait_frac": nan,
                "step_time_s": nan,
                "measured_steps": 0,
                "measured_s": 0.0,
            }
        return {
            "measured_steps": self.steps,  # what the rates below are over, to combine epochs
            "measured_s": self.step_seconds,
            "it_s": self.steps / self.step_seconds,
            "samples_s": self.samples * world_size / self.step_seconds,
            "tokens_s": self.tokens * world_size / self.step_seconds,
            "data_wait_frac": self.wait_seconds / self.step_seconds,
            "step_time_s": self.step_seconds / self.steps,
        }


def now() -> float:
    """A monotonic clock in seconds."""
    return time.perf_counter()
