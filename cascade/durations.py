"""Durations in policies and on the command line: ``90``, ``"45s"``, ``"30m"``, ``"2h"``, ``"1d"``; a
hedge's ``after`` (``1.5s``, ``800ms``, ``p90``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``90``, ``"45s"``, ``"30m"``, ``"2h"`` or ``"1d"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"a duration like 30m, 2h or 90 (seconds), not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"a duration like 30m, 2h or 90 (seconds), not {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


_HEDGE_AFTER = re.compile(r"\s*(?:p(\d{1,2}(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(s|ms)?)\s*")


def parse_hedge_after(after: str | float) -> tuple[float | None, float | None]:
    """A hedge's ``after``: ``1.5``, ``"1.5s"``, ``"800ms"`` -> (seconds, None); ``"p90"`` -> (None,
    0.9), a quantile of the tier's observed latency. ValueError with a one-line reason otherwise."""
    if isinstance(after, bool):
        raise ValueError("after: seconds (1.5s, 800ms) or a latency quantile (p90)")
    if isinstance(after, int | float):
        seconds = float(after)
    else:
        m = _HEDGE_AFTER.fullmatch(after)
        if m is None:
            raise ValueError(f"after: {after!r} is neither seconds (1.5s, 800ms) nor a quantile (p90)")
        if m.group(1) is not None:
            q = float(m.group(1)) / 100
            if not 0 < q < 1:
                raise ValueError(f"after: {after!r}: the quantile must be between p1 and p99")
            return None, q
        seconds = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"after: {after!r}: seconds must be finite and not negative")
    return seconds, None


__all__ = ["parse_duration", "parse_hedge_after"]
