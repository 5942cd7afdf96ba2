"""Watch live traffic and keep a policy tuned: outcome logs, shadow sampling, session pinning, metrics.

- :class:`OutcomeLog`: rows in the recorded-outcomes format, written by a background thread
- :class:`Shadow`: call the tiers a sampled request skipped, in the background, under its own cap
- :class:`SessionPins`: a session that escalated starts at that tier until its TTL ends
  (:class:`RedisSessionPins`: the same, kept in Redis, when the policy's ledger is Redis)
- :class:`PrometheusMetrics`: optional operator metrics (``prometheus-client``)
- :class:`Telemetry`: optional OpenTelemetry spans, GenAI conventions (``opentelemetry-api``)
- :class:`Observer`: the object a :class:`~cascade.Cascade` holds that ties them to every run;
  :func:`from_policy` builds it from a policy's ``logging`` (outcomes, prometheus, otel), ``shadow``
  and ``session``
"""

from __future__ import annotations

from typing import Any

from cascade.observe.metrics import PrometheusMetrics
from cascade.observe.observer import Observer
from cascade.observe.otel import Telemetry
from cascade.observe.outcome_log import OutcomeLog
from cascade.observe.session import Pins, RedisSessionPins, SessionPins, parse_duration
from cascade.observe.shadow import Shadow


def from_policy(policy: Any, tiers: Any, base_dir: Any = None, ledger: Any = None) -> Observer | None:
    """The observer a policy asks for (None when it asks for nothing). With a Redis ``ledger``
    session pins live in Redis beside it (shared by the workers of a fleet)."""
    from pathlib import Path

    from cascade.observe.record import card

    out = policy.logging.outcomes
    shadow_spec, session_spec = policy.shadow, policy.session
    logging = policy.logging
    watched = logging.prometheus or logging.otel
    if out is None and shadow_spec is None and session_spec is None and not watched:
        return None
    log = None
    if out is not None:
        path = Path(out.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        log = OutcomeLog(path, card=card(policy.name, tuple(tiers)), queue_size=out.queue_size)
    shadow = None
    if shadow_spec is not None and shadow_spec.rate > 0:
        cap = shadow_spec.cap
        shadow = Shadow(
            shadow_spec.rate,
            cap=cap.limit if cap is not None else None,
            window=cap.window if cap is not None else "day",
        )
    pins: Pins | None = None
    if session_spec is not None:
        ttl = parse_duration(session_spec.ttl)
        from cascade.budget.redis import RedisLedger

        if isinstance(ledger, RedisLedger):
            pins = RedisSessionPins(ledger.client, ttl, prefix=ledger.prefix)
        else:
            pins = SessionPins(ttl)
    metrics = PrometheusMetrics() if policy.logging.prometheus else None
    observer = Observer(
        log=log,
        include_text=out.include_text if out is not None else False,
        shadow=shadow,
        pins=pins,
        metrics=metrics,
        policy_id=policy.identity(),
        telemetry=Telemetry(include_text=logging.include_text) if logging.otel else None,
    )
    observer.tiers = tuple(tiers)
    return observer


__all__ = [
    "Observer",
    "OutcomeLog",
    "PrometheusMetrics",
    "RedisSessionPins",
    "SessionPins",
    "Shadow",
    "Telemetry",
    "from_policy",
    "parse_duration",
]
