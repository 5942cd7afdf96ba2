"""The production loop, offline: live traffic -> outcome log (10% shadow) -> labels -> tune -> report.

A cascade serves 2,000 date questions (replayed from the recorded BIG-bench answers of three real
models in ../shared/data, so it runs offline), logging every request and shadow-calling the skipped
tiers for 10% of them. The log is labelled without humans (agreement with the strongest tier),
``cascade tune`` picks new thresholds from the shadow rows, the tuned policy serves 1,000 more
requests, and ``cascade report`` compares its live figures with what the tuner predicted.

    python examples/production_loop.py

Needs the recorded outcomes (../shared/data, or $CASCADE_DATA); without them it says so and exits.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from cascade import Cascade, outcomes
from cascade.cli import main as cascade_cli

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CASCADE_DATA", ROOT.parent / "shared" / "data"))
FILE = DATA / "date-mot-3tier.jsonl.gz"

TIER = """\
  - name: {name}
    provider: replay
    model: {model}
    options: {{path: "{path}", variant: cot, billing: prompt_once}}
"""
VOTE = "    scorer: {{kind: self_consistency, k: {k}, answer: text}}\n    threshold: {threshold}\n"


def policy_text(log: Path) -> str:
    """A hand-set starting policy: two self-consistency tiers, then GPT-4; log + 10% shadow."""
    tiers = [
        TIER.format(name="llama", model="llama-2-13b-chat", path=FILE) + VOTE.format(k=10, threshold=0.8),
        TIER.format(name="gpt35", model="gpt-3.5-turbo-0613", path=FILE) + VOTE.format(k=5, threshold=0.8),
        TIER.format(name="gpt4", model="gpt-4-0613", path=FILE),
    ]
    return (
        "name: dates\ntiers:\n"
        + "".join(tiers)
        + f"logging:\n  outcomes: {{path: {log}}}\n"
        + "shadow: {rate: 0.1, cap: {limit: 20, window: day}}\n"
    )


def serve(policy: Path, n: int, seed: int) -> tuple[float, Decimal, float, dict[str, object]]:
    """Serve ``n`` requests; returns ms per request, cost per request, true quality, observer stats."""
    data = outcomes.load(FILE)
    rng = random.Random(seed)
    cascade = Cascade.from_policy(policy)
    spent, right = Decimal(0), 0.0
    started = time.perf_counter()
    for _ in range(n):
        record = rng.choice(data.records)
        result = cascade.run(record.prompt, metadata={"id": record.id})
        spent += result.cost
        right += result.sample.quality or 0.0 if result.sample is not None else 0.0
    took = time.perf_counter() - started
    cascade.close()  # finishes the shadow calls and flushes the log
    assert cascade.observer is not None
    return took / n * 1000, spent / n, right / n, cascade.observer.stats()


def cli(*args: str) -> None:
    print(f"\n$ cascade {' '.join(args)}")
    sys.stdout.flush()
    code = cascade_cli(list(args))
    if code != 0:
        raise SystemExit(f"cascade {args[0]} failed ({code})")


def main() -> None:
    print("production loop: live traffic -> outcome log -> labels -> tune -> report")
    if not FILE.exists():
        print(f"skipped: {FILE} not found (set CASCADE_DATA to the recorded-outcomes folder)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = work / "dates.yaml"
        first.write_text(policy_text(work / "logs" / "outcomes.jsonl"))

        print("== 1. live traffic: 2,000 requests, every one logged, 10% shadow-sampled")
        ms, cost, quality, stats = serve(first, 2000, seed=1)
        print(f"{ms:.3f} ms per request (replay), cost/request ${cost:.6f}, true quality {quality:.4f}")
        print(f"log and shadow: {stats}")

        print("\n== 2. labels without humans: agreement with the strongest tier (GPT-4)")
        labelled = work / "labelled.jsonl"
        # `recorded` adds the replayed answers' true labels, only to show how far the proxy is off
        cli("label", str(work / "logs"), "--reference", "strongest", "--out", str(labelled))
        cli(
            "label",
            str(work / "logs"),
            "--reference",
            "strongest",
            "--reference",
            "recorded",
            "--rows",
            "all",
            "--out",
            str(work / "check.jsonl"),
        )

        print("\n== 3. re-tune on the shadow rows: cheapest policy agreeing with GPT-4 on 90% of answers")
        tuned = work / "dates.tuned.yaml"
        cli(
            "tune",
            str(first),
            "--data",
            str(labelled),
            "--target-quality",
            "0.9",
            "--out",
            str(tuned),
            "--json",
            str(work / "tune.json"),
        )
        print(
            "\n"
            + "\n".join(line for line in tuned.read_text().splitlines() if line.startswith("# predicted"))
        )

        print("\n== 4. the tuned policy serves 1,000 more requests (its own log)")
        text = tuned.read_text().replace(str(work / "logs"), str(work / "logs2"))
        tuned.write_text(text)
        ms, cost, quality, stats = serve(tuned, 1000, seed=2)
        print(f"cost/request ${cost:.6f}, true quality {quality:.4f}; {stats}")
        cli(
            "label",
            str(work / "logs2"),
            "--reference",
            "strongest",
            "--rows",
            "all",
            "--out",
            str(work / "live2.jsonl"),
        )

        print("\n== 5. live report against the tuned policy's predictions")
        cli("report", str(work / "live2.jsonl"), "--policy", str(tuned))


if __name__ == "__main__":
    main()
