"""Caps and buckets: a window cap becomes a bucket per scope and window period; amounts in
nano-dollars; hold ids that name their buckets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Literal

from cascade.errors import BudgetExceededError

Window = Literal["day", "month", "total"]
OnExceeded = Literal["stop", "raise", "wait"]
OnLedgerError = Literal["fail_closed", "fail_open"]

NANO = Decimal("1e9")
# the largest amount a ledger stores exactly (Redis scripts compute in doubles): about $9 million
MAX_NANO = 2**53


def to_nano(amount: Decimal, rounding: str = ROUND_HALF_UP) -> int:
    """``amount`` USD in integer nano-dollars (reservations round up, settlements to nearest)."""
    return int((amount * NANO).to_integral_value(rounding=rounding))


def reserve_nano(amount: Decimal) -> int:
    return to_nano(amount, ROUND_CEILING)


def refusal(
    bucket: str, limit: Decimal, amount: Decimal, used: Decimal, spent: Decimal
) -> BudgetExceededError:
    """The error a ledger raises when ``bucket`` cannot cover ``amount`` (``used`` = spent + held).

    ``cap_spent`` tells a waiting reservation whether settlements could ever make room.
    """
    from cascade.types import show

    err = BudgetExceededError(
        f"cap {bucket} (${show(limit)}) cannot cover ${show(amount)}: ${show(used)} used or held",
        cap=bucket,
        needed=amount,
        available=limit - used,
    )
    err.cap_spent = spent  # type: ignore[attr-defined]
    return err


def new_hold_id(buckets: Sequence[str]) -> str:
    """A hold id that names its buckets, so a settle after the hold was purged still charges them."""
    return uuid.uuid4().hex + json.dumps(list(buckets), separators=(",", ":"))


def hold_buckets(hold_id: str) -> tuple[str, ...] | None:
    """The buckets a hold id from :func:`new_hold_id` names (None for any other id)."""
    if len(hold_id) <= 32 or hold_id[32] != "[":
        return None
    try:
        value = json.loads(hold_id[32:])
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        return None
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Cap:
    limit: Decimal
    window: Window
    scope: Literal["policy", "key"] = "policy"


def host_now() -> datetime:
    """This host's clock (UTC): window buckets of a ledger without a clock of its own."""
    return datetime.now(UTC)


def _period(window: Window, now: datetime) -> str:
    if window == "day":
        return f"day:{now:%Y-%m-%d}"
    if window == "month":
        return f"month:{now:%Y-%m}"
    return "total"


def window_end(bucket: str) -> datetime | None:
    """When the window of ``bucket`` ends (UTC), from its period suffix; None for ``total``."""
    period = bucket.rsplit("|", 1)[-1]
    try:
        if period.startswith("day:"):
            d = datetime.strptime(period[4:], "%Y-%m-%d").replace(tzinfo=UTC)
            return datetime.fromtimestamp(d.timestamp() + 86400, UTC)
        if period.startswith("month:"):
            m = datetime.strptime(period[6:], "%Y-%m").replace(tzinfo=UTC)
            return m.replace(year=m.year + 1, month=1) if m.month == 12 else m.replace(month=m.month + 1)
    except ValueError:
        return None
    return None
