"""The cascade loop, written once and free of I/O.

:func:`steps` is a generator: per tier (:func:`_tier`) it yields actions — :class:`Predict` (a skip
estimate), :class:`Reserve` and :class:`Settle` (a budget hold), :class:`Call` (a provider) and
:class:`Rate` (a scorer) — and receives their outcomes; the sync and async drivers in
:mod:`cascade.engine.drive` execute them (with retries, the async one without ever blocking the
event loop) and feed results back. Decisions, the trace and the log events live here (the
:class:`_Run` object), so ``run``, ``arun``, batches and the LangChain front cannot drift apart. A
run's :class:`~cascade.engine.reuse.SampleCache` rides on its calls, so samples are bought once.

A driver that is cancelled or crashes mid-action throws the exception into the generator
(``gen.throw``): the loop answers with a :class:`Settle` of its open hold (at what the cut-off step
may have cost), which the driver executes before the exception propagates. A generator closed
instead (``gen.close()``) cannot yield, so it settles the hold itself, synchronously.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from cascade.budget import Budget
from cascade.engine import reuse
from cascade.engine.actions import (
    Call,
    CallOutcome,
    Predict,
    Predicted,
    Rate,
    RateOutcome,
    Reserve,
    Reserved,
    Settle,
    Settled,
    Tier,
)
from cascade.engine.hedge import Backup, Cancel, Hedge, Hedged, Join, Resolved, stop_now
from cascade.engine.latency import Latencies
from cascade.engine.reuse import SampleCache
from cascade.errors import (
    AllTiersFailedError,
    BudgetExceededError,
    CascadeError,
    CascadeExhaustedError,
    ProviderError,
    ScorerError,
)
from cascade.logging import listening
from cascade.request import Request
from cascade.retry import failure_charge
from cascade.types import ZERO, Attempt, CascadeResult, Completion, Decision, Sample, Usage, show

OnExhausted = Literal["return_last", "return_best", "raise"]
OnUnverified = Literal["answer", "abstain"]


@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    tiers: tuple[Tier, ...]
    budget: Budget
    on_exhausted: OnExhausted = "return_best"
    include_text: bool = False
    latencies: Latencies = field(default_factory=Latencies)  # per cascade: each tier's recent latencies
    on_unverified: OnUnverified = "answer"  # abstain: no answer rather than one no tier accepted


Action = Call | Rate | Reserve | Settle | Predict | Hedge | Join | Cancel
Outcome = CallOutcome | RateOutcome | Reserved | Settled | Predicted | Hedged | Resolved


_logger = listening  # the event logger, or None when nobody listens (then events cost nothing to build)


@dataclass(slots=True)
class _Candidate:
    sample: Sample
    score: float | None
    tier: Tier
    model: str


def steps(s: Settings, request: Request, start: int = 0) -> Generator[Action, Outcome, CascadeResult]:
    """Run the cascade for ``request`` from tier index ``start``; yields actions, returns the result."""
    run = _Run(s, request)
    last = len(s.tiers) - 1
    try:
        for index in range(start, last + 1):
            result = yield from _tier(run, s.tiers[index], index == last, s.tiers[index + 1 :])
            if result is not None:
                if run.backup is not None:  # accepted: the hedge's backup call is not needed
                    yield from _cancel_backup(run, f"{result.tier!r} was accepted")
                    result = replace(result, attempts=run.attempts)
                return result
        return run.exhausted()
    except GeneratorExit:
        if run.backup is not None:  # closed: cannot yield, so cancel and settle synchronously
            stop_now(run.backup)
        raise
    except BaseException as exc:
        if run.backup is not None:
            yield from _cancel_backup(run, f"abandoned: {type(exc).__name__}", cut=True)
            _traced(run, exc)
        raise


def _tier(
    run: _Run, tier: Tier, is_last: bool, later: Sequence[Tier] = ()
) -> Generator[Action, Outcome, CascadeResult | None]:
    """One tier: reserve, call, score, settle, decide. Returns the result when the run ends here.

    ``later``: the tiers after this one (a hedge's backups). When the tier before hedged, this
    tier's call may already be in flight: it takes that call and its hold instead of reserving and
    calling (and that call's own hedge, armed when it launched, instead of hedging).
    """
    s, request = run.s, run.request
    base: dict[str, Any] = {"tier": tier.name, "model": tier.provider.model, "provider": tier.provider_kind}
    pending: CallOutcome | None = None  # this tier's call, launched as the tier before's backup
    hedged: str | None = None
    if run.backup is not None:
        resolved = yield from _join(run)
        pending = resolved.call
        if pending is not None:
            hedged = f"backup: in flight since {resolved.launched:.2f}s into the tier before"
        hold, worst, bought = resolved.hold, resolved.worst, 0

    if pending is None:
        # 0. skip the tier when its prompt-only estimate says its answer would not do (never the last)
        if tier.skip is not None and not is_last:
            predicted = yield Predict(tier, request)
            assert isinstance(predicted, Predicted)
            if run.skips(tier, predicted, base):
                return None

        # 1. reserve the worst case against the per-request cap and every window cap
        bought = 0  # samples of this call the run already has (known only when capped: it costs a lookup)
        worst = _worst(run, tier) if run.capped else ZERO
        hold, refusal = yield from _reserve(run, tier, worst)
        if refusal is not None:
            return run.budget_stop(refusal, worst, base)
        if run.capped and tier.call_key:
            bought = run.cache.bought(tier.call_key, request)

    # 2. call the provider (the driver retries transient errors; under a cap a try that may have been
    # billed ends its reservation: a retry is a new reservation, checked against every cap)
    at = _deadline(tier)
    tries = tier.retry.attempts
    earlier = _NOTHING_BEFORE  # tries before this reservation: retries, latency, billed
    paid = ZERO  # what they were charged (already settled)
    wait = 0.0
    reused_before = run.cache.reused
    hedge = tier.hedge is not None and bool(later) and pending is None
    while True:
        try:
            if pending is not None:  # launched by the tier before's hedge: its outcome, once
                call, pending = pending, None
            elif hedge:
                call = yield from _hedged(run, _call(run, tier, tries, wait, at), later, worst)
                hedge = False
            else:  # no local for the Call: only its driver holds it, and drops it (one object less)
                outcome = yield _call(run, tier, tries, wait, at)
                assert isinstance(outcome, CallOutcome)
                call = outcome
        except BaseException as exc:  # the driver was cancelled or crashed: a cut-off call may be billed
            if hold is not None:
                yield from _abandon(run, exc, hold, worst, base)
            raise
        assert isinstance(call, CallOutcome)
        if call.completion is None and call.billed and not run.capped and tier.call_key:
            bought = run.cache.bought(tier.call_key, request)  # a failed call stored nothing: still exact
        charge, why = failed_charge(tier, request, bought, call.billed) if call.billed else (ZERO, None)
        tries -= call.retries + 1
        err = call.error
        stopped = (
            err is not None and err.transient and run.capped and bool(call.billed) and call.billed[-1] is err
        )
        if not stopped or tries <= 0:
            break
        # a billed try under a cap: settle its hold, then a retry needs a reservation of its own
        run.spent += charge
        paid += charge
        if hold is not None:
            yield Settle(s.budget, hold, charge)
        earlier = _joined(earlier, call)
        assert err is not None
        wait = tier.retry.delay(earlier.retries + 1, err)
        late = at is not None and time.monotonic() + wait >= at
        worst = _worst(run, tier)
        hold, refusal = (None, None) if late else (yield from _reserve(run, tier, worst))
        if late or refusal is not None:
            why_not = "the tier's deadline" if late else f"budget: {refusal}"
            run.call_failed(_joined(earlier, None), is_last, base, paid, why, f"retry not sent: {why_not}")
            return None
    call = _joined(earlier, call)
    if call.completion is None:
        run.spent += charge
        if hold is not None:
            yield Settle(s.budget, hold, charge)
        run.call_failed(call, is_last, base, paid + charge, why)
        return None
    completion = call.completion
    cost = completion.cost if completion.cost is not None else tier.price.cost(completion.usage)
    cut = completion.cut_off_calls
    if cut > 0:  # some of its parallel calls were cut off: maybe billed
        extra = tier.price.cost(tier.provider.max_usage(request, 1)) * cut
        cost = min(cost + extra, max(cost, tier.call_worst(request, bought)))  # never above its hold
        why = "cut off in flight: worst case" if why is None else why
    cost += charge  # failed tries of this reservation that were billed (uncapped: retried)

    # 3. score
    rated: RateOutcome | None = None
    if tier.scorer is not None:
        try:
            outcome = yield Rate(tier, request, completion, run.cache)
        except BaseException as exc:
            if hold is not None:
                cut_off = cost + tier.scorer.max_cost(request, tier.max_tokens)
                yield from _abandon(run, exc, hold, cut_off, base)
            raise
        assert isinstance(outcome, RateOutcome)
        rated = outcome
    score = rated.score if rated is not None else None
    # a scorer that failed after paying (a judge whose verdict did not parse) still spent money
    scorer_cost = score.cost if score is not None else _spent_by(rated.error if rated is not None else None)
    run.spent += cost + scorer_cost
    if hold is not None:
        yield Settle(s.budget, hold, cost + scorer_cost)

    # 4. decide
    reused = run.cache.reused - reused_before
    return run.decide(
        tier, is_last, base, call, completion, cost + paid, rated, scorer_cost, reused, why, hedged
    )


class _Run:
    """What the loop knows about one request between steps: the trace so far, money, the logger."""

    __slots__ = (
        "attempts",
        "backup",
        "buckets",
        "cache",
        "candidates",
        "capped",
        "log",
        "request",
        "run_id",
        "s",
        "spent",
        "started",
    )

    def __init__(self, s: Settings, request: Request) -> None:
        self.s = s
        self.request = request
        self.log = _logger()
        self.started = time.perf_counter()
        self.run_id = uuid.uuid4().hex[:12] if self.log is not None else ""
        # tuples, not lists: empty, they are one shared object, not two per request in flight
        self.attempts: tuple[Attempt, ...] = ()
        self.candidates: tuple[_Candidate, ...] = ()
        self.backup: Backup | None = None  # a hedge's backup call, armed or in flight
        self.spent = ZERO
        self.cache = SampleCache()
        self.buckets = s.budget.buckets(s.name, request.budget_key) if s.budget.ledger is not None else ()
        self.capped = s.budget.per_request is not None or bool(self.buckets)
        if self.log is not None:
            self.log.info(
                "cascade.run_started",
                run_id=self.run_id,
                policy=s.name,
                tiers=[t.name for t in s.tiers],
                **({"prompt": request.prompt} if s.include_text else {}),
            )

    def record(self, attempt: Attempt) -> None:
        """Add ``attempt`` to the trace."""
        self.attempts += (attempt,)

    # -- budget ---------------------------------------------------------------------------------

    def per_request_refusal(self, tier: Tier, worst: Decimal) -> BudgetExceededError | None:
        cap = self.s.budget.per_request
        if cap is None or self.spent + worst <= cap:
            return None
        return BudgetExceededError(
            f"per-request cap ${show(cap)} cannot cover tier {tier.name!r}"
            f" (worst case ${show(worst)}, ${show(self.spent)} spent)",
            cap="per_request",
            needed=worst,
            available=cap - self.spent,
        )

    def budget_stop(
        self, refusal: BudgetExceededError, worst: Decimal, base: dict[str, Any]
    ) -> CascadeResult:
        """The budget refused the next tier: the best answer so far, or the refusal raised."""
        self.record(Attempt(**base, decision="stopped", reason=f"budget: {refusal}"))
        if self.log is not None:
            self.log.warning(
                "cascade.budget_stop", run_id=self.run_id, **base, cap=refusal.cap, needed=str(worst)
            )
        if self.s.budget.on_exceeded == "raise" or not self.candidates:
            refusal.attempts = self.attempts
            raise refusal
        if self.s.on_unverified == "abstain":
            return _abstain(self, f"budget: {refusal}")
        return self.finish(_best(self.candidates), False, "budget")

    # -- the trace ------------------------------------------------------------------------------

    def skips(self, tier: Tier, predicted: Predicted, base: dict[str, Any]) -> bool:
        """Record a skip when the estimate is below the tier's skip threshold; True if skipped."""
        value, threshold = predicted.value, tier.skip_threshold
        if value is None:  # the estimator failed: call the tier as if it had none
            if self.log is not None:
                err = predicted.error
                self.log.warning("cascade.skip_failed", run_id=self.run_id, **base, error=type(err).__name__)
            return False
        if value >= threshold:
            return False
        reason = f"skipped: predicted {value:.3f} < {threshold:.3f}"
        detail = {"predicted": value, "skip_threshold": threshold}
        self.record(Attempt(**base, decision="skipped", reason=reason, score_detail=detail))
        if self.log is not None:
            self.log.info(
                "cascade.tier_skipped", run_id=self.run_id, **base, predicted=value, threshold=threshold
            )
        return True

    def call_failed(
        self,
        call: CallOutcome,
        is_last: bool,
        base: dict[str, Any],
        charge: Decimal = ZERO,
        why: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record a tier whose call failed (``note``: why no retry was sent, when one was possible)."""
        err = call.error
        assert err is not None
        usage = Usage()
        for e in call.billed:
            if e.usage is not None:
                usage = usage + e.usage
        self.record(
            Attempt(
                **base,
                decision="failed" if is_last else "escalated",
                reason=f"error: {type(err).__name__}" + (f"; {note}" if note else ""),
                usage=usage,
                cost=charge,
                latency_s=call.latency_s,
                retries=call.retries,
                error=str(err) if self.s.include_text else err.redacted(),  # a 400 may quote the prompt
                charged=why,
            )
        )
        if self.log is not None:
            self.log.warning(
                "cascade.attempt_failed",
                run_id=self.run_id,
                **base,
                error=type(err).__name__,
                status_code=err.status_code,
                retries=call.retries,
                latency_ms=round(call.latency_s * 1000, 3),
                **({"cost": str(charge), "charged": why} if why else {}),
                **({"retry": note} if note else {}),
            )

    def decide(
        self,
        tier: Tier,
        is_last: bool,
        base: dict[str, Any],
        call: CallOutcome,
        completion: Completion,
        cost: Decimal,
        rated: RateOutcome | None,
        scorer_cost: Decimal,
        reused: int,
        charged: str | None = None,
        hedged: str | None = None,
    ) -> CascadeResult | None:
        """Accept or escalate a scored completion; the result when accepted."""
        score = rated.score if rated is not None else None
        latency = call.latency_s + (rated.latency_s if rated is not None else 0.0)
        chosen = score.chosen if score is not None and 0 <= score.chosen < len(completion.samples) else 0
        sample = completion.samples[chosen] if completion.samples else Sample("")
        value = score.value if score is not None else None
        decision, reason, accepted = _verdict(
            tier, value, rated.error if rated is not None else None, is_last
        )
        self.record(
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
                answer=sample.text if self.s.include_text else None,
                tool_calls=sample.tool_calls,
                score_detail=dict(score.detail) if score is not None else {},
                usage_source=completion.usage_source,
                reused_samples=reused,
                charged=charged,
                hedge=hedged,
            )
        )
        log = self.log
        if log is not None:
            log.info(
                "cascade.attempt_scored",
                run_id=self.run_id,
                usage_source=completion.usage_source,
                **base,
                decision=decision,
                score=value,
                threshold=tier.threshold,
                samples=len(completion.samples),
                cost=str(cost),
                scorer_cost=str(scorer_cost),
                latency_ms=round(latency * 1000, 3),
                retries=call.retries,
                **({"reused_samples": reused} if reused else {}),
            )
        candidate = _Candidate(sample, value, tier, completion.model or tier.provider.model)
        if accepted:
            return self.finish(candidate, True, "accepted")
        self.candidates += (candidate,)
        if not is_last and log is not None:
            log.info("cascade.escalated", run_id=self.run_id, **base, reason=reason)
        return None

    # -- the end --------------------------------------------------------------------------------

    def finish(self, c: _Candidate, accepted: bool, reason: str) -> CascadeResult:
        s = self.s
        result = CascadeResult(
            answer=c.sample.text,
            tier=c.tier.name,
            model=c.model,
            accepted=accepted,
            reason=reason,
            attempts=self.attempts,
            tool_calls=c.sample.tool_calls,
            policy=s.name,
            latency_s=time.perf_counter() - self.started,
            sample=c.sample,
        )
        if self.log is not None:
            self.log.info(
                "cascade.finished",
                run_id=self.run_id,
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

    def exhausted(self) -> CascadeResult:
        """Every tier ran and none was accepted: the policy's ``on_exhausted`` answer, or an error."""
        s = self.s
        if not self.candidates:
            if self.log is not None:
                self.log.warning("cascade.all_failed", run_id=self.run_id, policy=s.name)
            raise AllTiersFailedError(
                f"every tier of policy {s.name!r} failed: "
                + "; ".join(f"{a.tier}: {a.error or a.reason}" for a in self.attempts),
                self.attempts,
            )
        if s.on_unverified == "abstain":
            return _abstain(self, _unverified(self.attempts))
        if s.on_exhausted == "raise":
            raise CascadeExhaustedError(
                f"no tier of policy {s.name!r} produced an accepted answer", self.attempts
            )
        chosen = self.candidates[-1] if s.on_exhausted == "return_last" else _best(self.candidates)
        return self.finish(chosen, False, "exhausted")


def _abstain(run: _Run, why: str) -> CascadeResult:
    """No tier's answer was accepted and the policy abstains: a result with no answer, its reason,
    and every attempt (so its cost is all that was spent)."""
    last = run.candidates[-1]
    result = CascadeResult(
        answer="",
        tier=last.tier.name,
        model=last.model,
        accepted=False,
        reason="abstained",
        attempts=run.attempts,
        policy=run.s.name,
        latency_s=time.perf_counter() - run.started,
        abstention=why,
    )
    if run.log is not None:
        run.log.info(
            "cascade.abstained",
            run_id=run.run_id,
            policy=run.s.name,
            tier=last.tier.name,
            reason=why,
            cost=str(result.cost),
            latency_ms=round(result.latency_s * 1000, 3),
        )
    return result


def _unverified(attempts: Sequence[Attempt]) -> str:
    """Why the last scored tier's answer was not verified (its attempt's reason)."""
    for a in reversed(attempts):
        if a.decision in ("rejected", "failed", "escalated"):
            return f"tier {a.tier!r}: {a.reason}"
    return "no tier's answer was accepted"


def _verdict(
    tier: Tier, value: float | None, scorer_error: CascadeError | None, is_last: bool
) -> tuple[Decision, str, bool]:
    """(decision, reason, accepted) for a tier's scored completion."""
    if tier.scorer is None:
        return "accepted", "last tier, no scorer", True
    if scorer_error is not None:
        reason = f"scorer error: {type(scorer_error).__name__}: {scorer_error}"
        return ("failed" if is_last else "escalated"), reason, False
    if value is not None and tier.threshold is not None and value >= tier.threshold:
        return "accepted", f"score {value:.3f} >= {tier.threshold:.3f}", True
    return ("rejected" if is_last else "escalated"), f"score {value:.3f} < {tier.threshold:.3f}", False


def _best(candidates: Sequence[_Candidate]) -> _Candidate:
    """The best-scored candidate; ties go to the later (stronger) tier, unscored ones rank last."""
    best = candidates[0]
    for c in candidates[1:]:
        if (c.score if c.score is not None else -1.0) >= (best.score if best.score is not None else -1.0):
            best = c
    return best


def failed_charge(
    tier: Tier, request: Request, bought: int, billed: Sequence[ProviderError]
) -> tuple[Decimal, str]:
    """What failed attempts that may have been billed cost, and why (for the trace).

    Reported usage is charged at its cost, never above the call's worst case; a call cut off in
    flight (a timeout after the request went out) at the worst case, so caps never undercount.
    """
    worst = tier.call_worst(request, bought)
    total = sum((failure_charge(e, tier.price, worst) for e in billed), ZERO)
    reasons = [
        "cut off in flight: worst case" if e.cut_off else "usage reported by a failed response"
        for e in billed
        if e.cut_off or e.usage is not None
    ]
    return total, "; ".join(dict.fromkeys(reasons))


def _worst(run: _Run, tier: Tier) -> Decimal:
    """The reservation for ``tier``'s call and scoring (samples the run already bought cost nothing)."""
    cache = run.cache
    if cache.empty and reuse.current.get() is None:  # nothing bought yet: the same worst case without
        return tier.worst_case(run.request)  # the context variable (a set costs two objects in flight)
    bought = cache.bought(tier.call_key, run.request) if tier.call_key else 0
    token = reuse.current.set(cache)  # ...nor those the scorer's providers would reuse
    try:
        return tier.worst_case(run.request, bought)
    finally:
        reuse.current.reset(token)


def _reserve(
    run: _Run, tier: Tier, worst: Decimal
) -> Generator[Action, Outcome, tuple[str | None, BudgetExceededError | None]]:
    """Hold ``worst`` against the per-request cap and every window cap: (hold, refusal)."""
    refusal = run.per_request_refusal(tier, worst)
    if refusal is not None or not run.buckets:
        return None, refusal
    held = yield Reserve(run.s.budget, run.buckets, worst)
    assert isinstance(held, Reserved)
    return held.hold, held.refusal


def _call(run: _Run, tier: Tier, tries: int, wait: float, at: float | None) -> Call:
    """The action that calls ``tier`` (``tries`` left, after ``wait`` seconds, over by ``at``)."""
    return Call(tier, run.request, tier.samples, run.cache, run.capped, tries, wait, at)


def _deadline(tier: Tier) -> float | None:
    """When (``time.monotonic()``) the tier's whole call must be over, retries and waits included."""
    timeout = getattr(tier.provider, "timeout", None)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout < float("inf"):
        return time.monotonic() + float(timeout)
    return None


_NOTHING_BEFORE = CallOutcome(None, None, -1, 0.0)  # shared, never changed: no tries yet


def _joined(earlier: CallOutcome, call: CallOutcome | None) -> CallOutcome:
    """One outcome for a tier's tries over several reservations (``earlier``: the tries before)."""
    if call is None:
        return earlier
    if earlier.retries < 0:  # nothing before
        return call
    return CallOutcome(
        call.completion,
        call.error,
        earlier.retries + 1 + call.retries,
        earlier.latency_s + call.latency_s,
        earlier.billed + call.billed,
    )


def _spent_by(error: CascadeError | None) -> Decimal:
    """What a failed scorer spent before failing (only :class:`ScorerError` carries a cost)."""
    return error.cost if isinstance(error, ScorerError) else ZERO


def _traced(run: _Run, exc: BaseException) -> None:
    """The run's trace goes with the exception that ends it (so its spend is reported)."""
    with contextlib.suppress(AttributeError, TypeError):  # an exception without a __dict__
        exc.attempts = run.attempts  # type: ignore[attr-defined]


def _abandon(
    run: _Run, exc: BaseException, hold: str, amount: Decimal, base: dict[str, Any]
) -> Generator[Action, Outcome, None]:
    """Settle a hold when the run ends mid-step (cancelled, or an unexpected exception).

    The hold would otherwise count against the caps until it expires; it is charged at what the
    step may have cost (the worst case for a call cut off in flight), so caps are never undercounted.
    A driver that threw ``exc`` in executes the :class:`Settle`; a closed generator cannot yield, so
    then the hold is settled here, synchronously.
    """
    if run.log is not None:
        run.log.warning("cascade.abandoned", run_id=run.run_id, **base, settled=str(amount))
    if not isinstance(exc, GeneratorExit):  # the trace goes with the exception: spend is reported
        run.spent += amount
        reason = f"abandoned: {type(exc).__name__}"
        run.record(
            Attempt(**base, decision="failed", reason=reason, cost=amount, charged="cut off: worst case")
        )
        _traced(run, exc)
    if isinstance(exc, GeneratorExit):
        run.s.budget.settle(hold, amount)
    else:
        yield Settle(run.s.budget, hold, amount)


# -- hedged escalation (the driver side is cascade.engine.hedge) ----------------------------------


def _hedged(
    run: _Run, call: Call, later: Sequence[Tier], worst: Decimal
) -> Generator[Action, Outcome, CallOutcome]:
    """``call`` with the next tier armed as a backup, when the tier's hedge has a delay yet."""
    assert call.tier.hedge is not None
    assert run.backup is None  # a tier that took a backup's call has that call's own hedge instead
    hedged = yield _plan(run, call, later, worst, 0.0)
    assert isinstance(hedged, Hedged)
    run.backup = hedged.backup
    _observe(run, call.tier, hedged.call, hedged.seconds)
    return hedged.call


def _observe(run: _Run, tier: Tier, call: CallOutcome, seconds: float | None) -> None:
    """Record a call the tier took as its own (its hedged call, or its backup call it joined) in its
    latency window (``after: pNN``), timed on the clock the hedge's delay follows: when it answered.

    A cancelled backup's call is not recorded: only those that answered before the cancel would
    be, the fast ones, and the window would say the tier is faster than it is."""
    quantile = tier.hedge.quantile if tier.hedge is not None else None
    if quantile is not None and seconds is not None and call.completion is not None:
        run.s.latencies.observe(tier.name, seconds)


def _plan(run: _Run, call: Call, later: Sequence[Tier], held: Decimal, since: float) -> Hedge:
    """``call``'s hedge: the next tier as its backup, and when that tier hedges too, the backup's
    own hedge (:attr:`Hedge.then`, the tier after next), and so on down the tiers.

    Every call is reserved before it starts: the per-request cap is checked here for the calls of
    the chain together (``held``: the worst cases before this backup), a window-cap reservation is
    made by the driver when each backup launches. ``since``: the delays before ``call`` launches.
    """
    tier, hedge = call.tier, call.tier.hedge
    delay = hedge.delay(tier.name, run.s.latencies) if hedge is not None else None
    after = later[0] if later else None
    if delay is None or after is None or after.skip is not None:
        # no hedge, warming up (pNN), or the next tier may be skipped
        return Hedge(call, None, delay, None, ZERO)
    extra = _worst(run, after) if run.capped else ZERO
    refusal = run.per_request_refusal(after, held + extra)
    reserve = Reserve(run.s.budget, run.buckets, extra) if run.buckets and refusal is None else None
    at = _deadline(after)  # counted from the backup's launch
    at = None if at is None else at + since + delay
    backup = Call(after, run.request, after.samples, run.cache, run.capped, deadline=at)
    then = None if refusal is not None else _plan(run, backup, later[1:], held + extra, since + delay)
    if then is not None and then.backup is None:  # the backup's tier does not hedge (or cannot yet)
        then = None
    return Hedge(call, backup, delay, reserve, extra, refusal, then)


def _join(run: _Run) -> Generator[Action, Outcome, Resolved]:
    """The tier before escalated: its backup's call (None when it never launched)."""
    backup = run.backup
    assert backup is not None
    resolved = yield Join(backup)  # run.backup stays set until then: a cancel meanwhile drops it
    assert isinstance(resolved, Resolved)
    run.backup = backup.next  # the backup's own hedge, armed when it launched: now this tier's
    _hedge_note(run, backup, resolved)
    if resolved.call is not None:  # this tier's call: its latency is the tier's, as a hedged call's
        _observe(run, backup.call.tier, resolved.call, resolved.seconds)
    return resolved


def _cancel_backup(run: _Run, why: str, cut: bool = False) -> Generator[Action, Outcome, None]:
    """Cancel the backup, and the backups it armed in turn (a chain of hedges), charging each what
    it may have cost: a call cut off in flight its worst case (``cut``: the run was abandoned, so
    at the full hold), an answer already in at its cost.

    A backup whose call raised (a bug, not a provider error) is charged as cut off; once every
    hold of the chain is settled its error is raised (unless ``cut``: the run already ends with one).
    """
    backup = run.backup
    error: BaseException | None = None
    while backup is not None:
        resolved = yield Cancel(backup)
        assert isinstance(resolved, Resolved)
        run.backup = backup.next  # final now: the backup's task (or thread) has ended
        _hedge_note(run, backup, resolved)
        if resolved.launched is not None:
            yield from _charge_cancelled(run, backup, resolved, why, cut)
        error = error or resolved.error
        backup = run.backup
    if error is not None and not cut:
        _traced(run, error)
        raise error


def _charge_cancelled(
    run: _Run, backup: Backup, resolved: Resolved, why: str, cut: bool
) -> Generator[Action, Outcome, None]:
    """Charge a cancelled backup that launched, settle its hold, and record it in the trace."""
    tier, request = backup.call.tier, run.request
    call = resolved.call
    usage, latency = Usage(), 0.0
    if cut and call is None:
        charge, charged = resolved.worst, "cut off: worst case"
    elif call is None:
        charge, charged = tier.call_worst(request), "cut off in flight: worst case"
    elif call.completion is not None:
        completion, usage, latency = call.completion, call.completion.usage, call.latency_s
        charge = completion.cost if completion.cost is not None else tier.price.cost(completion.usage)
        charged = "answered before the cancel"
    else:
        charge, charged = failed_charge(tier, request, 0, call.billed)
        latency = call.latency_s
    run.spent += charge
    if resolved.hold is not None:
        yield Settle(run.s.budget, resolved.hold, charge)
    base: dict[str, Any] = {"tier": tier.name, "model": tier.provider.model, "provider": tier.provider_kind}
    launched = f"started {resolved.launched:.2f}s into the tier before"
    run.record(
        Attempt(
            **base,
            decision="cancelled",
            reason=f"hedge cancelled: {why}",
            usage=usage,
            cost=charge,
            latency_s=latency,
            charged=charged or None,
            hedge=launched,
        )
    )
    if run.log is not None:
        run.log.info("cascade.hedge_cancelled", run_id=run.run_id, **base, cost=str(charge), why=why)


def _hedge_note(run: _Run, backup: Backup, resolved: Resolved) -> None:
    """Say on the hedging tier's attempt what its hedge did (nothing when the verdict came in time)."""
    tier = backup.hedge.call.tier.name
    target = backup.call.tier.name
    if resolved.launched is not None:
        note = (
            f"{target!r} started at {resolved.launched:.2f}s (no verdict by {backup.hedge.after or 0:.2f}s)"
        )
    elif resolved.refusal is not None:
        note = f"not started: budget: {resolved.refusal}"
    else:
        return
    if run.log is not None:
        run.log.info("cascade.hedge", run_id=run.run_id, tier=tier, backup=target, note=note)
    for i in range(len(run.attempts) - 1, -1, -1):
        if run.attempts[i].tier == tier:  # a backup's own note (when it started) stays first
            before = run.attempts[i].hedge
            noted = replace(run.attempts[i], hedge=f"{before}; {note}" if before else note)
            run.attempts = (*run.attempts[:i], noted, *run.attempts[i + 1 :])
            return
