"""The Redis ledger under failover, memory pressure, password mistakes and a skewed host clock.

Every test runs against a real redis-server it starts (a replica is a server told ``REPLICAOF`` a
port where nothing listens: it keeps its data and refuses writes with ``READONLY``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import cascade.budget
from cascade import Budget, BudgetExceededError, Cap, Cascade, LedgerError, LedgerUnavailableError
from cascade.budget.redis import RedisLedger
from cascade.testing import ScriptedProvider
from tests.budget.conftest import RedisServer, free_port
from tests.clock import day_bucket, now
from tests.helpers import cost_of, tier

redis = pytest.importorskip("redis")

TOTAL = "policy:p|total"


def _admin(server: RedisServer, password: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(server.url, password=password)


def _budget(ledger: RedisLedger, **kw: object) -> Budget:
    return Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["readonly", "oom"])
def test_a_settle_the_server_refuses_after_a_paid_call_is_journaled_and_replayed(
    redis_server: RedisServer, prefix: str, fault: str
) -> None:
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    budget = _budget(ledger)
    hold = budget.reserve(budget.buckets("p", None), Decimal("0.5"))
    admin = _admin(redis_server)
    admin.delete(f"{{{prefix}}}:z:{TOTAL}")  # the hold was purged: the settle's first write is INCRBY
    if fault == "readonly":
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # demoted by a failover
    else:
        admin.config_set("maxmemory", 1)
    budget.settle(hold, Decimal("0.2"))  # no exception: the provider was paid
    assert budget.journal == ((hold, Decimal("0.2")),)
    with pytest.raises(LedgerUnavailableError, match="cannot write now"):
        budget.reserve(budget.buckets("p", None), Decimal("0.1"))  # fail_closed: no call
    if fault == "readonly":
        admin.execute_command("REPLICAOF", "NO", "ONE")
    else:
        admin.config_set("maxmemory", 0)
    budget._state.down_until = 0  # skip the back-off instead of sleeping it
    budget.settle(budget.reserve(budget.buckets("p", None), Decimal("0.1")), Decimal("0.1"))
    assert budget.journal == ()
    assert ledger.spent(TOTAL) == Decimal("0.3")
    admin.close()


def test_an_async_settle_refused_as_readonly_is_journaled(redis_server: RedisServer, prefix: str) -> None:
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    budget = _budget(ledger)
    admin = _admin(redis_server)

    async def main() -> str:
        hold = await budget.areserve(budget.buckets("p", None), Decimal("0.5"))
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        await budget.asettle(hold, Decimal("0.2"))
        return hold

    hold = asyncio.run(main())
    assert budget.journal == ((hold, Decimal("0.2")),)
    admin.execute_command("REPLICAOF", "NO", "ONE")
    budget._state.down_until = 0
    assert budget.replay() == 1 and ledger.spent(TOTAL) == Decimal("0.2") and ledger.held(TOTAL) == 0
    admin.close()


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
@pytest.mark.parametrize("password", ["wrong", None])
def test_a_wrong_or_missing_password_fails_closed_in_every_mode(
    redis_server: RedisServer, prefix: str, mode: str, password: str | None
) -> None:
    redis_server.stop()
    redis_server.start(password="right")
    url = redis_server.url if password is None else redis_server.url.replace("//", f"//:{password}@")
    provider = ScriptedProvider("x")
    c = Cascade(
        [tier("a", provider)],
        name="p",
        budget=_budget(RedisLedger(url, prefix=prefix, timeout=0.2), on_ledger_error=mode),
    )
    for run in (lambda: c.run("q"), lambda: asyncio.run(c.arun("q"))):
        with pytest.raises(LedgerError, match=r"refused the credentials .*: fix the user / password") as info:
            run()
        assert not isinstance(info.value, LedgerUnavailableError)
        message = str(info.value)
        assert "\n" not in message and "unreachable" not in message and "wrong" not in message
    assert provider.calls == []  # no call served uncapped


def test_a_settle_after_the_password_changed_is_journaled_and_calls_stop(
    redis_server: RedisServer, prefix: str
) -> None:
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    budget = _budget(ledger, on_ledger_error="fail_open")
    provider = ScriptedProvider("x")
    c = Cascade([tier("a", provider)], name="p", budget=budget)
    hold = budget.reserve(budget.buckets("p", None), Decimal("0.5"))
    admin = _admin(redis_server)
    admin.config_set("requirepass", "rotated")
    admin.client_kill_filter(_type="normal", skipme=True)  # the ledger must reconnect and log in
    budget.settle(hold, Decimal("0.2"))
    assert budget.journal == ((hold, Decimal("0.2")),)
    with pytest.raises(LedgerError, match="refused the credentials"):
        c.run("q")  # fail_open does not cover a mistake
    assert provider.calls == [] and budget.journal == ((hold, Decimal("0.2")),)
    admin.config_set("requirepass", "")
    c.run("q")
    assert budget.journal == () and ledger.spent(TOTAL) == Decimal("0.2") + cost_of(1)
    admin.close()


def test_window_buckets_follow_the_server_clock_not_a_host_a_day_ahead(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = redis.Redis.from_url(redis_url)
    server_day = f"{datetime.fromtimestamp(admin.time()[0], UTC):%Y-%m-%d}"
    admin.close()
    cap = Cap(Decimal("0.05"), "day")
    monkeypatch.setattr(cascade.budget, "host_now", lambda: datetime.now(UTC) + timedelta(days=1))
    skewed = Budget(caps=(cap,), ledger=RedisLedger(redis_url, prefix=prefix))  # a host a day ahead
    assert [b for b, _ in skewed.buckets("p", None)] == [f"policy:p|day:{server_day}"]
    skewed.settle(skewed.reserve(skewed.buckets("p", None), Decimal("0.05")), Decimal("0.05"))
    monkeypatch.undo()
    honest = Budget(caps=(cap,), ledger=RedisLedger(redis_url, prefix=prefix))
    with pytest.raises(BudgetExceededError):  # the same day: its $0.05 is spent
        honest.reserve(honest.buckets("p", None), Decimal("0.05"))


def test_an_explicit_clock_still_wins_over_the_ledger_clock(redis_url: str, prefix: str) -> None:
    at = now() + timedelta(days=3)
    budget = Budget(
        caps=(Cap(Decimal(1), "day"),), ledger=RedisLedger(redis_url, prefix=prefix), clock=lambda: at
    )
    assert budget.buckets("p", None)[0][0] == day_bucket(at=at)


def test_an_unreachable_server_leaves_the_host_clock_and_is_not_asked_again_at_once() -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", prefix="x", timeout=0.1)
    asked = []
    real = ledger._client.time
    ledger._client.time = lambda: asked.append(1) or real()
    assert abs((ledger.now() - datetime.now(UTC)).total_seconds()) < 5
    ledger.now()  # within 5 s of a failed TIME: not asked again
    assert len(asked) == 1
