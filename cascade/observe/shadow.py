"""Shadow sampling: after a sampled request is answered, call the tiers it did not call, in the
background, so the outcome log holds complete rows (what every tier would have answered).

Shadow work runs on its own small thread pool, after the caller has its result: it never delays,
alters or fails the answer. Its spend has its own cap (``cap``, per ``window``), separate from the
policy's budget and reported apart (``shadow_cost`` in the log, ``cascade_shadow_spend_usd_total``
in the metrics). Each tier's worst case is reserved before the call and settled with what it cost;
when the cap cannot cover the next tier the row is logged with ``shadow_skipped: cap``. At most
``max_pending`` rows wait at once (more are counted as dropped); :meth:`close` finishes the
pending work within ``timeout`` seconds and counts the rest as dropped.

The cap is kept in this process's memory; several processes each hold their own.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from cascade.logging import get_logger
from cascade.types import ZERO

Window = Literal["day", "month", "total"]


def _window_key(window: Window) -> str:
    now = datetime.now(UTC)
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m"), "total": ""}[window]


class Shadow:
    """Which requests are shadowed, the shadow cap, and the background pool (see the module docstring)."""

    def __init__(
        self,
        rate: float,
        *,
        cap: Decimal | None = None,
        window: Window = "day",
        workers: int = 2,
        max_pending: int = 1000,
        seed: int | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("shadow rate must be between 0 and 1")
        self.rate = rate
        self.cap = cap
        self.window = window
        self.max_pending = max(1, max_pending)
        self._rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cascade-shadow")
        self._lock = threading.Lock()
        self._key = _window_key(window)
        self._spent = ZERO
        self._reserved = ZERO
        self._pending: set[Future[None]] = set()
        self._closed = False
        self.spent_total = ZERO
        self.submitted = 0
        self.completed = 0
        self.dropped = 0
        self.skipped_cap = 0

    # -- sampling and the cap -----------------------------------------------------------------------

    def sample(self) -> bool:
        """Whether this request is shadowed (a ``rate`` chance)."""
        return self.rate > 0 and not self._closed and self._rng.random() < self.rate

    def _roll(self) -> None:
        key = _window_key(self.window)
        if key != self._key:
            self._key, self._spent = key, ZERO

    def reserve(self, amount: Decimal) -> bool:
        """Hold ``amount`` against the shadow cap; False when it does not fit."""
        with self._lock:
            self._roll()
            if self.cap is not None and self._spent + self._reserved + amount > self.cap:
                self.skipped_cap += 1
                return False
            self._reserved += amount
            return True

    def settle(self, reserved: Decimal, spent: Decimal) -> None:
        """Release a hold of ``reserved`` and charge what was ``spent``."""
        with self._lock:
            self._roll()
            self._reserved = max(ZERO, self._reserved - reserved)
            self._spent += spent
            self.spent_total += spent

    @property
    def spent(self) -> Decimal:
        """Shadow spend in the current window."""
        with self._lock:
            self._roll()
            return self._spent

    # -- the pool -----------------------------------------------------------------------------------

    def submit(self, job: Callable[[], None]) -> bool:
        """Run ``job`` in the background; False (counted as dropped) when too much is pending."""
        with self._lock:
            if self._closed or len(self._pending) >= self.max_pending:
                self.dropped += 1
                return False
            self.submitted += 1
            future = self._pool.submit(self._run, job)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return True

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # shadow work must never surface anywhere but its own log event
            get_logger().error("cascade.shadow_error", error=f"{type(exc).__name__}: {exc}")

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
            if not future.cancelled():
                self.completed += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self, timeout: float = 30.0) -> None:
        """Finish pending shadow work within ``timeout`` seconds; count what is left as dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
        from concurrent.futures import wait

        _, not_done = wait(pending, timeout=timeout)
        for f in not_done:
            if f.cancel():
                with self._lock:
                    self.dropped += 1
        self._pool.shutdown(wait=False, cancel_futures=True)
        log = get_logger()
        log.info(
            "cascade.shadow_closed",
            completed=self.completed,
            dropped=self.dropped,
            skipped_cap=self.skipped_cap,
            spent=str(self.spent_total),
        )


__all__ = ["Shadow", "Window"]
