"""The Redis ledger against a real redis-server (fakeredis only as an extra check of the scripts)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import (
    Budget,
    BudgetExceededError,
    Cap,
    Cascade,
    LedgerError,
    LedgerUnavailableError,
    PolicyError,
)
from cascade.budget import hold_buckets
from cascade.budget.redis import RedisLedger
from cascade.engine.build import build
from cascade.testing import ScriptedProvider
from tests.budget.conftest import RedisServer, free_port
from tests.clock import day_bucket, now
from tests.helpers import cost_of, tier

redis = pytest.importorskip("redis")

DAY = day_bucket()  # today (or $CASCADE_TEST_DAYS_AHEAD ahead): a literal day expires from the ledger
KEY = "key:p:alice|total"
CAPS = [(DAY, Decimal(1)), (KEY, Decimal("0.5"))]


def test_reserve_checks_every_bucket_and_settle_replaces_the_hold(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    hold = ledger.reserve(CAPS, Decimal("0.3"))
    assert (ledger.held(DAY), ledger.held(KEY)) == (Decimal("0.3"), Decimal("0.3"))
    with pytest.raises(BudgetExceededError, match=r"^cap key:p:alice\|total \(\$0\.5\) cannot cover") as info:
        ledger.reserve(CAPS, Decimal("0.3"))  # the day cap has room, the key cap has not
    assert info.value.cap == KEY and info.value.available == Decimal("0.2")
    assert ledger.held(DAY) == Decimal("0.3")  # a refused reservation holds nothing anywhere
    ledger.settle(hold, Decimal("0.123456789"))
    assert (ledger.spent(DAY), ledger.spent(KEY)) == (Decimal("0.123456789"), Decimal("0.123456789"))
    assert (ledger.held(DAY), ledger.held(KEY)) == (Decimal(0), Decimal(0))


def test_amounts_are_integer_nano_dollars(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    for _ in range(10):
        ledger.settle(ledger.reserve([("b", Decimal(1))], Decimal("0.1")), Decimal("0.1"))
    assert ledger.spent("b") == Decimal(1)  # ten floats of 0.1 would not make exactly 1
    with pytest.raises(BudgetExceededError):
        ledger.reserve([("b", Decimal(1))], Decimal("0.000000001"))
    client = redis.Redis.from_url(redis_url)
    assert client.get("{" + prefix + "}:s:b") == b"1000000000"
    client.close()


def test_a_settle_retried_three_times_charges_once(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    hold = ledger.reserve(CAPS, Decimal("0.2"))
    for _ in range(3):
        ledger.settle(hold, Decimal("0.1"))
    assert ledger.spent(DAY) == Decimal("0.1") and ledger.held(DAY) == 0


def test_an_expired_hold_is_charged_its_amount_and_a_late_settle_replaces_the_charge(
    redis_url: str, prefix: str
) -> None:
    """A worker killed mid-call: its provider bills, so its expired hold is charged, not released."""
    ledger = RedisLedger(redis_url, prefix=prefix)
    killed = ledger.reserve([("b", Decimal(1))], Decimal("0.6"), ttl=0.05)
    time.sleep(0.1)
    assert ledger.held("b") == 0 and ledger.spent("b") == Decimal("0.6")  # read before any purge
    with pytest.raises(BudgetExceededError):
        ledger.reserve([("b", Decimal(1))], Decimal("0.5"))  # the killed call's charge leaves $0.4
    assert ledger.spent("b") == Decimal("0.6") and ledger.held("b") == 0
    fresh = ledger.reserve([("b", Decimal(1))], Decimal("0.3"))
    ledger.settle(killed, Decimal("0.25"))  # a late settle replaces the charge by the real cost
    ledger.settle(killed, Decimal("0.25"))  # once
    assert ledger.spent("b") == Decimal("0.25") and ledger.held("b") == Decimal("0.3")
    ledger.settle(fresh, Decimal("0.3"))
    assert ledger.spent("b") == Decimal("0.55")


def test_on_expired_hold_release_returns_the_room_and_still_charges_a_late_settle(
    redis_url: str, prefix: str
) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix, on_expired_hold="release")
    late = ledger.reserve([("b", Decimal(1))], Decimal(1), ttl=0.05)
    time.sleep(0.1)
    assert ledger.held("b") == 0 and ledger.spent("b") == 0
    fresh = ledger.reserve([("b", Decimal(1))], Decimal("0.5"))  # room again at once
    ledger.settle(late, Decimal("0.25"))  # the late settle is still charged
    assert ledger.spent("b") == Decimal("0.25") and ledger.held("b") == Decimal("0.5")
    ledger.settle(fresh, Decimal("0.5"))
    assert ledger.spent("b") == Decimal("0.75")


def test_an_expired_hold_of_two_buckets_is_charged_in_the_one_a_reservation_purged(
    redis_url: str, prefix: str
) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    killed = ledger.reserve(CAPS, Decimal("0.2"), ttl=0.05)
    time.sleep(0.1)
    ledger.settle(ledger.reserve([(DAY, Decimal(1))], Decimal("0.1")), Decimal("0.1"))  # purges DAY only
    ledger.settle(killed, Decimal("0.05"))
    assert (ledger.spent(DAY), ledger.spent(KEY)) == (Decimal("0.15"), Decimal("0.05"))
    assert (ledger.held(DAY), ledger.held(KEY)) == (0, 0)


def test_a_settle_after_every_key_of_the_hold_is_gone_still_charges(redis_url: str, prefix: str) -> None:
    """The hold id names its buckets, so even a hold Redis no longer knows is charged (once)."""
    ledger = RedisLedger(redis_url, prefix=prefix)
    hold = ledger.reserve(CAPS, Decimal("0.2"))
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys("{" + prefix + "}:*"))
    client.close()
    ledger.settle(hold, Decimal("0.1"))
    ledger.settle(hold, Decimal("0.1"))
    assert hold_buckets(hold) == (DAY, KEY)
    assert ledger.spent(DAY) == ledger.spent(KEY) == Decimal("0.1")


def test_keys_share_one_hash_tag_and_expire_after_their_window(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix, retention=3600)
    today = now().strftime("%Y-%m-%d")
    day, total = f"policy:p|day:{today}", "policy:p|total"
    ledger.settle(ledger.reserve([(day, Decimal(1)), (total, Decimal(1))], Decimal("0.1")), Decimal("0.1"))
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.keys("*" + prefix + "*")]
    assert keys and all(k.startswith("{" + prefix + "}:") for k in keys)
    end_of_day = datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() + 86400
    expires_at = client.pexpiretime("{" + prefix + "}:s:" + day) / 1000
    assert abs(expires_at - (end_of_day + 3600)) < 1  # the window's end plus the retention
    assert client.ttl("{" + prefix + "}:s:" + total) == -1  # a total window never expires
    client.close()


def test_async_methods_use_redis_asyncio(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)

    async def main() -> list[str | BaseException]:
        got = await asyncio.gather(
            *(ledger.areserve([("b", Decimal(1))], Decimal("0.1")) for _ in range(15)), return_exceptions=True
        )
        holds = [h for h in got if isinstance(h, str)]
        await asyncio.gather(*(ledger.asettle(h, Decimal("0.01")) for h in holds))
        return got

    first = asyncio.run(main())
    assert sum(isinstance(h, BudgetExceededError) for h in first) == 5  # 10 x $0.1 fit a $1 cap
    second = asyncio.run(main())  # a second event loop gets its own connections
    assert sum(isinstance(h, str) for h in second) == 9  # $0.1 is spent now
    assert ledger.spent("b") == Decimal("0.19") and ledger.held("b") == 0


def test_unreachable_server_is_a_clean_ledger_unavailable_error() -> None:
    ledger = RedisLedger(f"redis://user:secret@127.0.0.1:{free_port()}/0", prefix="x", timeout=0.2)
    with pytest.raises(
        LedgerUnavailableError, match=r"^redis ledger redis://user:\*\*\*@127\.0\.0\.1:\d+/0 is unreachable"
    ) as info:
        ledger.reserve(CAPS, Decimal("0.1"))
    assert "secret" not in str(info.value)
    with pytest.raises(LedgerUnavailableError):
        asyncio.run(ledger.areserve(CAPS, Decimal("0.1")))


def test_a_redis_error_that_is_not_a_connection_is_a_ledger_error(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("{" + prefix + "}:h:b", "not a number")
    client.close()
    with pytest.raises(LedgerError, match="redis ledger") as info:
        RedisLedger(redis_url, prefix=prefix).reserve([("b", Decimal(1))], Decimal("0.1"))
    assert not isinstance(info.value, LedgerUnavailableError)


def test_missing_url_and_braces_in_prefix_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_REDIS_URL", raising=False)
    with pytest.raises(LedgerError, match="needs a url"):
        RedisLedger()
    with pytest.raises(LedgerError, match="braces"):
        RedisLedger("redis://localhost", prefix="a{b}")


def test_a_dropped_connection_is_retried_without_double_counting(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    hold = ledger.reserve([("b", Decimal(1))], Decimal("0.5"))
    admin = redis.Redis.from_url(redis_url)
    admin.client_kill_filter(_type="normal", skipme=True)  # drops the ledger's pooled connection
    ledger.settle(hold, Decimal("0.5"))  # reconnects and settles
    admin.client_kill_filter(_type="normal", skipme=True)
    ledger.settle(hold, Decimal("0.5"))  # a retry after a blip charges nothing more
    admin.close()
    assert ledger.spent("b") == Decimal("0.5")


def _hammer(url: str, prefix: str, n: int) -> int:
    ledger = RedisLedger(url, prefix=prefix)
    won = 0
    for _ in range(n):
        try:
            hold = ledger.reserve([("b", Decimal("0.050"))], Decimal("0.001"))
        except BudgetExceededError:
            continue
        ledger.settle(hold, Decimal("0.001"))
        won += 1
    return won


@pytest.mark.slow
def test_processes_sharing_one_cap_never_overspend(redis_url: str, prefix: str) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        won = sum(pool.starmap(_hammer, [(redis_url, prefix, 30)] * 4))
    ledger = RedisLedger(redis_url, prefix=prefix)
    assert won == 50 and ledger.spent("b") == Decimal("0.050") and ledger.held("b") == 0


def test_a_policy_with_a_redis_ledger_runs_and_caps(redis_url: str, prefix: str, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: fleet\ntiers:\n  - {name: only, provider: scripted, model: m, price: {input: 1, output: 1},"
        " options: {answers: [hi]}}\n"
        "budget:\n  caps: [{limit: 0.00004, window: total}]\n"
        f"  ledger: {{kind: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
    )
    c = build(policy)
    assert isinstance(c.settings.budget.ledger, RedisLedger)
    c.run("q")
    c.run("q")
    with pytest.raises(BudgetExceededError):
        c.run("q")
    assert c.settings.budget.ledger.spent("policy:fleet|total") == cost_of(2)


def test_fail_closed_makes_no_call_while_redis_is_down(redis_server: RedisServer, prefix: str) -> None:
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    provider = ScriptedProvider("x")
    c = Cascade(
        [tier("a", provider)], name="p", budget=Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger)
    )
    c.run("q")
    redis_server.stop()
    with pytest.raises(LedgerUnavailableError):
        c.run("q")
    assert len(provider.calls) == 1  # no call was made without a reservation


def test_fail_open_journals_spend_and_replays_it_when_redis_is_back(
    redis_server: RedisServer, prefix: str
) -> None:
    redis_server.stop()
    redis_server.start(persist=True)  # an append-only file: the restart keeps what was spent before
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    budget = Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger, on_ledger_error="fail_open")
    c = Cascade([tier("a", "x")], name="p", budget=budget)
    c.run("q")
    redis_server.stop()
    for _ in range(3):
        assert c.run("q").answer == "x"  # calls go on
    # the spend of the three calls, and a release of the reservation that failed in flight
    assert sorted(amount for _, amount in budget.journal) == [Decimal(0)] + [cost_of(1)] * 3
    redis_server.start(persist=True)
    budget._state.down_until = 0  # skip the 1 s back-off instead of sleeping it
    c.run("q")  # the next reservation writes the journal first
    assert budget.journal == ()
    assert ledger.spent("policy:p|total") == cost_of(5)
    assert budget.replay() == 0  # nothing left; a second replay charges nothing


def test_a_settle_while_redis_is_down_is_deferred_not_lost(redis_server: RedisServer, prefix: str) -> None:
    ledger = RedisLedger(redis_server.url, prefix=prefix, timeout=0.2)
    budget = Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger)
    hold = budget.reserve(budget.buckets("p", None), Decimal("0.5"))
    redis_server.stop()
    budget.settle(hold, Decimal("0.2"))  # no exception: the call already happened
    assert budget.journal == ((hold, Decimal("0.2")),)
    redis_server.start()
    budget._state.down_until = 0
    assert budget.replay() == 1
    assert ledger.spent("policy:p|total") == Decimal("0.2") and ledger.held("policy:p|total") == 0


@pytest.mark.slow
def test_scripts_also_run_on_fakeredis() -> None:
    fakeredis = pytest.importorskip("fakeredis")
    server = fakeredis.FakeServer()
    ledger = RedisLedger(
        prefix="f",
        client=fakeredis.FakeRedis(server=server),
        async_client=fakeredis.FakeAsyncRedis(server=server),
    )
    hold = ledger.reserve(CAPS, Decimal("0.4"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(CAPS, Decimal("0.2"))
    ledger.settle(hold, Decimal("0.1"))
    ledger.settle(hold, Decimal("0.1"))

    async def more() -> None:
        await ledger.asettle(await ledger.areserve(CAPS, Decimal("0.3")), Decimal("0.3"))

    asyncio.run(more())
    assert ledger.spent(KEY) == Decimal("0.4") and ledger.held(KEY) == 0


def test_the_default_prefix_is_the_policy_name_without_braces(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: 'team{a}'\ntiers:\n  - {name: only, provider: scripted, model: m, free: true, options: {answers: [hi]}}\n"
        "budget:\n  caps: [{limit: 1, window: day}]\n  ledger: {kind: redis, url: 'redis://127.0.0.1:1/0'}\n"
    )
    ledger = build(policy).settings.budget.ledger  # building connects to nothing
    assert isinstance(ledger, RedisLedger) and ledger.prefix == "cascade:teama"


def test_held_sums_live_holds_in_chunks(redis_url: str, prefix: str) -> None:
    ledger = RedisLedger(redis_url, prefix=prefix)
    for _ in range(600):  # more than one 500-hold chunk of the read script
        ledger.reserve([("b", Decimal(1))], Decimal("0.001"))
    assert ledger.held("b") == Decimal("0.6")


def test_on_expired_hold_is_a_redis_ledger_option_of_the_policy(tmp_path: Path) -> None:
    head = "name: p\ntiers:\n  - {name: only, provider: scripted, model: m, free: true, options: {answers: [hi]}}\n"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        head + "budget:\n  caps: [{limit: 1, window: day}]\n"
        "  ledger: {kind: redis, url: 'redis://127.0.0.1:1/0', on_expired_hold: release}\n"
    )
    ledger = build(policy).settings.budget.ledger
    assert isinstance(ledger, RedisLedger) and ledger.on_expired_hold == "release"
    policy.write_text(
        head + "budget:\n  caps: [{limit: 1, window: day}]\n  ledger: {kind: redis, url: 'redis://x'}\n"
    )
    assert build(policy).settings.budget.ledger.on_expired_hold == "charge"  # type: ignore[union-attr]
    policy.write_text(
        head
        + "budget:\n  caps: [{limit: 1, window: day}]\n  ledger: {kind: sqlite, on_expired_hold: charge}\n"
    )
    with pytest.raises(PolicyError, match="on_expired_hold are options of kind: redis"):
        build(policy)
