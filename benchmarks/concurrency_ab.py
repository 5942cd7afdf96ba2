"""N concurrent ``arun`` against bare asyncio, one line per process, for A/B runs across revisions.

    .venv/bin/python benchmarks/concurrency_ab.py LABEL
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/concurrency_ab.py base   (a `git worktree` of REV)

Prints LABEL, the GC-tracked objects per request in flight (1,000 requests, day cap on a memory
ledger), then for N = 1,000 / 10,000 and 1 / 3 tiers called the median of 3 rounds of
cascade / bare asyncio with the median share of wall time in the garbage collector. The harness is
``benchmarks/overhead.py``'s; the ``cascade`` imported is whichever comes first on the path, so run
processes of each revision in turn and compare pair by pair.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import (
    Budget,
    Cap,
    GCTimer,
    MemoryLedger,
    _tracked_in_flight,
    bare_concurrent,
    concurrent,
    make,
)


def main(label: str) -> None:
    caps = (Cap(Decimal(10**6), "day"),)
    c = make(latency=0.02, budget=Budget(caps=caps, ledger=MemoryLedger()), first_accepts=True)
    asyncio.run(concurrent(c, 100))  # warm up
    out = [label, f"objects={asyncio.run(_tracked_in_flight(c, 1000)):.1f}"]
    for n in (1000, 10000):
        for first_accepts, tiers in [(True, 1), (False, 3)]:
            c = make(latency=0.02, first_accepts=first_accepts)
            asyncio.run(concurrent(c, 100))
            walls, bares, in_gc = [], [], []
            for _ in range(3):
                with GCTimer() as timer:
                    walls.append(asyncio.run(concurrent(c, n)))
                in_gc.append(timer.total)
                bares.append(asyncio.run(bare_concurrent(c, n, tiers)))
            ratio = statistics.median(walls) / statistics.median(bares)
            share = statistics.median(g / w for g, w in zip(in_gc, walls, strict=True))
            out.append(f"{n}x{tiers}={ratio:.2f}x(gc {share:.0%})")
    print(" ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this")
