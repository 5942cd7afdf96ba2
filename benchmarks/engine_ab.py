"""The engine against an earlier revision of itself: CPU per request, in one process, interleaved.

    .venv/bin/python benchmarks/engine_ab.py [REV]   (default 7a6f08c: before issue 9/11's engine work)

Loads ``cascade/engine/loop.py`` and ``cascade/engine/cascade.py`` of REV (``git show``) beside the
current engine (everything else is shared) and runs the same three scripted tiers through both,
alternating rounds, timing CPU (``process_time``), so other jobs on the machine disturb it less
than wall time. Prints new/old per setting.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import types
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade import Budget, Cap, Price
from cascade.budget.memory import MemoryLedger
from cascade.engine.actions import Tier
from cascade.engine.cascade import Cascade
from cascade.testing import FixedScorer, ScriptedProvider

ROOT = Path(__file__).resolve().parents[1]
PRICE = Price(Decimal("0.15"), Decimal("0.60"))


def load(rev: str, path: str, name: str, subs: tuple[tuple[str, str], ...] = ()) -> Any:
    src = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    text = src.stdout
    for a, b in subs:
        text = text.replace(a, b)
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module
    exec(compile(text, module.__file__, "exec"), module.__dict__)  # our own history
    return module


def make(cascade_cls: Any, tier_cls: Any, budget: Budget | None, first_accepts: bool = False) -> Any:
    return cascade_cls(
        [
            tier_cls("s", ScriptedProvider("a"), PRICE, FixedScorer(0.9 if first_accepts else 0.1), 0.5),
            tier_cls("m", ScriptedProvider("b"), PRICE, FixedScorer(0.1), 0.5),
            tier_cls("l", ScriptedProvider("c"), PRICE),
        ],
        name="bench",
        budget=budget,
    )


def cpu(fn: Any, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def row(label: str, best: dict[str, float]) -> str:
    before, now = best["before"], best["now"]
    return f"| {label} | {before * 1e6:.1f} µs | {now * 1e6:.1f} µs | {now / before:.2f}x |"


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "7a6f08c"
    old_loop = load(rev, "cascade/engine/loop.py", "old_loop")
    old = load(
        rev,
        "cascade/engine/cascade.py",
        "old_cascade",
        (("from cascade.engine.loop import", "from old_loop import"),),
    )
    budgets: dict[str, Callable[[], Budget | None]] = {
        "no caps": lambda: None,
        "per-request cap": lambda: Budget(per_request=Decimal("0.01")),
        "per-request + day cap": lambda: Budget(
            per_request=Decimal("0.01"), caps=(Cap(Decimal(10**6), "day"),), ledger=MemoryLedger()
        ),
    }
    print(f"## Engine CPU per request: now vs {rev} (3 scripted tiers, best of 7 interleaved rounds)\n")
    print("| setting | before | now | now / before |\n|---|---|---|---|")
    n = 3000
    for label, budget in budgets.items():
        pair = {"before": make(old.Cascade, old_loop.Tier, budget()), "now": make(Cascade, Tier, budget())}
        best = {k: float("inf") for k in pair}
        for r in range(7):
            for k in ("before", "now") if r % 2 == 0 else ("now", "before"):
                best[k] = min(best[k], cpu(lambda c=pair[k]: c.run("What is 2+2?"), n))
        print(row(f"sync, {label}", best))
    for first, tiers in ((True, 1), (False, 3)):
        pair = {
            "before": make(old.Cascade, old_loop.Tier, None, first),
            "now": make(Cascade, Tier, None, first),
        }
        best = {k: float("inf") for k in pair}
        for r in range(6):
            for k in ("before", "now") if r % 2 == 0 else ("now", "before"):
                c = pair[k]

                async def many(c: Any = c) -> None:
                    await asyncio.gather(*(c.arun(f"q{i}") for i in range(2000)))

                t = time.process_time()
                asyncio.run(many())
                best[k] = min(best[k], (time.process_time() - t) / 2000)
        print(row(f"async, {tiers} tier(s) called", best))


if __name__ == "__main__":
    main()
