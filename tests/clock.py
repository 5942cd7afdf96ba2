"""The tests' clock for window buckets: never a literal date that ages.

Ledgers expire a window's spend some time after the window ends, so a test that names a fixed day
passes until that day is old enough and then fails (main was red from 2026-12-01 for that reason).
Tests build day and month buckets from :func:`now`. ``CASCADE_TEST_DAYS_AHEAD`` moves this clock
forward (``.ci/run`` runs the ledger tests a second time a year ahead), and
``tests/test_no_literal_dates.py`` refuses a literal window date in any test file.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta


def now() -> datetime:
    """The current UTC time, moved ``$CASCADE_TEST_DAYS_AHEAD`` days forward when that is set."""
    return datetime.now(UTC) + timedelta(days=int(os.environ.get("CASCADE_TEST_DAYS_AHEAD", "0") or 0))


def day_bucket(policy: str = "p", at: datetime | None = None) -> str:
    """The policy's day bucket for ``at`` (default: :func:`now`)."""
    return f"policy:{policy}|day:{(at or now()):%Y-%m-%d}"
