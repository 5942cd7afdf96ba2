"""Built-in price table (USD per million tokens). Filled in by the real providers' issue."""

from __future__ import annotations

from cascade.pricing import Price

PRICES: dict[tuple[str, str], Price] = {}


def lookup(provider: str, model: str) -> Price | None:
    """The built-in price of ``model`` on ``provider``, or None."""
    return PRICES.get((provider, model))
