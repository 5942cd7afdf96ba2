"""Operator metrics for Prometheus (optional: ``pip install 'cascade-llm[prometheus]'``).

Counters and histograms, labelled by policy (and tier, reason where it applies):

- ``cascade_requests_total{policy, outcome}``: runs, by outcome (``accepted``, ``exhausted``,
  ``budget``, ``abstained``, ``error``)
- ``cascade_answers_total{policy, tier}`` / ``cascade_accepts_total{policy, tier}``: which tier
  answered (an abstention answers nothing), and which accepted
- ``cascade_escalations_total{policy, tier, reason}``: escalations by reason (``low_score``,
  ``error``, ``scorer_error``, ``pinned``)
- ``cascade_spend_usd_total{policy}`` and ``cascade_shadow_spend_usd_total{policy}``
- ``cascade_request_latency_seconds{policy}`` and ``cascade_tier_latency_seconds{policy, tier}``

The metrics are registered once per registry (the default one unless given), so several cascades
in one process share them. Expose them with ``prometheus_client.start_http_server(port)`` or your
web framework's metrics endpoint.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from cascade.errors import ConfigurationError
from cascade.types import CascadeResult

_registered: dict[int, dict[str, Any]] = {}
_lock = threading.Lock()


def reason_kind(reason: str) -> str:
    """An escalation reason as a small label set."""
    if reason.startswith("pinned"):
        return "pinned"
    if reason.startswith("scorer error"):
        return "scorer_error"
    if reason.startswith("error"):
        return "error"
    if reason.startswith("score"):
        return "low_score"
    if reason.startswith("budget"):
        return "budget"
    return "other"


def _metrics(registry: Any) -> dict[str, Any]:
    try:
        from prometheus_client import REGISTRY, Counter, Histogram
    except ImportError:
        raise ConfigurationError(
            "Prometheus metrics need prometheus-client: pip install 'cascade-llm[prometheus]'"
        ) from None
    reg = REGISTRY if registry is None else registry
    with _lock:
        if id(reg) not in _registered:
            buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
            kw: dict[str, Any] = {"registry": reg}
            _registered[id(reg)] = {
                "requests": Counter("cascade_requests", "Cascade runs", ["policy", "outcome"], **kw),
                "answers": Counter("cascade_answers", "Answers returned, by tier", ["policy", "tier"], **kw),
                "accepts": Counter("cascade_accepts", "Accepted answers, by tier", ["policy", "tier"], **kw),
                "escalations": Counter(
                    "cascade_escalations", "Escalations by reason", ["policy", "tier", "reason"], **kw
                ),
                "spend": Counter("cascade_spend_usd", "Spend of live runs (USD)", ["policy"], **kw),
                "shadow_spend": Counter(
                    "cascade_shadow_spend_usd", "Spend of shadow calls (USD)", ["policy"], **kw
                ),
                "latency": Histogram(
                    "cascade_request_latency_seconds", "Run latency", ["policy"], buckets=buckets, **kw
                ),
                "tier_latency": Histogram(
                    "cascade_tier_latency_seconds",
                    "Tier call + scoring latency",
                    ["policy", "tier"],
                    buckets=buckets,
                    **kw,
                ),
            }
        return _registered[id(reg)]


class PrometheusMetrics:
    """Records runs into Prometheus metrics (see the module docstring)."""

    def __init__(self, registry: Any = None) -> None:
        self.m = _metrics(registry)

    def run(self, policy: str, result: CascadeResult | None, error: BaseException | None) -> None:
        m = self.m
        if result is None:
            m["requests"].labels(policy, "error").inc()
            attempts = getattr(error, "attempts", ()) or ()
        else:
            m["requests"].labels(policy, result.reason).inc()
            if not result.abstained:
                m["answers"].labels(policy, result.tier).inc()
            if result.accepted:
                m["accepts"].labels(policy, result.tier).inc()
            m["latency"].labels(policy).observe(result.latency_s)
            attempts = result.attempts
        spent = Decimal(0)
        for a in attempts:
            spent += a.total_cost
            if a.decision == "escalated":
                m["escalations"].labels(policy, a.tier, reason_kind(a.reason)).inc()
            if a.latency_s:
                m["tier_latency"].labels(policy, a.tier).observe(a.latency_s)
        if spent:
            m["spend"].labels(policy).inc(float(spent))

    def shadow(self, policy: str, spent: Decimal) -> None:
        if spent:
            self.m["shadow_spend"].labels(policy).inc(float(spent))


__all__ = ["PrometheusMetrics", "reason_kind"]
