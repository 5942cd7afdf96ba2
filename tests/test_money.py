"""Money is exact: Decimal US dollars, floats read at the precision a float holds."""

from __future__ import annotations

from decimal import Decimal

from cascade.money import Price, usd
from cascade.types import Usage


def test_float_noise_in_recorded_costs_is_not_carried_into_money() -> None:
    assert usd(3.0149999999999998e-05) == Decimal("0.00003015")
    assert usd(0.1 + 0.2) == Decimal("0.3")
    assert usd(0.15) == Decimal("0.15")


def test_strings_and_decimals_are_kept_exactly() -> None:
    assert usd("0.000030149999999999998") == Decimal("0.000030149999999999998")
    assert usd(Decimal("1.10")) == Decimal("1.10")
    assert usd(7) == Decimal(7)


def test_price_cost_is_exact() -> None:
    price = Price(usd("0.15"), usd("0.60"))
    assert price.cost(Usage(input_tokens=1000, output_tokens=10)) == Decimal("0.000156")
