"""A randomised acceptance boundary (``kind: boundary``), written by ``cascade tune --cost-cap``.

When a scorer's scores take few values, the cheapest deterministic threshold under a cost cap can
leave much of the budget unused while the next threshold overspends. This scorer wraps another one
and accepts a seeded share ``p`` of the requests whose inner score lies in ``[below, above)``: for
those it returns ``above`` (the tier's threshold), so the engine accepts them without knowing
anything about randomisation. Which requests are accepted is a pure function of ``seed`` and the
request's last user message (:func:`coin`), so a run, a replay and the tuner's simulation agree.

.. code-block:: yaml

    scorer:
      kind: boundary
      scorer: {kind: self_consistency, k: 3, answer: number}
      above: 1.0        # the tier's threshold
      below: 0.667      # inner scores in [below, above) are accepted with probability p
      p: 0.42
      seed: 0
    threshold: 1.0
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.policy.schema import ScorerSpec
from cascade.protocols import Scorer
from cascade.request import Request
from cascade.types import Completion, Score


def coin(seed: int, text: str) -> float:
    """A reproducible uniform number in [0, 1) for a request text and a seed."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def request_text(request: Request) -> str:
    """The text the coin is drawn from: :attr:`Request.prompt` (the last user message, else the
    last message)."""
    return request.prompt if request.messages else ""


def lift(value: float, u: float, below: float, above: float, p: float) -> float:
    """The boundary rule on one score: ``above`` for a share ``p`` of ``[below, above)``."""
    return above if below <= value < above and u < p else value


class BoundaryScorer:
    """Another scorer with a seeded, randomised acceptance band below the tier's threshold."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scorer: ScorerSpec
        above: float = Field(ge=0, le=1, description="The tier's threshold.")
        below: float = Field(ge=0, le=1, description="Scores in [below, above) may be accepted.")
        p: float = Field(ge=0, le=1, description="The share of that band accepted.")
        seed: int = 0

        @model_validator(mode="after")
        def _band(self) -> BoundaryScorer.Options:
            if self.below > self.above:
                raise ValueError(f"below ({self.below}) must not exceed above ({self.above})")
            return self

    def __init__(self, inner: Scorer, *, above: float, below: float, p: float, seed: int = 0) -> None:
        self.inner = inner
        self.above, self.below, self.p, self.seed = above, below, p, seed
        self.samples = inner.samples

    @classmethod
    def from_config(cls, options: Any, ctx: Any) -> BoundaryScorer:
        return cls(
            ctx.build_scorer(options.scorer),
            above=options.above,
            below=options.below,
            p=options.p,
            seed=options.seed,
        )

    def _apply(self, request: Request, s: Score) -> Score:
        u = coin(self.seed, request_text(request))
        value = lift(s.value, u, self.below, self.above, self.p)
        if value == s.value:
            return s
        detail = {**s.detail, "boundary": {"inner": s.value, "accepted_share": self.p}}
        return Score(value=value, chosen=s.chosen, cost=s.cost, usage=s.usage, detail=detail)

    def score(self, request: Request, completion: Completion) -> Score:
        return self._apply(request, self.inner.score(request, completion))

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self._apply(request, await self.inner.ascore(request, completion))

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return self.inner.max_cost(request, max_output_tokens)


__all__ = ["BoundaryScorer", "coin", "lift", "request_text"]
