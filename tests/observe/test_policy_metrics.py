"""Policy keys that build the observer, durations, and the Prometheus metrics."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cascade import Cascade
from cascade.errors import PolicyError
from cascade.observe import Observer, PrometheusMetrics, SessionPins, parse_duration
from cascade.observe.metrics import reason_kind
from cascade.policy import loader
from tests.observe.support import observed

POLICY = """\
name: watched
tiers:
  - name: cheap
    provider: scripted
    model: c
    options: {answers: [a]}
    scorer: {kind: fixed, value: 0.1}
    threshold: 0.5
  - name: strong
    provider: scripted
    model: s
    options: {answers: [b]}
logging:
  outcomes: {path: logs/outcomes.jsonl}
shadow: {rate: 0.5, cap: {limit: 2, window: day}}
session: {pin: escalated, ttl: 30m}
"""


def test_a_policy_builds_its_observer(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    c = Cascade.from_policy(tmp_path / "p.yaml")
    obs = c.observer
    assert obs is not None and obs.log is not None and obs.shadow is not None and obs.pins is not None
    assert obs.shadow.rate == 0.5 and obs.shadow.cap == Decimal(2) and obs.pins.ttl == 1800
    c.run("q", session="s")
    assert c.run("q", session="s").attempts[0].reason.startswith("pinned")
    c.close()
    assert len(list((tmp_path / "logs").glob("outcomes-*.jsonl"))) == 1  # relative to the policy file


def test_a_policy_without_the_keys_has_no_observer(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.split("logging:")[0])
    assert Cascade.from_policy(tmp_path / "p.yaml").observer is None


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ("shadow: {rate: 1.5}", "shadow.rate"),
        ("session: {ttl: soon}", "session.ttl"),
        ("session: {pin: always}", "session.pin"),
        ("logging: {outcomes: {path: x, gzip: true}}", "logging.outcomes.gzip"),
    ],
)
def test_bad_keys_are_policy_errors(tmp_path: Path, snippet: str, where: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(POLICY.split("logging:")[0] + snippet + "\n")
    with pytest.raises(PolicyError) as err:
        loader.load(p)
    assert where in str(err.value)


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration(90) == 90
    assert parse_duration("1.5d") == 129600
    for bad in ("", "m", "-1s", "0", True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)  # type: ignore[arg-type]


def test_pins_are_bounded_and_only_move_up() -> None:
    pins = SessionPins(10, max_sessions=2, clock=lambda: 0.0)
    pins.note("a", 2)
    pins.note("a", 1)
    assert pins.start("a") == 2
    pins.note("b", 1)
    pins.note("c", 1)
    assert len(pins) == 2 and pins.start("a") == 0  # the oldest session was forgotten


def test_prometheus_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    c, obs = observed(tmp_path, rate=1.0)
    obs.metrics = PrometheusMetrics(registry)
    c.run("q")
    c.close()

    def value(name: str, **labels: str) -> float:
        v = registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    assert value("cascade_requests_total", policy="obs", outcome="accepted") == 1
    assert value("cascade_accepts_total", policy="obs", tier="medium") == 1
    assert value("cascade_escalations_total", policy="obs", tier="small", reason="low_score") == 1
    assert value("cascade_spend_usd_total", policy="obs") == pytest.approx(0.00004)
    assert value("cascade_shadow_spend_usd_total", policy="obs") == pytest.approx(0.00002)
    assert value("cascade_request_latency_seconds_count", policy="obs") == 1
    assert PrometheusMetrics(registry).m is obs.metrics.m  # registered once per registry


def test_reason_kinds() -> None:
    assert reason_kind("score 0.1 < 0.5") == "low_score"
    assert reason_kind("error: ProviderTimeoutError") == "error"
    assert reason_kind("scorer error: ScorerError: x") == "scorer_error"
    assert reason_kind("pinned: session 's'") == "pinned"


def test_observer_without_parts_is_a_pass_through(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    bare = Cascade(c.tiers, name="obs", observer=Observer())
    assert bare.run("q").answer == c.run("q").answer
    bare.close()
    c.close()
