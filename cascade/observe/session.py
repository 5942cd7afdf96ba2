"""Session pinning: once a session escalated to a tier, its next requests start there for a while.

An agent that asks many small questions in one session should not thrash between models (and a
stable model keeps the provider's prompt cache warm). :class:`SessionPins` remembers, per session
key, the furthest tier that answered; the pin lasts ``ttl`` seconds after the session's last
request (each request that uses or raises the pin renews it). The store is in memory, thread-safe
and bounded (the oldest sessions are forgotten first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from cascade.durations import parse_duration


class SessionPins:
    """Per-session start tiers with a sliding TTL (see the module docstring)."""

    def __init__(
        self, ttl: float, *, max_sessions: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.max_sessions = max(1, max_sessions)
        self._clock = clock
        self._pins: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, session: str) -> int:
        """The tier index the session's next request starts at (0 when not pinned or expired)."""
        now = self._clock()
        with self._lock:
            pin = self._pins.get(session)
            if pin is None:
                return 0
            index, expires = pin
            if expires <= now:
                del self._pins[session]
                return 0
            self._pins[session] = (index, now + self.ttl)
            self._pins.move_to_end(session)
            return index

    def note(self, session: str, index: int) -> None:
        """The session's request was answered by tier ``index``: pin there if it is further on."""
        if index <= 0:
            return
        now = self._clock()
        with self._lock:
            old = self._pins.get(session)
            if old is not None and old[1] > now:
                index = max(index, old[0])
            self._pins[session] = (index, now + self.ttl)
            self._pins.move_to_end(session)
            while len(self._pins) > self.max_sessions:
                self._pins.popitem(last=False)

    def clear(self, session: str | None = None) -> None:
        """Forget one session's pin (or all)."""
        with self._lock:
            if session is None:
                self._pins.clear()
            else:
                self._pins.pop(session, None)

    def __len__(self) -> int:
        return len(self._pins)


__all__ = ["SessionPins", "parse_duration"]
