"""An in-process ledger (thread-safe; state is lost when the process ends)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from cascade.budget.buckets import hold_buckets, refusal
from cascade.types import ZERO

KEEP_S = 86400.0  # settled ids are remembered a day: a late or retried settle still charges once


class MemoryLedger:
    """Holds spend in memory. Suits one process; use :class:`SQLiteLedger` across processes."""

    in_process = True  # nothing outside this process settles its holds: waiters need no polling

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, Decimal] = defaultdict(lambda: ZERO)
        self._held: dict[str, Decimal] = defaultdict(lambda: ZERO)
        # hold id -> (buckets, amount, expires_at, still counted)
        self._holds: dict[str, tuple[tuple[str, ...], Decimal, float, bool]] = {}
        self._next_expiry = math.inf
        self._ids = itertools.count(1)
        # settled hold ids -> when (kept KEEP_S): a retried settle is a no-op, as in SQLite and Redis
        self._settled: dict[str, float] = {}
        self._purge_at = time.monotonic() + KEEP_S

    def _expire(self, now: float) -> None:
        """Stop counting expired holds; they stay so a late settle still charges."""
        if now < self._next_expiry:
            return
        self._next_expiry = math.inf
        for hid, (buckets, amount, expires, live) in self._holds.items():
            if live and expires < now:
                self._holds[hid] = (buckets, amount, expires, False)
                for b in buckets:
                    self._held[b] -= amount
            elif live:
                self._next_expiry = min(self._next_expiry, expires)

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str:
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            for bucket, limit in caps:
                used = self._spent[bucket] + self._held[bucket]
                if used + amount > limit:
                    raise refusal(bucket, limit, amount, used, self._spent[bucket])
            hid = str(next(self._ids))
            buckets = tuple(b for b, _ in caps)
            for b in buckets:
                self._held[b] += amount
            self._holds[hid] = (buckets, amount, now + ttl, True)
            self._next_expiry = min(self._next_expiry, now + ttl)
            return hid

    def settle(self, hold_id: str, actual: Decimal) -> None:
        """Charge ``actual`` to the hold's buckets once (a retried settle is a no-op)."""
        now = time.monotonic()
        with self._lock:
            if hold_id in self._settled:
                return
            if now >= self._purge_at:  # forget settlements older than KEEP_S (bounded memory)
                self._settled = {h: t for h, t in self._settled.items() if t >= now - KEEP_S}
                self._purge_at = now + KEEP_S
            held = self._holds.pop(hold_id, None)
            if held is None:  # a journaled settlement (fail_open) names its buckets in its id
                named = hold_buckets(hold_id)
                if named is None:
                    raise KeyError(f"unknown hold {hold_id!r}")
                held = (named, ZERO, 0.0, False)
            buckets, amount, _, live = held
            actual = max(actual, ZERO)
            self._settled[hold_id] = now
            for bucket in buckets:
                if live:
                    self._held[bucket] -= amount
                self._spent[bucket] += actual

    def release(self, hold_id: str) -> None:
        self.settle(hold_id, ZERO)

    def try_reserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str | None:
        return self.reserve(caps, amount, ttl=ttl)  # in memory: never blocks

    def try_settle(self, hold_id: str, actual: Decimal) -> bool:
        self.settle(hold_id, actual)
        return True

    async def areserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str:
        return self.reserve(caps, amount, ttl=ttl)  # in memory: never blocks

    async def asettle(self, hold_id: str, actual: Decimal) -> None:
        self.settle(hold_id, actual)

    def spent(self, bucket_key: str) -> Decimal:
        with self._lock:
            return self._spent[bucket_key]

    def held(self, bucket_key: str) -> Decimal:
        with self._lock:
            self._expire(time.monotonic())
            return self._held[bucket_key]
