"""Session pinning: once a session escalated to a tier, its next requests start there for a while.

An agent that asks many small questions in one session should not thrash between models (and a
stable model keeps the provider's prompt cache warm). :class:`SessionPins` remembers, per session
key, the furthest tier that answered; the pin lasts ``ttl`` seconds after the session's last
request (each request that uses or raises the pin renews it). The store is in memory, thread-safe
and bounded (the oldest sessions are forgotten first); :class:`RedisSessionPins` keeps the pins in
Redis instead (a policy whose ledger is Redis), so a session keeps its tier across workers and hosts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cascade.durations import parse_duration
from cascade.logging import get_logger


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


# GET-and-renew and raise-and-renew, each one atomic step (PX: milliseconds)
_START = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
"""
_NOTE = """
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local v = math.max(old, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"""


class RedisSessionPins:
    """:class:`SessionPins` kept in Redis (``{prefix}:pin:<session>``, expiring ``ttl`` after the
    session's last request), shared by every worker of a fleet. Pins only save money: when Redis
    does not answer a session starts at the first tier and a warning says so (the run goes on)."""

    def __init__(self, client: Any, ttl: float, *, prefix: str = "cascade") -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.prefix = prefix
        self._client = client
        self._start = client.register_script(_START)
        self._note = client.register_script(_NOTE)

    def _key(self, session: str) -> str:
        return f"{self.prefix}:pin:{session}"

    def start(self, session: str) -> int:
        """The tier index the session's next request starts at (0 when not pinned or expired)."""
        try:
            got = self._start(keys=[self._key(session)], args=[int(self.ttl * 1000)])
        except Exception as exc:  # redis.RedisError, and whatever the client raises when down
            _unavailable(exc)
            return 0
        try:
            return max(0, int(got)) if got is not None else 0
        except ValueError:  # not ours: a key someone else wrote
            return 0

    def note(self, session: str, index: int) -> None:
        """The session's request was answered by tier ``index``: pin there if it is further on."""
        if index <= 0:
            return
        try:
            self._note(keys=[self._key(session)], args=[index, int(self.ttl * 1000)])
        except Exception as exc:
            _unavailable(exc)

    def clear(self, session: str | None = None) -> None:
        """Forget one session's pin (or all of this prefix)."""
        if session is not None:
            self._client.delete(self._key(session))
            return
        for key in self._client.scan_iter(match=f"{self.prefix}:pin:*", count=1000):
            self._client.delete(key)

    def __len__(self) -> int:
        return sum(1 for _ in self._client.scan_iter(match=f"{self.prefix}:pin:*", count=1000))


Pins = SessionPins | RedisSessionPins
"""Either store: the observer needs ``start``, ``note``, ``clear`` and ``len``."""


def _unavailable(exc: Exception) -> None:
    get_logger().warning("cascade.session_pins_unavailable", error=type(exc).__name__)


__all__ = ["Pins", "RedisSessionPins", "SessionPins", "parse_duration"]
