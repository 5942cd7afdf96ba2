"""Cascade.drive / adrive: the caller executes the loop's actions (and may yield meanwhile); a run
abandoned or cancelled mid-step has its hold settled by the driver before the exception propagates."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from cascade import Budget, Cap, Cascade
from cascade.budget.memory import MemoryLedger
from cascade.engine.actions import Call
from cascade.engine.drive import AsyncStep, Executed, Step, aexecute, execute
from cascade.engine.loop import Action
from cascade.types import CascadeResult
from tests.helpers import cost_of, tier

BUCKET = "policy:p|total"


def capped(ledger: MemoryLedger) -> Cascade:
    tiers = [tier("small", "s", 0.2, 0.5), tier("large", "l")]
    return Cascade(tiers, name="p", budget=Budget(caps=(Cap(cost_of(100), "total"),), ledger=ledger))


def test_drive_yields_the_steps_items_then_the_result_as_run_does() -> None:
    ledger = MemoryLedger()
    seen: list[str] = []

    def step(action: Action) -> Step[str]:
        seen.append(type(action).__name__)
        if isinstance(action, Call):
            yield f"calling {action.tier.name}"
        yield Executed(execute(action))

    items = list(capped(ledger).drive("hi", step))
    result = items[-1]
    assert isinstance(result, CascadeResult) and result.answer == "l" and result.tier == "large"
    assert items[:-1] == ["calling small", "calling large"]
    assert seen.count("Reserve") == seen.count("Settle") == 2
    assert (
        ledger.held(BUCKET) == 0
        and ledger.spent(BUCKET) == result.cost == capped(MemoryLedger()).run("hi").cost
    )


def test_closing_drive_mid_call_settles_the_hold_at_the_worst_case_before_close_returns() -> None:
    ledger = MemoryLedger()
    closed: list[bool] = []

    def step(action: Action) -> Step[str]:
        if isinstance(action, Call):
            try:
                yield "mid-call"  # the consumer walks away here
            finally:
                closed.append(True)
        yield Executed(execute(action))

    driver = capped(ledger).drive("hi", step)
    assert next(driver) == "mid-call"
    assert ledger.held(BUCKET) > 0
    driver.close()
    assert closed == [True]  # the step's own clean-up ran
    assert ledger.held(BUCKET) == 0 and ledger.spent(BUCKET) > 0  # cut off in flight: worst case


def test_a_step_without_an_outcome_is_a_clear_error_and_its_hold_is_settled() -> None:
    ledger = MemoryLedger()

    def step(action: Action) -> Step[str]:
        if not isinstance(action, Call):
            yield Executed(execute(action))

    with pytest.raises(TypeError, match="without an Executed outcome for Call"):
        list(capped(ledger).drive("hi", step))
    assert ledger.held(BUCKET) == 0


async def test_a_cancelled_adrive_settles_its_hold_before_the_cancellation_propagates() -> None:
    ledger = MemoryLedger()
    in_call = asyncio.Event()

    async def step(action: Action) -> AsyncStep[str]:
        if isinstance(action, Call):
            in_call.set()
            await asyncio.sleep(5)
        yield Executed(await aexecute(action))

    async def consume() -> list[str | CascadeResult]:
        return [item async for item in capped(ledger).adrive("hi", step)]

    task = asyncio.create_task(consume())
    await in_call.wait()
    assert ledger.held(BUCKET) > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger.held(BUCKET) == 0 and ledger.spent(BUCKET) > 0


async def test_adrive_runs_to_the_same_result_as_arun() -> None:
    async def step(action: Action) -> AsyncStep[str]:
        yield Executed(await aexecute(action))

    items = [item async for item in capped(MemoryLedger()).adrive("hi", step)]
    (result,) = items
    assert isinstance(result, CascadeResult)
    expected = await capped(MemoryLedger()).arun("hi")
    assert (result.answer, result.tier, result.cost) == (expected.answer, expected.tier, expected.cost)
    assert Decimal(0) < result.cost


def test_a_tiers_first_reservation_uses_its_retry_policy_as_is_and_a_later_one_a_copy() -> None:
    """Per-request cost (issue 24): no policy copy when the action may make all the tier's tries."""
    from dataclasses import replace

    from cascade.engine.drive import _policy

    calls: list[Call] = []

    def step(action: Action) -> Step[None]:
        if isinstance(action, Call):
            calls.append(action)
        yield Executed(execute(action))

    list(capped(MemoryLedger()).drive("hi", step))
    first = calls[0]
    assert first.attempts == first.tier.retry.attempts
    policy = first.tier.retry
    assert _policy(policy, first.attempts) is policy
    assert _policy(policy, 1) == replace(policy, attempts=1)
    assert _policy(policy, 0).attempts == 1


def test_the_async_first_try_runs_with_no_retry_frame_in_flight_and_a_failed_one_is_retried() -> None:
    """Per-request cost (issue 24): the driver makes the first try itself; retries as before."""
    import traceback

    from cascade.errors import RateLimitError
    from cascade.request import Request
    from cascade.testing import ScriptedProvider
    from cascade.types import Completion

    stacks: list[list[str]] = []

    class Watched(ScriptedProvider):
        async def acomplete(self, request: Request, n: int = 1) -> Completion:
            stacks.append([f.name for f in traceback.extract_stack()])
            if len(stacks) == 2:
                raise RateLimitError("429", provider="p", status_code=429)
            return await super().acomplete(request, n)

    cascade = Cascade([tier("only", Watched("w"))], name="p")
    assert asyncio.run(cascade.arun("hi")).answer == "w"
    assert "acall_with_retry" not in stacks[0] and "aretry_failed" not in stacks[0]
    result = asyncio.run(cascade.arun("again"))  # the first try fails (429): retried
    assert result.answer == "w" and result.attempts[-1].retries == 1 and len(stacks) == 3


def test_the_async_first_try_builds_no_partial_nor_deadline_when_none_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 24: each is a GC-tracked object in flight per call; a retry still gets its partial."""
    from cascade.engine import drive

    built: list[str] = []

    def counting(name: str, real: object) -> object:
        def make(*args: object, **kwargs: object) -> object:
            built.append(name)
            return real(*args, **kwargs)  # type: ignore[operator]

        return make

    monkeypatch.setattr(drive, "partial", counting("partial", drive.partial))
    monkeypatch.setattr(drive, "deadline", counting("deadline", drive.deadline))
    result = asyncio.run(capped(MemoryLedger()).arun("hi"))
    assert result.answer == "l" and built == []


def test_while_a_provider_answers_no_action_outcome_trace_list_or_context_set_is_kept() -> None:
    """Issue 24: what each run holds in flight is what the collector walks at every collection.

    With a memory-ledger cap (a reservation made), while every run waits on its provider: no
    ``Call`` nor ``Reserved`` is alive, no bound ``__exit__`` of a ``with``, no list in ``_Run``,
    and the sample cache's context variable was never set in the run's task (an empty cache)."""
    import gc

    from cascade.engine import reuse
    from cascade.engine.actions import Reserved
    from cascade.engine.loop import _Run
    from cascade.request import Request
    from cascade.testing import ScriptedProvider
    from cascade.types import Completion

    contexts: list[object] = []
    gates: list[asyncio.Event] = []

    class Waiting(ScriptedProvider):
        async def acomplete(self, request: Request, n: int = 1) -> Completion:
            contexts.append(reuse.current.get())
            await gates[0].wait()
            return await super().acomplete(request, n)

    tiers = [tier("small", Waiting("s"), 0.9, 0.5), tier("large", "l")]
    c = Cascade(tiers, name="p", budget=Budget(caps=(Cap(cost_of(100), "total"),), ledger=MemoryLedger()))

    async def main() -> list[object]:
        gates.append(asyncio.Event())
        gc.collect()
        before = {id(o) for o in gc.get_objects()}  # other tests' leftovers are not this test's
        tasks = [asyncio.ensure_future(c.arun(f"q{i}")) for i in range(20)]
        while len(contexts) < 20:
            await asyncio.sleep(0)
        alive = [
            o
            for o in gc.get_objects()
            if id(o) not in before
            and (
                type(o) in (Call, Reserved)
                or (type(o).__name__ == "method" and type(o.__self__).__module__.startswith("cascade."))
                or (isinstance(o, _Run) and any(isinstance(x, list) for x in (o.attempts, o.candidates)))
            )
        ]
        gates[0].set()
        assert all(r.answer == "s" for r in await asyncio.gather(*tasks))
        return alive

    assert asyncio.run(main()) == [] and contexts == [None] * 20
