"""The cascade loop, written once and free of I/O.

:func:`steps` is a generator: it yields actions (:class:`Reserve` and :class:`Settle` a budget hold,
:class:`Call` a provider, :class:`Rate` a completion) and receives their outcomes; the sync and async
drivers in :mod:`cascade.engine.cascade` execute the actions (with retries, the async one without
ever blocking the event loop on the ledger) and feed results back. Decisions, the trace and the log
events all live here, so ``run`` and ``arun`` cannot drift apart.

A driver that is cancelled or crashes mid-action throws the exception into the generator
(``gen.throw``): the loop answers with a :class:`Settle` of its open hold (at what the cut-off step
may have cost), which the driver executes before the exception propagates. A generator closed
instead (``gen.close()``) cannot yield, so it settles the hold itself, synchronously.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

import structlog

from cascade.budget import Budget
from cascade.errors import (
    AllTiersFailedError,
    BudgetExceededError,
    CascadeError,
    CascadeExhaustedError,
    ProviderError,
    ScorerError,
)
from cascade.logging import _stdlib, get_logger
from cascade.money import Price
from cascade.protocols import Provider, Scorer
from cascade.retry import RetryPolicy
from cascade.types import (
    ZERO,
    Attempt,
    CascadeResult,
    Completion,
    Decision,
    Request,
    Sample,
    Score,
    Usage,
    show,
)

OnExhausted = Literal["return_last", "return_best", "raise"]


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

    @property
    def samples(self) -> int:
        return self.scorer.samples if self.scorer is not None else 1

    def worst_case(self, request: Request) -> Decimal:
        """What is reserved for this tier's call plus its scoring for ``request``.

        The worst case, unless the tier reserves fewer output tokens per sample (``reserve``): then
        that many, while ``max_tokens`` is still sent as the true bound.
        """
        usage = self.provider.max_usage(request, self.samples)
        out = self.max_tokens
        if self.reserve_output_tokens is not None:
            out = min(out, self.reserve_output_tokens)
            usage = replace(usage, output_tokens=min(usage.output_tokens, out * self.samples))
        cost = self.price.cost(usage)
        if self.scorer is not None:
            cost += self.scorer.max_cost(request, out)
        return cost


@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    tiers: tuple[Tier, ...]
    budget: Budget
    on_exhausted: OnExhausted = "return_best"
    include_text: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """Action: call ``tier``'s provider for ``n`` samples (with retries)."""

    tier: Tier
    request: Request
    n: int


@dataclass(frozen=True, slots=True)
class Rate:
    """Action: score ``completion`` with ``tier``'s scorer."""

    tier: Tier
    request: Request
    completion: Completion


@dataclass(frozen=True, slots=True)
class Reserve:
    """Action: hold ``amount`` on ``buckets`` through ``budget`` (outcome: :class:`Reserved`)."""

    budget: Budget
    buckets: Sequence[tuple[str, Decimal]]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Settle:
    """Action: replace ``hold`` by ``amount`` spent (outcome: :class:`Settled`).

    A driver completes a settle it has started even when cancelled meanwhile.
    """

    budget: Budget
    hold: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Reserved:
    hold: str | None
    refusal: BudgetExceededError | None


@dataclass(frozen=True, slots=True)
class Settled:
    pass


SETTLED = Settled()


@dataclass(frozen=True, slots=True)
class CallOutcome:
    completion: Completion | None
    error: ProviderError | None
    retries: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class RateOutcome:
    score: Score | None
    error: CascadeError | None
    latency_s: float


Action = Call | Rate | Reserve | Settle
Outcome = CallOutcome | RateOutcome | Reserved | Settled


def _logger() -> Any:
    """The event logger, or None when nobody listens (then events cost nothing to build)."""
    if structlog.is_configured() or _stdlib.isEnabledFor(logging.INFO):
        return get_logger()
    return None


@dataclass(slots=True)
class _Candidate:
    sample: Sample
    score: float | None
    tier: Tier
    model: str


def steps(s: Settings, request: Request, start: int = 0) -> Generator[Action, Outcome, CascadeResult]:
    """Run the cascade for ``request`` from tier index ``start``; yields actions, returns the result."""
    log = _logger()
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:12] if log is not None else ""
    if log is not None:
        log.info(
            "cascade.run_started",
            run_id=run_id,
            policy=s.name,
            tiers=[t.name for t in s.tiers],
            **({"prompt": request.prompt} if s.include_text else {}),
        )
    attempts: list[Attempt] = []
    candidates: list[_Candidate] = []
    spent = ZERO
    buckets = s.budget.buckets(s.name, request.budget_key)
    last_index = len(s.tiers) - 1

    def finish(c: _Candidate, accepted: bool, reason: str) -> CascadeResult:
        result = CascadeResult(
            answer=c.sample.text,
            tier=c.tier.name,
            model=c.model,
            accepted=accepted,
            reason=reason,
            attempts=tuple(attempts),
            tool_calls=c.sample.tool_calls,
            policy=s.name,
            latency_s=time.perf_counter() - started,
            sample=c.sample,
        )
        if log is not None:
            log.info(
                "cascade.finished",
                run_id=run_id,
                policy=s.name,
                tier=c.tier.name,
                model=c.model,
                accepted=accepted,
                reason=reason,
                cost=str(result.cost),
                latency_ms=round(result.latency_s * 1000, 3),
                **({"answer": c.sample.text} if s.include_text else {}),
            )
        return result

    for index, tier in enumerate(s.tiers[start:], start):
        is_last = index == last_index
        model = tier.provider.model
        base: dict[str, Any] = {"tier": tier.name, "model": model, "provider": tier.provider_kind}

        # 1. reserve the worst case against the per-request cap and every window cap
        per_request = s.budget.per_request
        capped = per_request is not None or (buckets and s.budget.ledger is not None)
        worst = tier.worst_case(request) if capped else ZERO  # only caps need the estimate
        hold: str | None = None
        refusal: BudgetExceededError | None = None
        if per_request is not None and spent + worst > per_request:
            refusal = BudgetExceededError(
                f"per-request cap ${show(per_request)} cannot cover tier {tier.name!r}"
                f" (worst case ${show(worst)}, ${show(spent)} spent)",
                cap="per_request",
                needed=worst,
                available=per_request - spent,
            )
        elif buckets and s.budget.ledger is not None:
            held = yield Reserve(s.budget, buckets, worst)
            assert isinstance(held, Reserved)
            hold, refusal = held.hold, held.refusal
        if refusal is not None:
            attempts.append(Attempt(**base, decision="stopped", reason=f"budget: {refusal}"))
            if log is not None:
                log.warning("cascade.budget_stop", run_id=run_id, **base, cap=refusal.cap, needed=str(worst))
            if s.budget.on_exceeded == "raise" or not candidates:
                refusal.attempts = tuple(attempts)
                raise refusal
            return finish(_best(candidates), False, "budget")

        # 2. call the provider (the driver retries transient errors)
        try:
            call = yield Call(tier, request, tier.samples)
        except BaseException as exc:  # the driver was cancelled or crashed: a cut-off call may be billed
            if hold is not None:
                yield from _abandon(s, exc, hold, worst, log, run_id, base)
            raise
        assert isinstance(call, CallOutcome)
        latency = call.latency_s
        if call.completion is None:
            assert call.error is not None
            if hold is not None:
                yield Settle(s.budget, hold, ZERO)
            decision: Decision = "failed" if is_last else "escalated"
            err = call.error
            attempts.append(
                Attempt(
                    **base,
                    decision=decision,
                    reason=f"error: {type(err).__name__}",
                    latency_s=latency,
                    retries=call.retries,
                    error=str(err),
                )
            )
            if log is not None:
                log.warning(
                    "cascade.attempt_failed",
                    run_id=run_id,
                    **base,
                    error=type(err).__name__,
                    status_code=err.status_code,
                    retries=call.retries,
                    latency_ms=round(latency * 1000, 3),
                )
            continue
        completion = call.completion
        cost = completion.cost if completion.cost is not None else tier.price.cost(completion.usage)

        # 3. score
        score: Score | None = None
        scorer_error: CascadeError | None = None
        if tier.scorer is not None:
            try:
                rated = yield Rate(tier, request, completion)
            except BaseException as exc:
                if hold is not None:
                    amount = cost + tier.scorer.max_cost(request, tier.max_tokens)
                    yield from _abandon(s, exc, hold, amount, log, run_id, base)
                raise
            assert isinstance(rated, RateOutcome)
            latency += rated.latency_s
            score, scorer_error = rated.score, rated.error
        # a scorer that failed after paying (a judge whose verdict did not parse) still spent money
        scorer_cost = score.cost if score is not None else _spent_by(scorer_error)
        spent += cost + scorer_cost
        if hold is not None:
            yield Settle(s.budget, hold, cost + scorer_cost)

        # 4. decide
        chosen = score.chosen if score is not None and 0 <= score.chosen < len(completion.samples) else 0
        sample = completion.samples[chosen] if completion.samples else Sample("")
        value = score.value if score is not None else None
        if tier.scorer is None:
            decision, reason, accepted = "accepted", "last tier, no scorer", True
        elif scorer_error is not None:
            decision = "failed" if is_last else "escalated"
            reason, accepted = f"scorer error: {type(scorer_error).__name__}: {scorer_error}", False
        elif value is not None and tier.threshold is not None and value >= tier.threshold:
            decision, reason, accepted = "accepted", f"score {value:.3f} >= {tier.threshold:.3f}", True
        else:
            decision = "rejected" if is_last else "escalated"
            reason, accepted = f"score {value:.3f} < {tier.threshold:.3f}", False
        attempts.append(
            Attempt(
                **base,
                decision=decision,
                reason=reason,
                samples=len(completion.samples),
                score=value,
                threshold=tier.threshold,
                usage=completion.usage + (score.usage if score is not None else Usage()),
                cost=cost,
                scorer_cost=scorer_cost,
                latency_s=latency,
                retries=call.retries,
                answer=sample.text if s.include_text else None,
                tool_calls=sample.tool_calls,
                score_detail=dict(score.detail) if score is not None else {},
                usage_source=completion.usage_source,
            )
        )
        if log is not None:
            log.info(
                "cascade.attempt_scored",
                usage_source=completion.usage_source,
                run_id=run_id,
                **base,
                decision=decision,
                score=value,
                threshold=tier.threshold,
                samples=len(completion.samples),
                cost=str(cost),
                scorer_cost=str(scorer_cost),
                latency_ms=round(latency * 1000, 3),
                retries=call.retries,
            )
        candidate = _Candidate(sample, value, tier, completion.model or model)
        if accepted:
            return finish(candidate, True, "accepted")
        candidates.append(candidate)
        if not is_last and log is not None:
            log.info("cascade.escalated", run_id=run_id, **base, reason=reason)

    # 5. nothing accepted
    if not candidates:
        if log is not None:
            log.warning("cascade.all_failed", run_id=run_id, policy=s.name)
        raise AllTiersFailedError(
            f"every tier of policy {s.name!r} failed: "
            + "; ".join(f"{a.tier}: {a.error or a.reason}" for a in attempts),
            attempts,
        )
    if s.on_exhausted == "raise":
        raise CascadeExhaustedError(f"no tier of policy {s.name!r} produced an accepted answer", attempts)
    chosen_c = candidates[-1] if s.on_exhausted == "return_last" else _best(candidates)
    return finish(chosen_c, False, "exhausted")


def _best(candidates: list[_Candidate]) -> _Candidate:
    """The best-scored candidate; ties go to the later (stronger) tier, unscored ones rank last."""
    best = candidates[0]
    for c in candidates[1:]:
        if (c.score if c.score is not None else -1.0) >= (best.score if best.score is not None else -1.0):
            best = c
    return best


def _spent_by(error: CascadeError | None) -> Decimal:
    """What a failed scorer spent before failing (only :class:`ScorerError` carries a cost)."""
    return error.cost if isinstance(error, ScorerError) else ZERO


def _abandon(
    s: Settings, exc: BaseException, hold: str, amount: Decimal, log: Any, run_id: str, base: dict[str, Any]
) -> Generator[Action, Outcome, None]:
    """Settle a hold when the run ends mid-step (cancelled, or an unexpected exception).

    The hold would otherwise count against the caps until it expires; it is charged at what the
    step may have cost (the worst case for a call cut off in flight), so caps are never undercounted.
    A driver that threw ``exc`` in executes the :class:`Settle`; a closed generator cannot yield, so
    then the hold is settled here, synchronously.
    """
    if log is not None:
        log.warning("cascade.abandoned", run_id=run_id, **base, settled=str(amount))
    if isinstance(exc, GeneratorExit):
        s.budget.settle(hold, amount)
    else:
        yield Settle(s.budget, hold, amount)
