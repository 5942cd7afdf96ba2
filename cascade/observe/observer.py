"""The :class:`Observer` a :class:`~cascade.engine.cascade.Cascade` holds: it watches each run's
actions and outcomes (wrapping the engine's :func:`~cascade.engine.loop.steps` generator, so the
sync and async drivers share it), then logs the row, starts shadow work, updates session pins and
metrics. All of it after the result exists and without blocking: the caller's answer is the
engine's, unchanged but for the ``pinned`` entries in the trace of a pinned session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

from cascade.engine.actions import Call, CallOutcome, Rate, RateOutcome, Tier
from cascade.engine.drive import execute
from cascade.engine.hedge import Hedge, Hedged, Join, Resolved
from cascade.engine.loop import Action, Settings, failed_charge, steps
from cascade.errors import CascadeError, ProviderError, ScorerError, error_text
from cascade.logging import get_logger, listening
from cascade.observe.metrics import PrometheusMetrics
from cascade.observe.otel import RunTrace, Telemetry
from cascade.observe.outcome_log import OutcomeLog
from cascade.observe.record import Row, TierOutcome, card, render
from cascade.observe.session import Pins
from cascade.observe.shadow import Shadow
from cascade.request import Request
from cascade.types import ZERO, Attempt, CascadeResult


class Observer:
    """Outcome log, shadow sampling, session pins, metrics and traces around every run (all optional)."""

    def __init__(
        self,
        *,
        log: OutcomeLog | None = None,
        include_text: bool = False,
        shadow: Shadow | None = None,
        pins: Pins | None = None,
        metrics: PrometheusMetrics | None = None,
        policy_id: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.log = log
        self.include_text = include_text
        self.shadow = shadow
        self.pins = pins
        self.metrics = metrics
        self.policy_id = policy_id
        self.telemetry = telemetry
        self.tiers: tuple[Tier, ...] = ()
        if log is not None and log.render is None:
            log.render = self._render

    def _render(self, row: Row) -> dict[str, Any]:  # runs on the log's writer thread
        return render(row, self.include_text, self.tiers, self.policy_id)

    # -- around a run ---------------------------------------------------------------------------------

    def steps(
        self, settings: Settings, request: Request, session: str | None = None
    ) -> Generator[Any, Any, CascadeResult]:
        """The engine's steps for ``request``, watched (and started at a pinned tier)."""
        if self.tiers is not settings.tiers:
            self.tiers = settings.tiers
            if self.log is not None and not self.log.card:  # the day's files name models and prices
                self.log.card = card(settings.name, settings.tiers)
        start = self.pins.start(session) if self.pins is not None and session is not None else 0
        start = min(start, len(settings.tiers) - 1)
        row = Row(request, settings.name, session=session)
        if start:
            row.pinned = settings.tiers[start].name
        began = time.perf_counter()
        tel = self.telemetry
        trace = tel.run(settings.name, settings.tiers, request, session) if tel is not None else None
        gen = steps(settings, request, start)
        try:
            action = next(gen)
            while True:
                if trace is not None:
                    action = _traced(trace, action)
                try:
                    outcome = yield action
                except GeneratorExit as exc:
                    gen.close()
                    if trace is not None:
                        trace.finish(None, exc)
                    raise
                except BaseException as exc:  # thrown into the driver: the loop settles its holds
                    action = gen.throw(exc)
                    continue
                called = _called(action, outcome)
                if called is not None:
                    tier, call = called
                    t = row.tiers[tier.name] = TierOutcome(tier, latency_s=call.latency_s)
                    t.completion = call.completion
                    if call.error is not None:
                        t.error = error_text(call.error, self.include_text)
                elif isinstance(outcome, RateOutcome) and isinstance(action, Rate):
                    t = row.tiers[action.tier.name]
                    t.score, t.latency_s = outcome.score, t.latency_s + outcome.latency_s
                if trace is not None:
                    _outcome(trace, action, outcome)
                action = gen.send(outcome)
        except StopIteration as stop:
            result: CascadeResult = stop.value
            if start:
                result = _pinned(result, settings.tiers[:start], session)
            row.latency_s = time.perf_counter() - began
            self._finished(row, result, None, trace)
            return result
        except CascadeError as exc:
            row.latency_s = time.perf_counter() - began
            self._finished(row, None, exc, trace)
            raise
        except (Exception, asyncio.CancelledError) as exc:  # cancelled, or a crash: what it spent is logged
            row.latency_s = time.perf_counter() - began
            self._finished(row, None, exc, trace)
            raise

    def _finished(
        self, row: Row, result: CascadeResult | None, error: BaseException | None, trace: RunTrace | None
    ) -> None:
        if trace is not None:
            trace.finish(result, error)
        attempts = result.attempts if result is not None else getattr(error, "attempts", ()) or ()
        for a in attempts:
            t = row.tiers.get(a.tier)
            if t is None and a.total_cost:  # charged without an outcome (a call cut off by cancellation)
                tier = next((x for x in self.tiers if x.name == a.tier), None)
                if tier is not None:
                    t = row.tiers[a.tier] = TierOutcome(tier, error=a.reason)
            if t is not None:
                t.decision, t.reason, t.cost, t.scorer_cost = a.decision, a.reason, a.cost, a.scorer_cost
            else:  # a tier the run did not call: the budget stopped it, or a session pin skipped it
                row.uncalled[a.tier] = (a.decision, a.reason)
        if result is not None:
            row.accepted, row.reason = result.accepted, result.reason
            if result.abstained:  # no answer: the row says whose answer was withheld, and why
                row.abstained = {"tier": result.tier, "why": result.abstention or ""}
            else:
                row.answered = result.tier
        else:
            assert error is not None
            row.reason, row.error = "error", error_text(error, self.include_text)
        if self.metrics is not None:
            self.metrics.run(row.policy, result, error)
        if self.pins is not None and row.session is not None and result is not None:
            names = [t.name for t in self.tiers]
            self.pins.note(row.session, names.index(result.tier) if result.tier in names else 0)
        if result is not None and self.shadow is not None and self.shadow.sample():
            row.shadow = True  # a sampled row that already called every tier is complete as it is
            missing = [t for t in self.tiers if t.name not in row.tiers]
            if missing:
                if self.shadow.submit(lambda: self._shadow(row, missing)):
                    _event("cascade.shadow_sampled", policy=row.policy, tiers=[t.name for t in missing])
                    return
                row.shadow, row.shadow_skipped = False, "dropped"
                _event("cascade.shadow_dropped", policy=row.policy, pending=self.shadow.pending)
        if self.log is not None:
            self.log.write(row)

    # -- shadow work (a background thread) ----------------------------------------------------------

    def _shadow(self, row: Row, missing: list[Tier]) -> None:
        assert self.shadow is not None
        request = row.request
        total = ZERO
        for tier in missing:
            worst = tier.worst_case(request)
            if not self.shadow.reserve(worst):
                row.shadow_skipped = "cap"
                get_logger().info("cascade.shadow_capped", policy=row.policy, tier=tier.name)
                break
            t = row.tiers[tier.name] = TierOutcome(tier, shadow=True, decision="shadow", reason="shadow")
            began = time.perf_counter()
            spent = ZERO
            try:
                # the engine's call: retries, and a failed call that may have been billed is charged
                call = execute(Call(tier, request, tier.samples, None, capped=True))
                assert isinstance(call, CallOutcome)
                if call.completion is None:
                    assert call.error is not None
                    t.error = error_text(call.error, self.include_text)
                    if call.billed:
                        t.cost = spent = failed_charge(tier, request, 0, call.billed)[0]
                    continue
                completion = call.completion
                t.completion = completion
                t.cost = completion.cost if completion.cost is not None else tier.price.cost(completion.usage)
                spent = t.cost
                if tier.scorer is not None:
                    try:
                        t.score = tier.scorer.score(request, completion)
                        t.scorer_cost = t.score.cost
                    except (ScorerError, ProviderError) as exc:
                        t.error = f"scorer: {type(exc).__name__}: {exc}"
                        t.scorer_cost = exc.cost if isinstance(exc, ScorerError) else ZERO
                    spent += t.scorer_cost
            finally:
                t.latency_s = time.perf_counter() - began
                self.shadow.settle(worst, spent)
                total += spent
        if self.metrics is not None:
            self.metrics.shadow(row.policy, total)
        if self.log is not None:
            self.log.write(row)

    # -- resources ----------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Finish (or count as dropped) pending shadow work, then flush and close the log."""
        if self.shadow is not None:
            self.shadow.close(timeout)
        if self.log is not None:
            self.log.close()

    def stats(self) -> dict[str, Any]:
        """Counts for operators: rows written/dropped, shadow work done/dropped, shadow spend."""
        out: dict[str, Any] = {}
        if self.log is not None:
            out.update(logged=self.log.written, log_dropped=self.log.dropped, log_errors=self.log.errors)
        if self.shadow is not None:
            s = self.shadow
            out.update(
                shadow_submitted=s.submitted,
                shadow_completed=s.completed,
                shadow_dropped=s.dropped,
                shadow_skipped_cap=s.skipped_cap,
                shadow_spent=str(s.spent_total),
            )
        if self.pins is not None:
            out["pinned_sessions"] = len(self.pins)
        return out


def _traced(trace: RunTrace, action: Any) -> Any:
    """The action, noted in the run's trace (a scorer's, with its provider calls traced)."""
    if isinstance(action, Call):
        trace.call(action)
    elif isinstance(action, Rate):
        return trace.rate(action)
    return action


def _outcome(trace: RunTrace, action: Any, outcome: Any) -> None:
    if isinstance(outcome, CallOutcome) and isinstance(action, Call):
        trace.called(action, outcome)
    elif isinstance(outcome, RateOutcome) and isinstance(action, Rate):
        trace.scored(action)


def _pinned(result: CascadeResult, skipped: tuple[Tier, ...], session: str | None) -> CascadeResult:
    """The result with one ``pinned`` entry in the trace for every tier the session skipped."""
    target = result.attempts[0].tier if result.attempts else result.tier
    pinned = tuple(
        Attempt(
            tier=t.name,
            model=t.provider.model,
            provider=t.provider_kind,
            decision="escalated",
            reason=f"pinned: session {session!r} starts at tier {target!r}",
        )
        for t in skipped
    )
    _event("cascade.pinned", policy=result.policy, session=session, start=target, skipped=len(skipped))
    return replace(result, attempts=pinned + result.attempts)


def _event(name: str, **fields: Any) -> None:
    """An info event, built only when someone listens (as the engine's events)."""
    log = listening()
    if log is not None:
        log.info(name, **fields)


def _called(action: Action, outcome: object) -> tuple[Tier, CallOutcome] | None:
    """The tier a step called and its call's outcome (a hedge's tier call, or its backup joined)."""
    if isinstance(action, Call) and isinstance(outcome, CallOutcome):
        return action.tier, outcome
    if isinstance(action, Hedge) and isinstance(outcome, Hedged):
        return action.call.tier, outcome.call
    if isinstance(action, Join) and isinstance(outcome, Resolved) and outcome.call is not None:
        return action.backup.call.tier, outcome.call
    return None


__all__ = ["Observer"]
