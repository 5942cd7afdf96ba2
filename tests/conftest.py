"""Shared fixtures. Tests that read ``../shared/data`` take ``data_dir`` and skip without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from benchmarks.data_path import default_data

ROOT = Path(__file__).resolve().parent.parent
DATA = default_data()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The recorded-outcomes folder; the test is skipped where it is absent."""
    if not (DATA / "README.md").exists():
        pytest.skip(f"recorded outcomes not found at {DATA} (set CASCADE_DATA)")
    return DATA


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's default ledger file from tests."""
    monkeypatch.setenv("CASCADE_LEDGER", str(tmp_path / "ledger.sqlite3"))


@pytest.fixture(autouse=True)
def _structlog_reset() -> Iterator[None]:
    """``structlog.testing.capture_logs`` leaves structlog "configured": later tests would print events."""
    yield
    if structlog.is_configured():
        structlog.reset_defaults()
