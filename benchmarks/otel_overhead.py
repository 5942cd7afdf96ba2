"""What OpenTelemetry traces add to a run: CPU per run of two scripted tiers, traced or not.

    .venv/bin/python benchmarks/otel_overhead.py [RUNS]   (default 3000 per round, 3 rounds)

The traced cascade records three spans and two evaluation events per run into the SDK's
in-memory exporter (``SimpleSpanProcessor``: exported as each span ends). CPU time
(``process_time``), so other jobs on the machine disturb it less than wall time.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cascade import Cascade, Price, RetryPolicy, Tier
from cascade.observe import Observer, Telemetry
from cascade.testing import FixedScorer, ScriptedProvider

PRICE = Price(Decimal(1), Decimal(1))
ONCE = RetryPolicy(attempts=1, initial=0, max_wait=0, jitter=0)


def cascade(observer: Observer | None) -> Cascade:
    cheap = Tier(
        "cheap", ScriptedProvider("a", model="c"), PRICE, FixedScorer(0.1), 0.5, ONCE, provider_kind="x"
    )
    strong = Tier("strong", ScriptedProvider("b", model="s"), PRICE, None, None, ONCE, provider_kind="x")
    return Cascade([cheap, strong], name="bench", observer=observer)


def per_run(c: Cascade, runs: int) -> float:
    for _ in range(200):
        c.run("hi")
    start = time.process_time()
    for _ in range(runs):
        c.run("hi")
    return (time.process_time() - start) / runs * 1e6


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plain, traced = cascade(None), cascade(Observer(telemetry=Telemetry(provider)))
    for r in range(3):
        a, b = per_run(plain, runs), per_run(traced, runs)
        exporter.clear()
        print(f"round {r}: untraced {a:.0f} us/run, traced {b:.0f} us/run, added {b - a:.0f} us")


if __name__ == "__main__":
    main()
