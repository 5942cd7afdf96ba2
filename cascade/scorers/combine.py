"""Combine scorers: ``min``, ``max``, ``mean`` (weighted) and ``all`` (each must pass its own bar).

Children run on the same completion; the completion is drawn with the most samples any child
needs. The combined score's cost is the sum of the children's; the chosen sample is the first
child's that chose one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.policy.schema import ScorerSpec
from cascade.protocols import Scorer
from cascade.request import Request
from cascade.types import ZERO, Completion, Score, Usage


class _Combined:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scorers: list[ScorerSpec] = Field(min_length=1)

    def __init__(self, scorers: Sequence[Scorer]) -> None:
        if not scorers:
            raise ValueError("a combination needs at least one scorer")
        self.children = list(scorers)
        self.samples = max(s.samples for s in self.children)

    @classmethod
    def from_config(cls, options: Any, ctx: Any) -> _Combined:
        children = [ctx.build_scorer(s) for s in options.scorers]
        extra = {k: v for k, v in options.model_dump().items() if k != "scorers"}
        return cls(children, **extra)

    def combine(self, values: list[float]) -> float:
        raise NotImplementedError

    def _merge(self, scores: list[Score]) -> Score:
        chosen = next((s.chosen for s in scores if s.chosen), 0)
        return Score(
            value=self.combine([s.value for s in scores]),
            chosen=chosen,
            cost=sum((s.cost for s in scores), ZERO),
            usage=sum((s.usage for s in scores), Usage()),
            detail={"children": [{"value": s.value, **s.detail} for s in scores]},
        )

    def score(self, request: Request, completion: Completion) -> Score:
        return self._merge([c.score(request, completion) for c in self.children])

    async def ascore(self, request: Request, completion: Completion) -> Score:
        scores = await asyncio.gather(*(c.ascore(request, completion) for c in self.children))
        return self._merge(list(scores))

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return sum((c.max_cost(request, max_output_tokens) for c in self.children), ZERO)


class MinScorer(_Combined):
    """The lowest child score (every scorer must be confident)."""

    def combine(self, values: list[float]) -> float:
        return min(values)


class MaxScorer(_Combined):
    """The highest child score (any scorer's confidence suffices)."""

    def combine(self, values: list[float]) -> float:
        return max(values)


class MeanScorer(_Combined):
    """The weighted mean of child scores (equal weights by default)."""

    class Options(_Combined.Options):
        weights: list[float] | None = None

        @model_validator(mode="after")
        def _weights_match(self) -> MeanScorer.Options:
            if self.weights is not None:
                if len(self.weights) != len(self.scorers):
                    raise ValueError("weights must have one entry per scorer")
                if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                    raise ValueError("weights must be non-negative and not all zero")
            return self

    def __init__(self, scorers: Sequence[Scorer], weights: Sequence[float] | None = None) -> None:
        super().__init__(scorers)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.children)
        if len(self.weights) != len(self.children):
            raise ValueError("weights must have one entry per scorer")

    def combine(self, values: list[float]) -> float:
        return sum(w * v for w, v in zip(self.weights, values, strict=True)) / sum(self.weights)


class AllScorer(_Combined):
    """1 if every child reaches its own threshold, else 0."""

    class Options(_Combined.Options):
        thresholds: list[float]

        @model_validator(mode="after")
        def _thresholds_match(self) -> AllScorer.Options:
            if len(self.thresholds) != len(self.scorers):
                raise ValueError("thresholds must have one entry per scorer")
            if any(not 0 <= t <= 1 for t in self.thresholds):
                raise ValueError("thresholds must be in [0, 1]")
            return self

    def __init__(self, scorers: Sequence[Scorer], thresholds: Sequence[float]) -> None:
        super().__init__(scorers)
        self.thresholds = list(thresholds)
        if len(self.thresholds) != len(self.children):
            raise ValueError("thresholds must have one entry per scorer")

    def combine(self, values: list[float]) -> float:
        return 1.0 if all(v >= t for v, t in zip(values, self.thresholds, strict=True)) else 0.0
