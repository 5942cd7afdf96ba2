"""Money: exact :class:`~decimal.Decimal` US dollars, parsed (:func:`usd`) and formatted for people
(:func:`show`, :func:`usd_text`, :func:`usd_brief`), and a model's :class:`Price` per million tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

ZERO = Decimal(0)
MILLION = Decimal(1_000_000)


class Tokens(Protocol):
    """The token counts a price applies to (:class:`cascade.types.Usage`)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_creation_tokens(self) -> int: ...


def usd(value: float | int | str | Decimal) -> Decimal:
    """Convert to an exact Decimal.

    A float keeps its 15 significant digits, all a float reliably holds: 0.15 is 0.15, and a
    recorded ``3.0149999999999998e-05`` (float noise from whoever computed it) is 0.00003015.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(format(value, ".15g"))
    return Decimal(str(value))


def show(value: Decimal) -> str:
    """Money for people: exact, without trailing zeros (``0.04``, not ``0.040000000``)."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.00"


def signless(x: float, spec: str) -> str:
    """``format(x, spec)``, but a value that rounds to zero never prints as ``-0.0000``."""
    text = f"{x:{spec}}"
    return f"{0.0:{spec}}" if not any(ch in "123456789" for ch in text) else text


def usd_text(x: float | None) -> str:
    """Money per query in fixed notation: at least 4 decimals and 3 significant digits
    (``$0.0000500``, ``$0.00378``, ``$0.0123``, ``$1.5000``); never exponents or ``-$0``."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "$0"
    decimals = max(4, 2 - math.floor(math.log10(abs(x))))
    text = signless(abs(x), f".{decimals}f")
    return f"-${text}" if x < 0 and any(ch in "123456789" for ch in text) else f"${text}"


def usd_brief(x: float) -> str:
    """Money in a report line: up to 6 decimals, trailing zeros dropped (``$0.0042``, ``$0``)."""
    return f"${x:.6f}".rstrip("0").rstrip(".") if x else "$0"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` defaults to ``input``; ``cache_write`` too."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None

    def cost(self, usage: Tokens) -> Decimal:
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cached_input_tokens * cached
            + usage.cache_creation_tokens * write
        )
        return total / MILLION if total else ZERO


FREE = Price(ZERO, ZERO)
