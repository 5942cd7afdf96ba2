"""Built-in price table: USD per million tokens, by provider kind and model.

Source: the public list prices on openai.com/api/pricing and anthropic.com/pricing (standard
tier, no batch discount, prompts under any long-context surcharge threshold) as known to the
author when this table was written. They were NOT re-read online on the date below: the machine
that wrote it had no web access. Prices change; anything missing or stale is overridden per tier
with ``price: {input: ..., output: ..., cached_input: ..., cache_write: ...}``, and a model not in
the table needs that (or ``free: true``). Models newer than the table are deliberately absent
rather than guessed.

Anthropic: ``cache_write`` is the 5-minute cache write (1.25 x input), ``cached_input`` the cache
read (0.1 x input). OpenAI: ``cached_input`` is the cached-prompt rate; there is no write charge.
"""

from __future__ import annotations

import re
from decimal import Decimal

from cascade.money import Price, usd

CHECKED = "2025-11-24"
"""The date these list prices were last known to be right (see the module docstring)."""


def _p(inp: str, out: str, cached: str | None = None, write: str | None = None) -> Price:
    return Price(
        usd(inp), usd(out), None if cached is None else usd(cached), None if write is None else usd(write)
    )


_OPENAI: dict[str, Price] = {
    "gpt-5": _p("1.25", "10.00", "0.125"),
    "gpt-5-chat-latest": _p("1.25", "10.00", "0.125"),
    "gpt-5.1": _p("1.25", "10.00", "0.125"),
    "gpt-5.1-chat-latest": _p("1.25", "10.00", "0.125"),
    "gpt-5-mini": _p("0.25", "2.00", "0.025"),
    "gpt-5-nano": _p("0.05", "0.40", "0.005"),
    "gpt-4.1": _p("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
    "gpt-4o": _p("2.50", "10.00", "1.25"),
    "gpt-4o-2024-05-13": _p("5.00", "15.00"),
    "gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "o1": _p("15.00", "60.00", "7.50"),
    "o3": _p("2.00", "8.00", "0.50"),
    "o3-mini": _p("1.10", "4.40", "0.55"),
    "o4-mini": _p("1.10", "4.40", "0.275"),
    "gpt-4-turbo": _p("10.00", "30.00"),
    "gpt-4": _p("30.00", "60.00"),
    "gpt-3.5-turbo": _p("0.50", "1.50"),
}

_ANTHROPIC: dict[str, Price] = {
    "claude-opus-4-5": _p("5.00", "25.00", "0.50", "6.25"),
    "claude-opus-4-1": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-opus-4": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-opus-4-0": _p("15.00", "75.00", "1.50", "18.75"),
    "claude-sonnet-4-5": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-sonnet-4": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-sonnet-4-0": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-3-7-sonnet": _p("3.00", "15.00", "0.30", "3.75"),
    "claude-haiku-4-5": _p("1.00", "5.00", "0.10", "1.25"),
    "claude-3-5-haiku": _p("0.80", "4.00", "0.08", "1.00"),
    "claude-3-haiku": _p("0.25", "1.25", "0.03", "0.30"),
    "claude-3-opus": _p("15.00", "75.00", "1.50", "18.75"),
}

PRICES: dict[tuple[str, str], Price] = {
    **{("openai", m): p for m, p in _OPENAI.items()},
    **{("anthropic", m): p for m, p in _ANTHROPIC.items()},
}

# gpt-4o-mini-2024-07-18, claude-haiku-4-5-20251001, claude-3-5-haiku-latest
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def lookup(provider: str, model: str) -> Price | None:
    """The built-in price of ``model`` on ``provider``, or None.

    A dated snapshot or ``-latest`` alias is priced as its base model unless listed itself.
    """
    price = PRICES.get((provider, model))
    if price is None:
        base = _SNAPSHOT.sub("", model)
        if base != model:
            price = PRICES.get((provider, base))
    return price


BATCH_DISCOUNT: dict[str, Decimal] = {"openai": Decimal("0.5"), "anthropic": Decimal("0.5")}
"""The share of list price a provider's batch API bills (OpenAI Batch, Anthropic Message Batches:
50% of input and output); a provider kind not listed gets no discount."""


def batch_price(provider: str, price: Price) -> Price:
    """``price`` as billed through ``provider``'s batch API (every rate times its discount)."""
    f = BATCH_DISCOUNT.get(provider)
    if f is None:
        return price
    return Price(
        price.input * f,
        price.output * f,
        None if price.cached_input is None else price.cached_input * f,
        None if price.cache_write is None else price.cache_write * f,
    )


__all__ = ["BATCH_DISCOUNT", "CHECKED", "PRICES", "batch_price", "lookup"]
