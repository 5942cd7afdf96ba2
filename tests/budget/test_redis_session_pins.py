"""Session pins in Redis (a policy whose ledger is Redis): shared by workers, against a real server."""

from __future__ import annotations

from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from cascade import Cascade
from cascade.observe import RedisSessionPins, SessionPins
from tests.budget.conftest import free_port


def _policy(tmp_path: Path, redis_url: str, prefix: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: pinned\n"
        "tiers:\n"
        "  - {name: cheap, provider: scripted, model: c, options: {answers: [a]},"
        " scorer: {kind: fixed, value: 0.1}, threshold: 0.5}\n"
        "  - {name: strong, provider: scripted, model: s, options: {answers: [b]}}\n"
        "budget:\n"
        "  caps: [{limit: 100, window: day}]\n"
        f"  ledger: {{kind: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
        "session: {pin: escalated, ttl: 30m}\n"
    )
    return path


def test_a_session_keeps_its_tier_across_workers(tmp_path: Path, redis_url: str, prefix: str) -> None:
    policy = _policy(tmp_path, redis_url, prefix)
    one, two = Cascade.from_policy(policy), Cascade.from_policy(policy)  # two workers of one fleet
    try:
        assert one.observer is not None and isinstance(one.observer.pins, RedisSessionPins)
        first = one.run("q", session="user-7")
        assert first.tier == "strong" and not first.attempts[0].reason.startswith("pinned")
        again = two.run("q", session="user-7")  # the other worker: pinned at strong
        assert again.tier == "strong" and again.attempts[0].reason.startswith("pinned")
        other = two.run("q", session="user-8")
        assert not other.attempts[0].reason.startswith("pinned")
        client = redis.Redis.from_url(redis_url)
        ttl_ms = client.pttl(f"{prefix}:pin:user-7")
        assert 0 < ttl_ms <= 30 * 60 * 1000
        assert len(one.observer.pins) == 2  # user-8 escalated too
        client.close()
    finally:
        one.close()
        two.close()


def test_pins_only_move_up_and_clear(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pins = RedisSessionPins(client, 60, prefix=prefix)
    assert pins.start("s") == 0
    pins.note("s", 2)
    pins.note("s", 1)
    assert pins.start("s") == 2
    pins.note("t", 1)
    pins.clear("s")
    assert pins.start("s") == 0 and pins.start("t") == 1
    pins.clear()
    assert len(pins) == 0
    client.close()


def test_without_redis_the_session_starts_at_the_first_tier() -> None:
    # no retries: redis-py's default backs off for about 3 s per command before it gives up
    client = redis.Redis(
        port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    pins = RedisSessionPins(client, 60, prefix="down")
    with capture_logs() as logs:
        pins.note("s", 2)
        assert pins.start("s") == 0
    assert [e["event"] for e in logs] == ["cascade.session_pins_unavailable"] * 2


def test_other_ledgers_keep_pins_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: local\ntiers:\n  - {name: only, provider: scripted, model: m, options: {answers: [a]}}\n"
        "session: {ttl: 30m}\n"
    )
    c = Cascade.from_policy(path)
    assert c.observer is not None and isinstance(c.observer.pins, SessionPins)
