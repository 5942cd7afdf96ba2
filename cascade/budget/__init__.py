"""Spend caps: the per-request cap, window caps and the ledgers that hold them.

A window cap becomes a *bucket* per scope and window period, for example
``policy:support|day:2026-11-23`` or ``key:support:tenant-42|month:2026-11``. The engine reserves
the worst-case cost of each tier call (and its scorer) on every bucket before the call and
settles the real cost after it, so concurrent runs cannot overshoot a cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from cascade.protocols import Ledger

Window = Literal["day", "month", "total"]


@dataclass(frozen=True, slots=True)
class Cap:
    limit: Decimal
    window: Window
    scope: Literal["policy", "key"] = "policy"


def _period(window: Window, now: datetime) -> str:
    if window == "day":
        return f"day:{now:%Y-%m-%d}"
    if window == "month":
        return f"month:{now:%Y-%m}"
    return "total"


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget settings of a cascade."""

    per_request: Decimal | None = None
    caps: tuple[Cap, ...] = ()
    on_exceeded: Literal["stop", "raise"] = "stop"
    ledger: Ledger | None = None
    hold_ttl: float = 600.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.caps and self.ledger is None:
            from cascade.budget.memory import MemoryLedger

            # caps must never be silently ignored: without a ledger they live in this process
            object.__setattr__(self, "ledger", MemoryLedger())

    def buckets(self, policy: str, key: str | None) -> Sequence[tuple[str, Decimal]]:
        """The (bucket, limit) pairs a request with caller ``key`` is charged against now."""
        if not self.caps:
            return ()
        now = self.clock()
        out = []
        for cap in self.caps:
            scope = f"policy:{policy}" if cap.scope == "policy" else f"key:{policy}:{key or 'anonymous'}"
            out.append((f"{scope}|{_period(cap.window, now)}", cap.limit))
        return out

    # -- ledger access: the engine goes through these, never through the ledger directly ---------

    def reserve(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str:
        """Hold ``amount`` on every bucket; raises :class:`~cascade.errors.BudgetExceededError`."""
        assert self.ledger is not None
        return self.ledger.reserve(buckets, amount, ttl=self.hold_ttl)

    async def areserve(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str:
        """Async :meth:`reserve`: never blocks the event loop on the ledger."""
        assert self.ledger is not None
        native = getattr(self.ledger, "areserve", None)
        if native is not None:
            hold: str = await native(buckets, amount, ttl=self.hold_ttl)
            return hold
        return await asyncio.to_thread(self.ledger.reserve, buckets, amount, ttl=self.hold_ttl)

    def settle(self, hold: str, actual: Decimal) -> None:
        """Replace ``hold`` by what was really spent."""
        assert self.ledger is not None
        self.ledger.settle(hold, actual)

    async def asettle(self, hold: str, actual: Decimal) -> None:
        """Async :meth:`settle`."""
        assert self.ledger is not None
        native = getattr(self.ledger, "asettle", None)
        if native is not None:
            await native(hold, actual)
            return
        await asyncio.to_thread(self.ledger.settle, hold, actual)
