"""The shared fixtures' own rules: a missing parity fixture skips locally and fails in CI."""

from __future__ import annotations

import pytest

from tests.conftest import load_parity_fixture


def test_a_missing_parity_fixture_skips_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing\.pt not found"):
        load_parity_fixture(tmp_path / "missing.pt")


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_a_missing_parity_fixture_fails_the_run_in_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true, so the parity tests may not be skipped"):
        load_parity_fixture(tmp_path / "missing.pt")
