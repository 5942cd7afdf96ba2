"""The loop's vocabulary: a built :class:`Tier`, the actions :func:`~cascade.engine.loop.steps` yields
(:class:`Call`, :class:`Rate`, :class:`Predict`, :class:`Reserve`, :class:`Settle`) and the outcomes
the drivers send back. Plain slotted dataclasses, free of I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from cascade.budget import Budget
from cascade.engine.latency import HedgeAfter
from cascade.engine.reuse import SampleCache
from cascade.errors import BudgetExceededError, CascadeError, ProviderError
from cascade.money import Price
from cascade.protocols import Provider, Scorer, SkipEstimator
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.types import ZERO, Completion, Score, Usage


@dataclass(frozen=True, slots=True)
class Tier:
    """A built tier: a provider bound to a model, its price, and (but on the last) a scorer."""

    name: str
    provider: Provider
    price: Price
    scorer: Scorer | None = None
    threshold: float | None = None
    retry: RetryPolicy = RetryPolicy()
    provider_kind: str = ""
    max_tokens: int = 1024
    reserve_output_tokens: int | None = None  # policy `reserve: {output_tokens: N}`: reserved per sample
    call_key: str = ""  # same key, same call: its samples are reused within a run ("": never reused)
    skip: SkipEstimator | None = None  # ex-ante: not called when skip.predict(request) < skip_threshold
    skip_threshold: float = 0.0
    hedge: HedgeAfter | None = None  # start the next tier in parallel when this one has no verdict by then

    @property
    def samples(self) -> int:
        return self.scorer.samples if self.scorer is not None else 1

    def call_worst(self, request: Request, bought: int = 0) -> Decimal:
        """The most the call of the samples not yet bought could cost (``max_tokens`` each): what a
        call cut off in flight is charged (it may have been billed in full)."""
        n = max(0, self.samples - bought)
        return (
            self._billed_at_most(self.price.cost(self.provider.max_usage(request, n)), request, n)
            if n
            else ZERO
        )

    def _billed_at_most(self, cost: Decimal, request: Request, n: int) -> Decimal:
        """``cost``, or what the provider says the call bills when that is more (a recording's cost)."""
        own = getattr(self.provider, "max_cost", None)
        if n and callable(own):
            billed = own(request, n)
            if isinstance(billed, Decimal) and billed > cost:
                return billed
        return cost

    def worst_case(self, request: Request, bought: int = 0) -> Decimal:
        """What is reserved for this tier's call plus its scoring for ``request``.

        The worst case, unless the tier reserves fewer output tokens per sample (``reserve``): then
        that many, while ``max_tokens`` is still sent as the true bound. ``bought``: samples of this
        call already bought in the run (reused, so only the rest can cost anything).
        """
        n = max(0, self.samples - bought)
        usage = self.provider.max_usage(request, n) if n else Usage()
        out = self.max_tokens
        if self.reserve_output_tokens is not None:
            out = min(out, self.reserve_output_tokens)
            usage = replace(usage, output_tokens=min(usage.output_tokens, out * n))
        cost = self._billed_at_most(self.price.cost(usage), request, n)
        if self.scorer is not None:
            cost += self.scorer.max_cost(request, out)
        return cost


@dataclass(slots=True)  # messages: built per step, never changed (frozen costs ~0.4 µs each)
class Call:
    """Action: call ``tier``'s provider for ``n`` samples (with retries)."""

    tier: Tier
    request: Request
    n: int
    cache: SampleCache | None = None  # the run's samples (reused when the tier has a call key)
    capped: bool = False  # a cap holds for one try: a try that may have been billed ends the action
    attempts: int | None = None  # tries this action may make (None: the tier's retry policy)
    wait: float = 0.0  # seconds to wait before the first try (the backoff after a billed try)
    deadline: float | None = None  # when (time.monotonic()) the tier's whole call must be over


@dataclass(slots=True)
class Rate:
    """Action: score ``completion`` with ``tier``'s scorer."""

    tier: Tier
    request: Request
    completion: Completion
    cache: SampleCache | None = None  # the run's samples, for the providers the scorer calls


@dataclass(slots=True)
class Predict:
    """Action: estimate from the prompt whether ``tier`` is worth calling (outcome: :class:`Predicted`)."""

    tier: Tier
    request: Request


@dataclass(slots=True)
class Reserve:
    """Action: hold ``amount`` on ``buckets`` through ``budget`` (outcome: :class:`Reserved`)."""

    budget: Budget
    buckets: Sequence[tuple[str, Decimal]]
    amount: Decimal


@dataclass(slots=True)
class Settle:
    """Action: replace ``hold`` by ``amount`` spent (outcome: :class:`Settled`).

    A driver completes a settle it has started even when cancelled meanwhile.
    """

    budget: Budget
    hold: str
    amount: Decimal


@dataclass(slots=True)
class Reserved:
    hold: str | None
    refusal: BudgetExceededError | None


@dataclass(slots=True)
class Predicted:
    value: float | None
    error: CascadeError | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    pass


SETTLED = Settled()


@dataclass(slots=True)
class CallOutcome:
    completion: Completion | None
    error: ProviderError | None
    retries: int
    latency_s: float
    billed: tuple[ProviderError, ...] = ()  # failed attempts that may have been billed (charged)


@dataclass(slots=True)
class RateOutcome:
    score: Score | None
    error: CascadeError | None
    latency_s: float


__all__ = [
    "SETTLED",
    "Call",
    "CallOutcome",
    "Predict",
    "Predicted",
    "Rate",
    "RateOutcome",
    "Reserve",
    "Reserved",
    "Settle",
    "Settled",
    "Tier",
]
