"""Recorded outcomes as arrays: which records are evaluated, the train/test split, single models.

An :class:`EvalSet` keeps the records where every model it evaluates has a labelled answer (a
model that answered too few records is left out and named in ``dropped_models``), and holds each
model's first-sample quality and cost as ``(records, models)`` float arrays: the single-model
baselines, the oracle and random mixes are computed from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from cascade.errors import ConfigurationError
from cascade.money import Price
from cascade.outcomes import Outcomes, Record, RecordedSample

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SplitHow = Literal["auto", "file", "seed", "none"]


def sample_cost(s: RecordedSample, price: Price | None) -> float:
    """One sample as its own call: the recorded cost, else its tokens at ``price``, else 0."""
    if s.cost_usd is not None:
        return float(s.cost_usd)
    if price is not None:
        return (s.input_tokens * float(price.input) + s.output_tokens * float(price.output)) / 1e6
    return 0.0


def _labelled(r: Record, model: str) -> bool:
    samples = r.responses.get(model)
    return samples is not None and len(samples) > 0 and samples[0].quality is not None


@dataclass
class EvalSet:
    """The records evaluated and every baseline model's first-sample quality and cost on them."""

    data: Outcomes
    records: list[Record]
    models: list[str]
    quality: FloatArray
    cost: FloatArray
    dropped_models: list[str] = field(default_factory=list)
    dropped_records: int = 0

    @classmethod
    def build(cls, data: Outcomes, required: Sequence[str] = (), *, min_coverage: float = 0.5) -> EvalSet:
        """Models labelled on at least ``min_coverage`` of records (plus ``required`` ones)."""
        n = len(data.records)
        if n == 0:
            raise ConfigurationError(f"{data.path}: no records")
        models: list[str] = []
        dropped: list[str] = []
        for m in data.models:
            covered = sum(_labelled(r, m) for r in data.records)
            (models if covered >= min_coverage * n or m in required else dropped).append(m)
        for m in required:
            if m not in data.models:
                from cascade.registry import suggest

                raise ConfigurationError(
                    f"{data.path}: model {m!r} is not in the file{suggest(m, data.models)}"
                )
        records = [r for r in data.records if all(_labelled(r, m) for m in models)]
        if not records:
            raise ConfigurationError(f"{data.path}: no record has a labelled answer from every model")
        prices = {m: data.price(m) for m in models}
        quality = np.array([[r.responses[m][0].quality for m in models] for r in records], dtype=np.float64)
        cost = np.array(
            [[sample_cost(r.responses[m][0], prices[m]) for m in models] for r in records], dtype=np.float64
        )
        return cls(data, records, models, quality, cost, dropped, n - len(records))

    def __len__(self) -> int:
        return len(self.records)

    def column(self, model: str) -> int:
        return self.models.index(model)

    def split(self, how: SplitHow = "auto", *, seed: int = 0, test_fraction: float = 0.5) -> BoolArray:
        """A boolean mask of test rows. ``file`` uses the records' own ``split`` (``test``,
        ``validation`` or ``dev`` rows are held out); ``seed`` a seeded random half; ``auto`` the
        file's split when it has both parts, else the seed; ``none`` evaluates everything (all test)."""
        n = len(self.records)
        if how == "none":
            return np.ones(n, dtype=bool)
        own = np.array(
            [(r.split or "").lower() in ("test", "validation", "dev", "val") for r in self.records]
        )
        has_own = bool(own.any()) and not bool(own.all())
        if how == "file" and not has_own:
            raise ConfigurationError(f"{self.data.path}: the records carry no train/test split; use a seed")
        if how == "file" or (how == "auto" and has_own):
            return own
        if not 0 < test_fraction < 1:
            raise ConfigurationError("test fraction must be between 0 and 1")
        order = np.random.default_rng(seed).permutation(n)
        test = np.zeros(n, dtype=bool)
        test[order[: round(n * test_fraction)]] = True
        return test


__all__ = ["BoolArray", "EvalSet", "FloatArray", "SplitHow", "sample_cost"]
