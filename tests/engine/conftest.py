"""Engine tests capture log events; afterwards structlog must be unconfigured again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_reset() -> Iterator[None]:
    """``capture_logs`` leaves structlog "configured" (later runs would print events to stdout)."""
    yield
    structlog.reset_defaults()
