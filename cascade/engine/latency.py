"""When a tier hedges: :class:`HedgeAfter` (a policy's ``hedge: {after: ...}``, seconds or a
quantile) and :class:`Latencies`, each tier's recently observed call latencies, kept in memory per
:class:`~cascade.engine.cascade.Cascade` for ``after: pNN``."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from cascade.durations import parse_hedge_after

WINDOW = 128  # latencies kept per tier (the newest)
WARMUP = 20  # latencies needed before ``after: pNN`` hedges


@dataclass(frozen=True, slots=True)
class HedgeAfter:
    """When a tier hedges: after ``seconds``, or at the ``quantile`` (0-1) of its observed latency."""

    seconds: float | None = None
    quantile: float | None = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.quantile is None):
            raise ValueError("hedge: give either seconds or a quantile")

    @classmethod
    def parse(cls, after: str | float) -> HedgeAfter:
        """``1.5``, ``"1.5s"``, ``"800ms"`` (seconds) or ``"p90"`` (a quantile of observed latency)."""
        seconds, quantile = parse_hedge_after(after)
        return cls(seconds=seconds, quantile=quantile)

    def delay(self, tier: str, latencies: Latencies) -> float | None:
        """Seconds to wait before hedging, or None (not enough latencies observed yet)."""
        if self.seconds is not None:
            return self.seconds
        assert self.quantile is not None
        return latencies.quantile(tier, self.quantile)

    def __str__(self) -> str:
        return f"{self.seconds:g}s" if self.seconds is not None else f"p{self.quantile * 100:g}"  # type: ignore[operator]


class Latencies:
    """Each tier's recent call latencies (a fixed-size window), for ``after: pNN``. Thread-safe."""

    def __init__(self, window: int = WINDOW, warmup: int = WARMUP) -> None:
        self.window, self.warmup = window, warmup
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def observe(self, tier: str, seconds: float) -> None:
        with self._lock:
            self._seen.setdefault(tier, deque(maxlen=self.window)).append(seconds)

    def quantile(self, tier: str, q: float) -> float | None:
        """The ``q`` quantile (nearest rank) of the tier's window; None before ``warmup`` calls."""
        with self._lock:
            seen = sorted(self._seen.get(tier, ()))
        if len(seen) < self.warmup:
            return None
        return seen[min(len(seen) - 1, max(0, math.ceil(q * len(seen)) - 1))]


__all__ = ["WARMUP", "WINDOW", "HedgeAfter", "Latencies"]
