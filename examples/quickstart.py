"""The plain-Python entry point: load a policy, run prompts (sync, async, batch), read the trace.

Runs offline: the demo policy's tiers are scripted. Then a cascade built in code, with a daily
spend cap per tenant, shows a budget stop.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import cascade
from cascade import Budget, Cap, Cascade, Price, Tier
from cascade.budget.memory import MemoryLedger
from cascade.scorers.basic import RegexScorer
from cascade.testing import ScriptedProvider

POLICY = Path(__file__).resolve().parent.parent / "policies" / "demo.yaml"


def from_a_policy() -> None:
    with cascade.load(POLICY) as demo:
        result = demo.run("What is 2+2?")
        print(f"answer {result.answer!r} from tier {result.tier} ({result.model}), cost ${result.cost}")
        print(result.explain())

        same = asyncio.run(demo.arun("What is 2+2?"))  # the same loop, driven asynchronously
        assert (same.answer, same.tier, same.cost) == (result.answer, result.tier, result.cost)

        results = demo.batch(["one", "two", "three"], concurrency=3)
        print(f"batch: {[r.tier for r in results if isinstance(r, cascade.CascadeResult)]}")
        trace = result.to_dict()  # JSON-ready: every attempt's score, decision, tokens and cost
        print(f"trace: {[(a['tier'], a['decision'], a['total_cost']) for a in trace['attempts']]}\n")


def with_a_tenant_cap() -> None:
    cheap = Tier(
        "cheap",
        ScriptedProvider("I am not sure", model="cheap-model"),
        Price(Decimal("0.15"), Decimal("0.60")),
        scorer=RegexScorer(r"\d"),  # accept only answers with a number
        threshold=1.0,
    )
    strong = Tier(
        "strong", ScriptedProvider("4", model="strong-model"), Price(Decimal("2.50"), Decimal("10"))
    )
    support = Cascade(
        [cheap, strong],
        name="support",
        budget=Budget(
            caps=(Cap(Decimal("0.001"), "day", scope="key"),),  # $0.001 per tenant per day
            ledger=MemoryLedger(),  # SQLiteLedger(path) to share the cap across processes
            on_exceeded="stop",  # return the best answer so far instead of raising
        ),
    )
    for i in range(1, 100):
        result = support.run("What is 2+2?", budget_key="tenant-42")
        if result.reason == "budget":
            print(f"request {i}: stopped by the cap; best answer so far {result.answer!r} from {result.tier}")
            print(f"  {result.attempts[-1].reason}")
            break
    other = support.run("What is 2+2?", budget_key="tenant-7")
    print(f"another tenant is not affected: {other.answer!r} from {other.tier}")


if __name__ == "__main__":
    from_a_policy()
    with_a_tenant_cap()
