"""Shared test fixtures: paths to ../shared and small seeded helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
PARITY_FIXTURE = SHARED / "fixtures" / "timemoe_parity_tiny.pt"


def running_in_ci() -> bool:
    """Whether the tests run in CI (`CI=true`, as CI services set it), where nothing may be skipped quietly."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def load_parity_fixture(path: Path = PARITY_FIXTURE) -> dict:
    """The reference Time-MoE outputs for a tiny random-init model (see docs/design.md section 2).

    Without ../shared the parity tests skip on a developer's machine; in CI they fail, so that a CI run
    without the fixture can never pass without having checked parity.
    """
    if not path.is_file():
        message = f"{path} not found (../shared must sit beside the repository)"
        if running_in_ci():
            pytest.fail(f"{message}; CI=true, so the parity tests may not be skipped", pytrace=False)
        pytest.skip(message)
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    """The parity fixture, loaded once per session."""
    return load_parity_fixture()


def pytest_configure(config):
    """No tqdm monitor thread in the test process: a daemon thread that wakes while the interpreter shuts down
    can crash it after every test has passed (CI once ended with a segmentation fault past the summary)."""
    try:
        import tqdm
    except ImportError:
        return
    tqdm.tqdm.monitor_interval = 0


def pytest_sessionfinish(session, exitstatus):
    """Stop what libraries left running in this process (a Ray driver, inductor's compile workers) while the
    interpreter is whole, instead of in their exit handlers during shutdown."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    if "torch._inductor.async_compile" in sys.modules:
        from torch._inductor.async_compile import shutdown_compile_workers

        shutdown_compile_workers()
