"""The observer around live runs: rows, shadow sampling, session pins, errors, sync and async."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Cascade, outcomes
from cascade.errors import AllTiersFailedError, PermanentProviderError, TransientProviderError
from cascade.observe import Observer, OutcomeLog, SessionPins, Shadow
from cascade.testing import ScriptedProvider
from cascade.types import Attempt
from tests.helpers import PRICE, tier
from tests.observe.support import observed, rows


def test_each_run_logs_a_row_eval_and_tune_can_read(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    result = c.run("What is 2+2?", metadata={"id": "q1"})
    c.close()
    [row] = rows(tmp_path)
    assert list(row["responses"]) == ["small-model", "medium-model"]  # the tiers called
    assert row["responses"]["small-model"][0]["answer"] == "A"  # extracted by the tier's scorer
    assert row["responses"]["small-model"][0]["text"] is None  # no text without include_text
    assert row["responses"]["small-model"][0]["text_chars"] == 1
    assert row["prompt"].startswith("sha256:") and "2+2" not in str(row)
    meta = row["cascade"]
    assert meta["answered"] == "medium" and meta["accepted"] is True and meta["request_id"] == "q1"
    assert meta["tiers"]["small"]["decision"] == "escalated"
    assert Decimal(meta["cost"]) == result.cost
    assert sum(Decimal(s["cost_usd"]) for m in row["responses"].values() for s in m) == result.cost
    data = outcomes.read(tmp_path / next(p.name for p in tmp_path.glob("out-*.jsonl")))
    assert data.models == ["small-model", "medium-model"]
    assert data.price("small-model") is not None  # the card beside the day's file


def test_include_text_keeps_prompt_and_answers(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, include_text=True)
    c.run("What is 2+2?")
    c.close()
    [row] = rows(tmp_path)
    assert row["prompt"] == "What is 2+2?"
    assert row["responses"]["medium-model"][0]["text"] == "b"


def test_same_prompt_same_hash_and_distinct_ids(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    c.run("same")
    c.run("same")
    c.run("other")
    c.close()
    r = rows(tmp_path)
    assert r[0]["prompt"] == r[1]["prompt"] != r[2]["prompt"]
    assert len({x["id"] for x in r}) == 3


def _timeless(attempts: tuple[Attempt, ...]) -> list[Attempt]:
    return [replace(a, latency_s=0.0) for a in attempts]


def test_shadow_completes_the_row_without_touching_the_answer(tmp_path: Path) -> None:
    plain, _ = observed(tmp_path / "plain")
    c, obs = observed(tmp_path, rate=1.0)
    expected = plain.run("q")
    got = c.run("q")
    c.close()
    plain.close()
    assert got.answer == expected.answer and _timeless(got.attempts) == _timeless(expected.attempts)
    [row] = rows(tmp_path)
    assert list(row["responses"]) == ["small-model", "medium-model", "large-model"]
    assert row["split"] == "shadow" and row["cascade"]["shadow"] is True
    assert row["cascade"]["tiers"]["large"]["shadow"] is True
    assert Decimal(row["cascade"]["cost"]) == got.cost  # live cost excludes the shadow call
    assert Decimal(row["cascade"]["shadow_cost"]) == PRICE.cost(tier("x").provider.max_usage(None, 1))  # type: ignore[arg-type]
    assert obs.shadow is not None and obs.shadow.spent_total == Decimal(row["cascade"]["shadow_cost"])


def test_shadow_never_delays_the_caller(tmp_path: Path) -> None:
    c, obs = observed(tmp_path, rate=1.0)
    slow = ScriptedProvider("c", model="large-model", latency=0.3)
    c.settings = c.settings.__class__(
        c.settings.name,
        (*c.tiers[:2], c.tiers[2].__class__("large", slow, PRICE)),
        c.settings.budget,
    )
    started = time.perf_counter()
    c.run("q")
    took = time.perf_counter() - started
    assert took < 0.2  # the 0.3 s shadow call happens after the caller has the answer
    c.close()
    assert obs.shadow is not None and obs.shadow.completed == 1
    assert rows(tmp_path)[0]["cascade"]["tiers"]["large"]["latency_s"] >= 0.3


def test_a_failing_shadow_call_is_logged_not_raised(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, rate=1.0)
    boom = ScriptedProvider(PermanentProviderError("down", provider="scripted"), model="large-model")
    c.settings = c.settings.__class__(
        c.settings.name, (*c.tiers[:2], c.tiers[2].__class__("large", boom, PRICE)), c.settings.budget
    )
    result = c.run("q")
    c.close()
    assert result.answer == "b"
    t = rows(tmp_path)[0]["cascade"]["tiers"]["large"]
    assert t["shadow"] and "PermanentProviderError" in t["error"]


def test_the_shadow_cap_stops_shadow_calls(tmp_path: Path) -> None:
    c, obs = observed(tmp_path, rate=1.0, cap=Decimal("0.00001"))  # below one call's worst case
    c.run("q")
    c.close()
    row = rows(tmp_path)[0]
    assert row["cascade"]["shadow_skipped"] == "cap"
    assert "large-model" not in row["responses"]
    assert obs.shadow is not None and obs.shadow.skipped_cap == 1 and obs.shadow.spent_total == 0


def test_close_counts_unfinished_shadow_work_as_dropped(tmp_path: Path) -> None:
    slow = ScriptedProvider("c", model="large-model", latency=0.2)
    shadow = Shadow(1.0, workers=1)
    obs = Observer(log=OutcomeLog(tmp_path / "out.jsonl"), shadow=shadow)
    c, _ = observed(tmp_path / "x")
    c = Cascade((*c.tiers[:2], c.tiers[2].__class__("large", slow, PRICE)), name="obs", observer=obs)
    for _ in range(5):
        c.run("q")
    obs.close(timeout=0.05)
    assert shadow.dropped >= 3  # queued behind the first slow call
    assert shadow.submitted == 5


def test_sampling_rate_is_respected(tmp_path: Path) -> None:
    c, obs = observed(tmp_path, rate=0.25)
    for _ in range(400):
        c.run("q")
    c.close()
    shadowed = sum(r["cascade"]["shadow"] for r in rows(tmp_path))
    assert 60 <= shadowed <= 140


def test_failed_runs_are_logged_with_the_error(tmp_path: Path) -> None:
    err = TransientProviderError("down", provider="scripted")
    obs = Observer(log=OutcomeLog(tmp_path / "out.jsonl"))
    c = Cascade([tier("only", err)], name="f", observer=obs)
    with pytest.raises(AllTiersFailedError):
        c.run("q")
    c.close()
    [row] = rows(tmp_path)
    assert row["cascade"]["reason"] == "error" and "AllTiersFailedError" in row["cascade"]["error"]


async def test_arun_and_batches_are_logged(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    await c.arun("a")
    await c.abatch(["b", "c"])
    c.batch(["d", "e", "f"])
    await c.aclose()
    assert len(rows(tmp_path)) == 6


def test_session_pinning_starts_at_the_escalated_tier(tmp_path: Path) -> None:
    now = [0.0]
    pins = SessionPins(60, clock=lambda: now[0])
    c, _ = observed(tmp_path, pins=pins)
    first = c.run("q", session="agent-1")
    assert [a.tier for a in first.attempts] == ["small", "medium"]
    second = c.run("q", session="agent-1")
    assert second.attempts[0].reason.startswith("pinned") and second.attempts[0].cost == 0
    assert [a.tier for a in second.attempts] == ["small", "medium"]
    assert second.cost == first.cost - first.attempts[0].total_cost  # the small tier was not called
    other = c.run("q", session="agent-2")
    assert not other.attempts[0].reason.startswith("pinned")
    now[0] = 61.0  # the pin's TTL ended
    third = c.run("q", session="agent-1")
    assert not third.attempts[0].reason.startswith("pinned")
    c.close()
    logged = rows(tmp_path)
    assert logged[1]["cascade"]["pinned"] == "medium" and logged[1]["cascade"]["session"] == "agent-1"
    assert logged[1]["cascade"]["tiers"]["small"]["called"] is False
    assert "small-model" not in logged[1]["responses"]
    assert "pinned" not in logged[0]["cascade"]


async def test_pinning_works_async(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    await c.arun("q", session="s")
    again = await c.arun("q", session="s")
    assert again.attempts[0].reason.startswith("pinned")
    await c.aclose()


def test_decisions_are_logged_events(tmp_path: Path) -> None:
    import structlog
    from structlog.testing import capture_logs

    c, _ = observed(tmp_path, rate=1.0, pins=SessionPins(60))
    try:
        with capture_logs() as events:
            c.run("q", session="s")
            c.run("q", session="s")
    finally:
        structlog.reset_defaults()  # capture_logs leaves structlog "configured": later runs would print
    c.close()
    names = [e["event"] for e in events]
    assert "cascade.shadow_sampled" in names and "cascade.pinned" in names
    assert not any(v == "q" for e in events for v in e.values())  # no prompt text in events


def test_a_budget_stop_is_in_the_trace_and_the_report(tmp_path: Path) -> None:
    from cascade import Budget
    from cascade.observe.logfile import read_log
    from cascade.observe.report import report

    c, _ = observed(tmp_path)
    capped = Cascade(c.tiers, name="obs", budget=Budget(per_request=Decimal("0.00003")), observer=c.observer)
    result = capped.run("q")  # small costs 0.00002; medium's worst case does not fit
    capped.close()
    assert result.reason == "budget"
    [row] = read_log([str(tmp_path)]).rows
    assert row["cascade"]["tiers"]["medium"] == {
        "model": "medium-model",
        "decision": "stopped",
        "reason": row["cascade"]["tiers"]["medium"]["reason"],
        "called": False,
    }
    fig = report([row], ["small", "medium", "large"], {})
    assert fig["tiers"][1]["reached"] == 0 and fig["tiers"][1]["escalations"] == {"budget": 1}
