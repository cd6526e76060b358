"""Shared test fixtures: paths to ../shared and small seeded helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
PARITY_FIXTURE = SHARED / "fixtures" / "timemoe_parity_tiny.pt"


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    """The reference Time-MoE outputs for a tiny random-init model (see DESIGN.md section 3)."""
    if not PARITY_FIXTURE.is_file():
        pytest.skip(f"{PARITY_FIXTURE} not found (../shared must sit beside the repository)")
    return torch.load(PARITY_FIXTURE, weights_only=False)
