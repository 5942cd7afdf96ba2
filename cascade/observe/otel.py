"""OpenTelemetry traces of every run (optional: ``pip install 'cascade-llm[otel]'``).

One span per run (``invoke_workflow POLICY``) and, under it, one span per tier call and per call a
scorer makes (a self-consistency voter, a mixture source, a judge), named and attributed as the
OpenTelemetry GenAI semantic conventions say (``chat MODEL``; ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.response.finish_reasons``). Every accept
or escalate decision is a ``gen_ai.evaluation.result`` event on the tier's span (the scorer, the
score, the decision as its label, the reason as its explanation). Costs are the attributes
``cascade.cost_usd`` (and ``cascade.scorer_cost_usd``). Prompt and answer texts are recorded only
with ``include_text`` (``gen_ai.input.messages`` / ``gen_ai.output.messages``).

The spans are built by the :class:`~cascade.observe.Observer` from the actions and outcomes it
watches, so the sync and async drivers, the library and the gateway are traced alike. The run's
span is a child of the span current when the run starts (a web framework's server span, say).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cascade.engine.actions import Call, CallOutcome, Rate, Tier
from cascade.engine.reuse import SampleCache
from cascade.errors import ConfigurationError
from cascade.protocols import Provider
from cascade.request import Request
from cascade.types import Attempt, CascadeResult, Completion, Message, Usage

_SCOPE = "cascade"
EVALUATION_EVENT = "gen_ai.evaluation.result"


def _trace() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigurationError(
            "OpenTelemetry traces need opentelemetry-api: pip install 'cascade-llm[otel]'"
        ) from None
    return trace


class Telemetry:
    """Makes the spans of each run (see the module docstring).

    ``tracer_provider``: where spans go (default: the global one OpenTelemetry is configured with).
    ``include_text``: record prompts and answers on the spans (off: never).
    """

    def __init__(self, tracer_provider: Any = None, *, include_text: bool = False) -> None:
        self.api = _trace()
        self.tracer = self.api.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.include_text = include_text

    def run(
        self, policy: str, tiers: Sequence[Tier], request: Request, session: str | None = None
    ) -> RunTrace:
        """The trace of one run of ``policy`` on ``request``, its span started now."""
        return RunTrace(self, policy, tiers, request, session)


class RunTrace:
    """The spans of one run: the run's, its tier calls' and its scorers' calls'."""

    def __init__(
        self, telemetry: Telemetry, policy: str, tiers: Sequence[Tier], request: Request, session: str | None
    ) -> None:
        self.t = telemetry
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": policy,
            "gen_ai.request.model": f"cascade/{policy}",
        }
        if session is not None:
            attrs["gen_ai.conversation.id"] = session
        if telemetry.include_text:
            attrs["gen_ai.input.messages"] = _messages(request.messages)
        self.span = telemetry.tracer.start_span(f"invoke_workflow {policy}", attributes=attrs)
        self.context = telemetry.api.set_span_in_context(self.span)
        self.tiers: dict[str, Any] = {}  # tier name -> its last call's span
        self.calls: list[Any] = []  # every tier call's span (open until the run ends)
        self.ends: dict[int, int] = {}  # id(span) -> when its call ended (ns)
        self.rated: dict[str, int] = {}  # tier name -> when its scorer finished (ns)
        self.scorers = {t.name: _scorer_name(t) for t in tiers}

    # -- what the observer sees -----------------------------------------------------------------

    def call(self, action: Call) -> None:
        """A tier call starts."""
        tier = action.tier
        attrs = _chat(tier.provider.model, tier.provider_kind, tier.name)
        attrs.update({"gen_ai.request.max_tokens": tier.max_tokens, "gen_ai.request.choice.count": action.n})
        span = self.t.tracer.start_span(f"chat {tier.provider.model}", context=self.context, attributes=attrs)
        self.tiers[tier.name] = span
        self.calls.append(span)  # a tier called again (a retry under a cap) is a span per call

    def called(self, action: Call, outcome: CallOutcome) -> None:
        """The tier call is over (its span ends with the run, when its decision is known)."""
        span = self.tiers.get(action.tier.name)
        if span is None:
            return
        self.ends[id(span)] = time.time_ns()
        if outcome.completion is not None:
            _response(span, outcome.completion, self.t.include_text)
        elif outcome.error is not None:
            _failed(span, self.t.api, outcome.error)
        if outcome.retries:
            span.set_attribute("cascade.retries", outcome.retries)

    def rate(self, action: Rate) -> Rate:
        """The scorer's action, its provider calls traced (under the run's span)."""
        if action.cache is None:
            return action
        name = self.scorers.get(action.tier.name, "none")
        return replace(action, cache=_TracedCache(action.cache, self, action.tier.name, name))

    def scored(self, action: Rate) -> None:
        """The tier's scorer is done (its decision is the evaluation event's time)."""
        self.rated[action.tier.name] = time.time_ns()

    # -- the end ----------------------------------------------------------------------------------

    def finish(self, result: CascadeResult | None, error: BaseException | None) -> None:
        """The decisions as evaluation events, costs as attributes; every span ends."""
        attempts: Sequence[Attempt] = (
            result.attempts if result is not None else getattr(error, "attempts", ()) or ()
        )
        total, usage = 0.0, Usage()
        for a in attempts:
            total += float(a.total_cost)
            usage = usage + a.usage
            span = self.tiers.get(a.tier)
            if span is not None:
                span.set_attribute("cascade.cost_usd", float(a.cost))
                span.set_attribute("cascade.decision", a.decision)
                if a.scorer_cost:
                    span.set_attribute("cascade.scorer_cost_usd", float(a.scorer_cost))
            if a.decision in ("accepted", "escalated"):
                self._evaluation(span if span is not None else self.span, a)
        s = self.span
        s.set_attribute("cascade.cost_usd", total)
        s.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        s.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if result is not None:
            s.set_attribute("gen_ai.response.model", result.model)
            s.set_attribute("cascade.tier", result.tier)
            s.set_attribute("cascade.accepted", result.accepted)
            s.set_attribute("cascade.reason", result.reason)
            if self.t.include_text:
                s.set_attribute("gen_ai.output.messages", _messages((Message("assistant", result.answer),)))
        elif error is not None:
            _failed(s, self.t.api, error)
        for span in self.calls:
            span.end(end_time=self.ends.get(id(span)))
        s.end()

    def _evaluation(self, span: Any, a: Attempt) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.evaluation.name": self.scorers.get(a.tier, "none"),
            "gen_ai.evaluation.score.label": a.decision,
            "gen_ai.evaluation.explanation": a.reason,
            "cascade.tier": a.tier,
        }
        if a.score is not None:
            attrs["gen_ai.evaluation.score.value"] = a.score
        if a.threshold is not None:
            attrs["cascade.threshold"] = a.threshold
        span.add_event(EVALUATION_EVENT, attributes=attrs, timestamp=self.rated.get(a.tier))


class _TracedCache(SampleCache):
    """The run's sample cache as a scorer sees it: each provider call it makes is a span."""

    __slots__ = ("inner", "run", "scorer", "tier")

    def __init__(self, inner: SampleCache, run: RunTrace, tier: str, scorer: str) -> None:
        # a view of ``inner`` (its state stays there): no SampleCache state of its own
        self.inner, self.run, self.tier, self.scorer = inner, run, tier, scorer

    def bought(self, key: str, request: Request) -> int:
        return self.inner.bought(key, request)

    def missing(self, key: str, request: Request, n: int) -> int:
        return self.inner.missing(key, request, n)

    def complete(self, key: str, provider: Provider, request: Request, n: int) -> Completion:
        with self._span(key, provider, n) as span:
            got = self.inner.complete(key, provider, request, n)
            _response(span, got, self.run.t.include_text)
            return got

    async def acomplete(self, key: str, provider: Provider, request: Request, n: int) -> Completion:
        with self._span(key, provider, n) as span:
            got = await self.inner.acomplete(key, provider, request, n)
            _response(span, got, self.run.t.include_text)
            return got

    def _span(self, key: str, provider: Provider, n: int) -> Any:
        attrs = _chat(provider.model, _kind(key), self.tier)
        attrs.update({"gen_ai.request.choice.count": n, "cascade.scorer": self.scorer})
        return self.run.t.tracer.start_as_current_span(
            f"chat {provider.model}", context=self.run.context, attributes=attrs
        )


def _kind(key: str) -> str:
    """The provider kind in a call key (see :func:`cascade.engine.reuse.call_key`)."""
    try:
        first = json.loads(key)[0]
    except (ValueError, IndexError, KeyError, TypeError):
        return ""
    return first if isinstance(first, str) else ""


def _chat(model: str, provider: str, tier: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider or "unknown",
        "gen_ai.request.model": model,
        "cascade.tier": tier,
    }


def _response(span: Any, c: Completion, include_text: bool) -> None:
    span.set_attribute("gen_ai.response.model", c.model)
    span.set_attribute("gen_ai.usage.input_tokens", c.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", c.usage.output_tokens)
    if c.usage.cached_input_tokens:
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", c.usage.cached_input_tokens)
    if c.request_id:
        span.set_attribute("gen_ai.response.id", c.request_id)
    reasons = [s.finish_reason for s in c.samples if s.finish_reason]
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
    reused = c.raw.get("reused_samples")
    if isinstance(reused, int) and reused:
        span.set_attribute("cascade.reused_samples", reused)
    if include_text:
        answers = tuple(Message("assistant", s.text) for s in c.samples)
        span.set_attribute("gen_ai.output.messages", _messages(answers))


def _failed(span: Any, api: Any, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(api.Status(api.StatusCode.ERROR, type(error).__name__))


def _messages(messages: Sequence[Message]) -> str:
    """Messages as the conventions' JSON (role and text parts)."""
    return json.dumps([{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages])


def _scorer_name(tier: Tier) -> str:
    scorer = tier.scorer
    return type(scorer).__name__ if scorer is not None else "none"


__all__ = ["EVALUATION_EVENT", "RunTrace", "Telemetry"]
