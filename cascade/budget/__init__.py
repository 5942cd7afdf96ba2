"""Spend caps: the per-request cap, window caps and the ledgers that hold them.

A window cap becomes a *bucket* per scope and window period, for example
``policy:support|day:2026-11-23`` or ``key:support:tenant-42|month:2026-11``. The engine reserves
the worst-case cost of each tier call (and its scorer) on every bucket before the call and
settles the real cost after it, so concurrent runs cannot overshoot a cap.

The engine reaches the ledger only through :meth:`Budget.reserve` / :meth:`Budget.areserve` /
:meth:`Budget.settle` / :meth:`Budget.asettle`, which own the policy around it: waiting for room
(``on_exceeded: wait``), what happens when the ledger is unreachable (``on_ledger_error``), and the
local journal of spend that could not be written yet.
"""

from __future__ import annotations

from cascade.budget.buckets import (
    MAX_NANO,
    NANO,
    Cap,
    OnExceeded,
    OnLedgerError,
    Window,
    hold_buckets,
    host_now,
    new_hold_id,
    refusal,
    reserve_nano,
    to_nano,
    window_end,
)
from cascade.budget.budget import Budget, hold_ttl_problem

__all__ = [
    "MAX_NANO",
    "NANO",
    "Budget",
    "Cap",
    "OnExceeded",
    "OnLedgerError",
    "Window",
    "hold_buckets",
    "hold_ttl_problem",
    "host_now",
    "new_hold_id",
    "refusal",
    "reserve_nano",
    "to_nano",
    "window_end",
]
