"""Hedged escalation (issue 22 §1): the next tier starts in parallel when a tier has no verdict by
``after``; only a tier's scorer accepts an answer; both calls are reserved; the unused call is
cancelled and charged; a cancelled run leaves no task running and every hold settled."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextvars import ContextVar
from dataclasses import replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from cascade import Budget, Cap, Cascade, PolicyError, Request, Tier
from cascade.budget.memory import MemoryLedger
from cascade.engine.assemble import assemble
from cascade.engine.build import build
from cascade.engine.latency import WARMUP, WINDOW, HedgeAfter, Latencies
from cascade.errors import LedgerError
from cascade.observe import Observer, OutcomeLog
from cascade.policy import loads
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import Completion, Score
from tests.helpers import cost_of, tier
from tests.local_server import LocalServer
from tests.observe.support import rows

ONE_CALL = cost_of(1)  # what each scripted call costs (and its worst case: 10 in + 10 out tokens)


def hedged(after: float | str, cheap_latency: float, strong_latency: float, score: float = 0.9) -> list[Tier]:
    h = HedgeAfter.parse(after)
    return [
        replace(tier("cheap", "c", score, 0.5, latency=cheap_latency), hedge=h),
        tier("strong", "s", latency=strong_latency),
    ]


def calls(t: Tier) -> int:
    assert isinstance(t.provider, ScriptedProvider)
    return len(t.provider.calls)


def capped(tiers: list[Tier], limit: Decimal) -> tuple[Cascade, MemoryLedger, str]:
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(limit, "total"),), ledger=ledger)
    c = Cascade(tiers, name="p", budget=budget)
    return c, ledger, budget.buckets("p", None)[0][0]


def test_the_hedge_starts_only_after_its_delay() -> None:
    fast = hedged(0.3, cheap_latency=0.02, strong_latency=0.02)
    result = asyncio.run(Cascade(fast).arun("q"))
    assert calls(fast[1]) == 0  # the verdict came before `after`: no backup
    assert [a.decision for a in result.attempts] == ["accepted"] and result.attempts[0].hedge is None

    slow = hedged(0.05, cheap_latency=0.3, strong_latency=0.02)
    result = asyncio.run(Cascade(slow).arun("q"))
    assert calls(slow[1]) == 1
    assert "'strong' started at" in (result.attempts[0].hedge or "")


def test_accepted_earlier_tier_wins_and_the_backup_is_cancelled_and_charged_its_worst_case() -> None:
    tiers = hedged(0.05, cheap_latency=0.2, strong_latency=5.0)
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    start = time.perf_counter()
    result = asyncio.run(c.arun("q"))
    assert time.perf_counter() - start < 2.0  # the 5 s backup was cancelled, not awaited
    assert result.tier == "cheap" and result.answer == "c"  # the scorer accepted it
    cheap, strong = result.attempts
    assert (cheap.decision, strong.decision) == ("accepted", "cancelled")
    assert strong.cost == tiers[1].call_worst(Request.of("q")) == ONE_CALL
    assert strong.charged == "cut off in flight: worst case"
    assert result.hedge_cost == ONE_CALL and result.cost == 2 * ONE_CALL
    assert ledger.spent(bucket) == 2 * ONE_CALL and ledger.held(bucket) == 0
    assert "hedge cancelled" in result.explain() and "(hedge $" in result.explain()


def test_a_backup_that_answered_before_the_cancel_is_charged_what_it_produced() -> None:
    tiers = hedged(0.01, cheap_latency=0.3, strong_latency=0.02)
    tiers[1] = tier("strong", "s", latency=0.02, cost=Decimal("0.000007"))  # its reported cost
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    result = asyncio.run(c.arun("q"))
    assert result.tier == "cheap"  # the backup answered first but did not win: cheap was accepted
    assert result.attempts[1].decision == "cancelled"
    assert result.attempts[1].cost == Decimal("0.000007")
    assert ledger.spent(bucket) == ONE_CALL + Decimal("0.000007") and ledger.held(bucket) == 0


def test_rejected_earlier_tier_continues_with_the_backup_already_in_flight() -> None:
    tiers = hedged(0.1, cheap_latency=2.0, strong_latency=2.0, score=0.1)
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    start = time.perf_counter()
    result = asyncio.run(c.arun("q"))
    elapsed = time.perf_counter() - start
    assert result.tier == "strong" and result.answer == "s"
    assert calls(tiers[1]) == 1  # the call in flight, not a second one
    cheap, strong = result.attempts
    assert (cheap.decision, strong.decision) == ("escalated", "accepted")
    assert (strong.hedge or "").startswith("backup: in flight since")
    assert elapsed < 3.5  # sequential: 4 s; hedged: about 2.1 s (room for a loaded machine)
    assert result.hedge_cost == 0 and result.cost == 2 * ONE_CALL
    assert ledger.spent(bucket) == 2 * ONE_CALL and ledger.held(bucket) == 0


def test_a_window_cap_that_cannot_hold_both_calls_refuses_the_hedge() -> None:
    tiers = hedged(0.05, cheap_latency=0.3, strong_latency=0.02)
    c, ledger, bucket = capped(tiers, ONE_CALL * Decimal("1.5"))  # room for one call only
    result = asyncio.run(c.arun("q"))
    assert calls(tiers[1]) == 0
    assert result.tier == "cheap"
    assert (result.attempts[0].hedge or "").startswith("not started: budget:")
    assert ledger.spent(bucket) == ONE_CALL and ledger.held(bucket) == 0


def test_a_per_request_cap_that_cannot_cover_both_calls_refuses_the_hedge() -> None:
    tiers = hedged(0.05, cheap_latency=0.3, strong_latency=0.02)
    c = Cascade(tiers, budget=Budget(per_request=ONE_CALL * Decimal("1.5")))
    result = asyncio.run(c.arun("q"))
    assert calls(tiers[1]) == 0
    assert "per-request cap" in (result.attempts[0].hedge or "")


class SlowScorer(FixedScorer):
    async def ascore(self, request: Request, completion: Completion) -> Score:
        await asyncio.sleep(5)
        return self.score(request, completion)


@pytest.mark.parametrize("cut_during", ["the call", "the scoring", "the join"])
def test_a_cancelled_run_settles_both_holds_and_leaves_no_task(cut_during: str) -> None:
    cheap_latency = {"the call": 5.0, "the scoring": 0.1, "the join": 0.1}[cut_during]
    tiers = hedged(0.05, cheap_latency, strong_latency=5.0, score=0.1 if cut_during == "the join" else 0.9)
    if cut_during == "the scoring":
        tiers[0] = replace(tiers[0], scorer=SlowScorer(0.9))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)

    async def main() -> set[asyncio.Task[object]]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.arun("q"), 0.4)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    left = asyncio.run(main())
    assert left == set()
    assert calls(tiers[1]) == 0  # the backup was cut off before it answered
    assert ledger.held(bucket) == 0  # both holds settled...
    assert ledger.spent(bucket) == 2 * ONE_CALL  # ...each at its reserved worst case


def test_after_p90_waits_for_enough_latencies_then_hedges_at_their_quantile() -> None:
    tiers = hedged("p90", cheap_latency=0.3, strong_latency=0.01)
    c = Cascade(tiers)
    for _ in range(WARMUP - 1):
        c.settings.latencies.observe("cheap", 0.01)
    asyncio.run(c.arun("q"))
    assert calls(tiers[1]) == 0  # warming up: no hedge (this run's own latency is the 20th)
    assert c.settings.latencies.quantile("cheap", 0.99) == pytest.approx(0.3, abs=0.1)  # it was observed
    for _ in range(WINDOW):  # now p90 = 0.01 s: the next run hedges
        c.settings.latencies.observe("cheap", 0.01)
    result = asyncio.run(c.arun("q"))
    assert calls(tiers[1]) == 1
    assert "no verdict by 0.01s" in (result.attempts[0].hedge or "")
    assert Cascade(hedged("p90", 0.3, 0.01)).settings.latencies.quantile("cheap", 0.9) is None  # per cascade


def test_latencies_keep_a_fixed_window() -> None:
    book = Latencies(window=4, warmup=2)
    book.observe("t", 9.0)
    assert book.quantile("t", 0.9) is None
    for s in (1.0, 2.0, 3.0, 4.0):
        book.observe("t", s)
    assert book.quantile("t", 0.9) == 4.0 and book.quantile("t", 0.5) == 2.0  # 9.0 fell out


def hedge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cascade-hedge"]


def test_the_sync_driver_hedges_in_a_thread_it_ends() -> None:
    tiers = hedged(0.1, cheap_latency=2.0, strong_latency=2.0, score=0.1)
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    start = time.perf_counter()
    result = c.run("q")
    elapsed = time.perf_counter() - start
    assert result.tier == "strong" and calls(tiers[1]) == 1  # the call in flight, not a second one
    assert (result.attempts[1].hedge or "").startswith("backup: in flight since")
    assert elapsed < 3.5  # sequential: 4 s; hedged: about 2.1 s (room for a loaded machine)
    assert ledger.spent(bucket) == 2 * ONE_CALL and ledger.held(bucket) == 0
    assert hedge_threads() == []


def test_a_sync_backup_not_needed_is_cancelled_and_its_thread_ended() -> None:
    tiers = hedged(0.05, cheap_latency=0.2, strong_latency=0.3)  # a scripted call: waited for
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    result = c.run("q")
    assert result.tier == "cheap" and [a.decision for a in result.attempts] == ["accepted", "cancelled"]
    assert result.attempts[1].charged == "answered before the cancel"
    assert ledger.spent(bucket) == 2 * ONE_CALL and ledger.held(bucket) == 0
    assert hedge_threads() == []
    fast = hedged(0.5, cheap_latency=0.01, strong_latency=0.01)  # a verdict in time: disarmed unlaunched
    assert Cascade(fast).run("q").tier == "cheap" and calls(fast[1]) == 0 and hedge_threads() == []


SEEN: ContextVar[str] = ContextVar("seen", default="none")


class Seeing(ScriptedProvider):
    """Records the context variable ``SEEN`` its calls run under."""

    seen: list[str]

    def complete(self, request: Request, n: int = 1) -> Completion:
        self.seen.append(SEEN.get())
        return super().complete(request, n)


def test_a_sync_backup_runs_in_the_callers_context() -> None:
    tiers = hedged(0.05, cheap_latency=0.3, strong_latency=0.01, score=0.1)
    strong = Seeing("s", model="strong-model")
    strong.seen = []
    tiers[1] = replace(tiers[1], provider=strong)
    token = SEEN.set("the caller's")
    try:
        result = Cascade(tiers).run("q")
    finally:
        SEEN.reset(token)
    assert (result.attempts[1].hedge or "").startswith("backup: in flight since")
    assert strong.seen == ["the caller's"]  # e.g. the LangChain front's scope, the log context


BUG = "a bug in the provider"  # raised as a RuntimeError: not a provider error, it ends the run


def raising(c: Cascade, driver: str) -> tuple[list[str], list[Any]]:
    """Run ``c``, which raises :data:`BUG`: the decisions of its trace (on the error), and the
    hedge threads (sync) or tasks (async) left."""
    if driver == "sync":
        with pytest.raises(RuntimeError, match=BUG) as raised:
            c.run("q")
        return [a.decision for a in raised.value.attempts], hedge_threads()  # type: ignore[attr-defined]

    async def main() -> tuple[list[str], list[Any]]:
        with pytest.raises(RuntimeError, match=BUG) as raised:
            await c.arun("q")
        left = asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]
        return [a.decision for a in raised.value.attempts], sorted(left, key=id)  # type: ignore[attr-defined]

    return asyncio.run(main())


@pytest.mark.parametrize("driver", ["async", "sync"])
@pytest.mark.parametrize("then", ["joined", "cancelled"])
def test_a_backup_that_raises_ends_the_run_with_its_hold_settled(driver: str, then: str) -> None:
    # joined: the tier escalated to the backup that raised; cancelled: it was accepted meanwhile
    tiers = hedged(0.05, cheap_latency=0.2, strong_latency=0.0, score=0.1 if then == "joined" else 0.9)
    tiers[1] = tier("strong", RuntimeError(BUG))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    decisions, left = raising(c, driver)
    assert decisions == ["escalated" if then == "joined" else "accepted", "cancelled"] and left == []
    assert ledger.held(bucket) == 0 and ledger.spent(bucket) == 2 * ONE_CALL  # the backup: its worst case


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_a_chained_backup_that_raises_ends_the_chain_with_every_hold_settled(driver: str) -> None:
    slow = 5.0 if driver == "async" else 0.5  # a sync scripted call is waited for: it answers
    tiers = chained((0.4, 0.2, slow))  # t2 raises at 0.25 s, after it started t3 (at 0.1 s)
    tiers[1] = replace(tier("t2", RuntimeError(BUG), 0.1, 0.5, latency=0.2), hedge=tiers[1].hedge)
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    assert raising(c, driver) == (["escalated", "cancelled", "cancelled"], [])
    assert ledger.held(bucket) == 0 and ledger.spent(bucket) == 3 * ONE_CALL  # t3's hold (t2 started it) too


class SlowChat(BaseHTTPRequestHandler):
    """A chat-completions server that answers when released (``server.release``), or after 10 s."""

    server: Any

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.release.wait(10)
        self.server.answered += 1
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "big",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


SDK_BACKUP = """\
name: p
tiers:
  - name: small
    provider: scripted
    model: tiny
    options: {{answers: ["hi"], latency: 0.3}}
    scorer: {{kind: non_empty}}
    threshold: 0.5
    hedge: {{after: 0.05s}}
  - name: big
    provider: openai_compatible
    model: big
    price: {{input: 1, output: 1}}
    options: {{base_url: {url}}}
budget:
  caps: [{{limit: 10, window: total}}]
"""


def test_a_sync_backup_in_flight_on_an_sdk_provider_is_cut_off_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LocalServer(SlowChat) as server:
        server.release, server.answered = threading.Event(), 0  # type: ignore[attr-defined]
        path = tmp_path / "p.yaml"
        path.write_text(SDK_BACKUP.format(url=json.dumps(server.url + "/v1")))
        with build(path) as c:
            result = c.run("q")
            answered = server.answered  # type: ignore[attr-defined]
            threads = hedge_threads()
            bucket = c.settings.budget.buckets("p", None)[0][0]
            held = c.settings.budget.ledger.held(bucket)  # type: ignore[union-attr]
        server.release.set()  # type: ignore[attr-defined]
    # the run ended while the server still held its answer: the backup's call was cut off, not waited for
    assert answered == 0 and threads == [] and held == 0
    assert [a.decision for a in result.attempts] == ["accepted", "cancelled"]
    assert result.attempts[1].charged == "cut off in flight: worst case"


POLICY = """\
name: p
tiers:
  - name: small
    provider: scripted
    model: tiny
    options: {answers: ["hi"]}
    scorer: {kind: non_empty}
    threshold: 0.5
    hedge: {after: AFTER}
  - name: big
    provider: scripted
    model: huge
    options: {answers: ["hello"]}
"""


def test_the_policy_says_when_to_hedge() -> None:
    parts = assemble(loads(POLICY.replace("AFTER", "1.5s")))
    assert parts.tiers[0].hedge == HedgeAfter(seconds=1.5) and parts.tiers[1].hedge is None
    assert assemble(loads(POLICY.replace("AFTER", "p90"))).tiers[0].hedge == HedgeAfter(quantile=0.9)
    for bad in ("soon", "p0", "-1"):
        with pytest.raises(PolicyError, match="after"):
            loads(POLICY.replace("AFTER", bad))
    last = POLICY.replace("AFTER", "1s") + "    hedge: {after: 1s}\n"
    with pytest.raises(PolicyError, match="no next tier to hedge with"):
        loads(last)


def test_the_outcome_log_records_both_calls_of_a_hedge(tmp_path: Path) -> None:
    tiers = hedged(0.05, cheap_latency=0.3, strong_latency=0.02, score=0.1)  # cheap escalates
    c = Cascade(tiers, name="h", observer=Observer(log=OutcomeLog(tmp_path / "out.jsonl")))
    result = asyncio.run(c.arun("q"))
    c.close()
    [row] = rows(tmp_path)
    assert set(row["cascade"]["tiers"]) == {"cheap", "strong"}
    assert row["responses"]["strong-model"]  # the backup's answer, joined, is logged
    assert row["cascade"]["cost"] == str(result.cost)


# -- chained hedges: a backup whose tier hedges starts the tier after it in turn ----------------------


def chained(
    latencies: tuple[float, float, float], scores: tuple[float, float] = (0.1, 0.1), after: float = 0.05
) -> list[Tier]:
    """Three tiers, the first two hedging after ``after`` seconds; scores under 0.5 escalate."""
    h = HedgeAfter.parse(after)
    return [
        replace(tier("t1", "a1", scores[0], 0.5, latency=latencies[0]), hedge=h),
        replace(tier("t2", "a2", scores[1], 0.5, latency=latencies[1]), hedge=h),
        tier("t3", "a3", latency=latencies[2]),
    ]


def run_both(c: Cascade, driver: str) -> Any:
    if driver == "sync":
        return c.run("q"), hedge_threads()

    async def main() -> tuple[Any, set[asyncio.Task[object]]]:
        result = await c.arun("q")
        return result, asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    result, left = asyncio.run(main())
    return result, sorted(left, key=id)


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_a_backup_that_hedges_starts_the_tier_after_it_in_turn(driver: str) -> None:
    tiers = chained((0.4, 0.4, 0.05))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    result, left = run_both(c, driver)
    assert result.tier == "t3" and result.answer == "a3" and left == []
    assert [calls(t) for t in tiers] == [1, 1, 1]  # each call once: the backups in flight were joined
    t1, t2, t3 = result.attempts
    assert (t1.decision, t2.decision, t3.decision) == ("escalated", "escalated", "accepted")
    assert "'t2' started at" in (t1.hedge or "")
    # t2 was itself a backup, and hedged to t3 while t1 had no verdict yet
    assert (t2.hedge or "").startswith("backup: in flight since") and "'t3' started at" in (t2.hedge or "")
    assert (t3.hedge or "").startswith("backup: in flight since")
    assert result.hedge_cost == 0 and result.cost == 3 * ONE_CALL
    assert ledger.spent(bucket) == 3 * ONE_CALL and ledger.held(bucket) == 0


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_an_accepted_backup_cancels_the_backup_it_started_and_is_charged(driver: str) -> None:
    slow = 5.0 if driver == "async" else 0.6  # a sync scripted call is waited for: it answers
    tiers = chained((0.3, 0.3, slow), scores=(0.1, 0.9))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    result, left = run_both(c, driver)
    assert result.tier == "t2" and result.answer == "a2" and left == []  # t2's scorer accepted it
    t1, t2, t3 = result.attempts
    assert (t1.decision, t2.decision, t3.decision) == ("escalated", "accepted", "cancelled")
    assert "'t3' started at" in (t2.hedge or "")
    charged = "cut off in flight: worst case" if driver == "async" else "answered before the cancel"
    assert t3.charged == charged and t3.cost == ONE_CALL
    assert result.hedge_cost == ONE_CALL and result.cost == 3 * ONE_CALL
    assert ledger.spent(bucket) == 3 * ONE_CALL and ledger.held(bucket) == 0


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_an_accepted_first_tier_cancels_the_whole_chain_and_charges_each_call(driver: str) -> None:
    slow = 5.0 if driver == "async" else 0.5
    tiers = chained((0.3, slow, slow), scores=(0.9, 0.1))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)
    result, left = run_both(c, driver)
    assert result.tier == "t1" and result.answer == "a1" and left == []
    t1, t2, t3 = result.attempts
    assert (t1.decision, t2.decision, t3.decision) == ("accepted", "cancelled", "cancelled")
    assert "'t3' started at" in (t2.hedge or "")  # the chained backup is in the trace, after its tier
    assert t3.hedge is not None and t3.hedge.startswith("started")
    charged = "cut off in flight: worst case" if driver == "async" else "answered before the cancel"
    assert t2.charged == t3.charged == charged
    assert result.hedge_cost == 2 * ONE_CALL and result.cost == 3 * ONE_CALL
    assert ledger.spent(bucket) == 3 * ONE_CALL and ledger.held(bucket) == 0


@pytest.mark.parametrize("driver", ["async", "sync"])
@pytest.mark.parametrize("then", ["joined", "cancelled"])
def test_after_pnn_counts_a_backup_call_the_tier_took_as_its_own(driver: str, then: str) -> None:
    # t2 (after: p90, one latency short of warm) runs only as t1's backup, 0.2 s; t1 answers at 0.3 s
    tiers = chained((0.3, 0.2, 0.01), scores=(0.1 if then == "joined" else 0.9, 0.1))
    tiers[1] = replace(tiers[1], hedge=HedgeAfter.parse("p90"))
    c = Cascade(tiers)
    for _ in range(WARMUP - 1):
        c.settings.latencies.observe("t2", 0.01)
    result, left = run_both(c, driver)
    assert left == [] and result.attempts[1].decision == ("escalated" if then == "joined" else "cancelled")
    if then == "joined":  # the tier's own call, started early: its latency is the tier's
        assert c.settings.latencies.quantile("t2", 0.99) == pytest.approx(0.2, abs=0.1)
    else:  # cancelled: only the backups that beat the cancel would be seen, the fast ones
        assert c.settings.latencies.quantile("t2", 0.99) is None


@pytest.mark.parametrize("cap", ["window", "per_request"])
def test_a_cap_that_cannot_hold_the_chain_stops_it_at_the_call_it_cannot_cover(cap: str) -> None:
    tiers = chained((0.3, 0.3, 0.05), scores=(0.1, 0.9))
    if cap == "window":
        c, ledger, bucket = capped(tiers, ONE_CALL * Decimal("2.5"))  # room for two calls
    else:
        c = Cascade(tiers, budget=Budget(per_request=ONE_CALL * Decimal("2.5")))
    result = asyncio.run(c.arun("q"))
    assert result.tier == "t2" and calls(tiers[2]) == 0
    t1, t2 = result.attempts
    assert "'t2' started at" in (t1.hedge or "")
    assert "not started: budget:" in (t2.hedge or "")
    assert result.cost == 2 * ONE_CALL
    if cap == "window":
        assert ledger.spent(bucket) == 2 * ONE_CALL and ledger.held(bucket) == 0
    else:
        assert "per-request cap" in (t2.hedge or "")


@pytest.mark.parametrize("cut_during", ["the call", "the join"])
def test_a_cancelled_run_ends_the_whole_chain_and_settles_every_hold(cut_during: str) -> None:
    tiers = chained((5.0 if cut_during == "the call" else 0.2, 5.0, 5.0))
    c, ledger, bucket = capped(tiers, ONE_CALL * 10)

    async def main() -> set[asyncio.Task[object]]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.arun("q"), 0.4)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(main()) == set()
    assert calls(tiers[1]) == 0 and calls(tiers[2]) == 0  # both backups were cut off before answering
    assert ledger.held(bucket) == 0  # the three holds settled...
    assert ledger.spent(bucket) == 3 * ONE_CALL  # ...each at its reserved worst case


class BreaksAfterOne(MemoryLedger):
    """Holds the first reservation; every later one fails (a ledger file gone corrupt)."""

    reserves = 0

    def reserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        self.reserves += 1
        if self.reserves > 1:
            raise LedgerError("ledger: corrupt")
        return super().reserve(caps, amount, ttl=ttl)


@pytest.mark.parametrize("score", [0.9, 0.1])  # accepted: the backup cancelled; escalated: joined
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_ledger_error_in_the_backups_reserve_reaches_the_caller(
    driver: str, score: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: lost.append(args.exc_value))
    tiers = hedged(0.05, cheap_latency=0.2, strong_latency=0.01, score=score)
    ledger = BreaksAfterOne()
    c = Cascade(tiers, name="p", budget=Budget(caps=(Cap(ONE_CALL * 10, "total"),), ledger=ledger))
    with pytest.raises(LedgerError, match="corrupt"):
        c.run("q") if driver == "sync" else asyncio.run(c.arun("q"))
    assert lost == [] and hedge_threads() == []  # raised to the caller, not printed by a thread
    assert ledger.held(c.settings.budget.buckets("p", None)[0][0]) == 0
    assert calls(tiers[1]) == 0  # the backup never called without its hold
