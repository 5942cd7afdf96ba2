"""Money: exact :class:`~decimal.Decimal` US dollars, and a model's :class:`Price` per million tokens."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cascade.types import ZERO, Usage

MILLION = Decimal(1_000_000)


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


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` defaults to ``input``; ``cache_write`` too."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
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
