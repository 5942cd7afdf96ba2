"""Hedged escalation: p50/p95 latency and cost over `after`, on recorded GSM8K and date answers.

    .venv/bin/python benchmarks/hedging.py [--records N] [--seed S] [--after 1,p90] [--tiers 1]

The live engine (``arun``, replay providers, the real scorers) runs every prompt of a set with no
hedge, then with ``hedge: {after: X}`` on every tier but the last, for a grid of X. Time is
*simulated*, not slept: the runs use an event loop whose clock jumps to the next timer when
nothing is ready (a discrete-event simulation of the same asyncio code), so a 1,319-prompt pass
takes seconds. Answers come from the recordings, so every setting returns the same answers (the
benchmark checks it): only latency and cost move.

Latency model (seeded; illustrative figures, not measurements of the providers): a call of model
M for a prompt takes ``ttft + tokens / tps``, where ``tokens`` is the recorded output of the
longest sample (samples stream in parallel), ``tps`` is M's tokens per second and ``ttft`` is M's
median time to first token times a lognormal factor (sigma 0.5), times a stall factor with
probability 8% (1 + 4 * Pareto(alpha 1.5): a queue or a cold replica). The draw depends only on
(seed, model, prompt, samples), so a call takes the same time in every setting. Scorer calls to
partner models (the mixture votes) take simulated time too.

``after: pNN`` is the quantile of each hedging tier's own latencies (the engine's window, per
cascade): a first, unmeasured pass over the first 128 prompts fills it (every prompt of a pass
starts at once, so none would hedge otherwise); it keeps updating during the measured pass.

The *ceiling* line is the p95 if every tier before the one that answers took no time (its calls
and its scorer's partner calls): no hedge can do better while an answer waits for its own tier's
verdict. The *in parallel* line is the p95 if every tier up to the one that answers started at once,
each scored as soon as its own answer is in: the answers stay the same only if an answer also waits
for every earlier tier's verdict (an earlier tier that accepts wins), so no hedge can beat it (the
engine scores the tiers in order: a backup's answer is scored once the tier before escalated).
``--tiers`` hedges only the tiers named (say ``1``: the middle tier of the date set).

Cost is what the engine charges: a backup cancelled after it launched is charged its worst case
(``max_tokens`` of output: the billing rule for a call cut off by cancellation), one that had
answered its recorded cost. Needs ../shared/data (or $CASCADE_DATA); exits with a message without it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import selectors
import statistics
import sys
from dataclasses import replace
from decimal import Decimal
from typing import Any

from data_path import default_data

from cascade import Cascade, CascadeResult, outcomes
from cascade.engine.build import build
from cascade.engine.latency import WINDOW, HedgeAfter
from cascade.policy.schema import Policy
from cascade.providers.replay import ReplayProvider
from cascade.request import Request
from cascade.types import Completion

DATA = default_data()

# model -> (median time to first token in seconds, output tokens per second)
SPEED: dict[str, tuple[float, float]] = {
    "gpt-4o-mini-2024-07-18": (0.45, 85.0),
    "gemini-1.5-flash": (0.35, 160.0),
    "gpt-4o-2024-08-06": (0.55, 80.0),
    "llama-2-13b-chat": (0.30, 60.0),
    "gpt-3.5-turbo-0613": (0.40, 90.0),
    "gpt-4-0613": (0.70, 25.0),
}
SIGMA, STALL_P, STALL_ALPHA, STALL_SCALE = 0.5, 0.08, 1.5, 4.0
SEED = 0


def call_seconds(model: str, prompt: str, completion: Completion) -> float:
    ttft, tps = SPEED[model]
    key = f"{SEED}|{model}|{len(completion.samples)}|{prompt}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    first = ttft * math.exp(rng.gauss(0.0, SIGMA))
    if rng.random() < STALL_P:
        first *= 1 + STALL_SCALE * rng.paretovariate(STALL_ALPHA)
    n = max(1, len(completion.samples))
    return first + completion.usage.output_tokens / n / tps


CALLS: dict[str, list[tuple[str, float]]] = {}  # prompt -> (model, simulated seconds) of each call


async def _timed(self: ReplayProvider, request: Request, n: int = 1) -> Completion:
    completion = self._completion(request, n)
    seconds = call_seconds(self.model, request.prompt, completion)
    CALLS.setdefault(request.prompt, []).append((self.model, seconds))
    await asyncio.sleep(seconds)
    return completion


class _Jump(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector that never waits: the loop's clock jumps by the timeout instead."""

    clock = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self.clock += timeout
        return ready


class SimulatedLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time (see the module docstring)."""

    def __init__(self) -> None:
        self._jump = _Jump()
        super().__init__(self._jump)

    def time(self) -> float:
        return self._jump.clock


def sc(k: int, answer: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "self_consistency", "k": k, "answer": answer, **extra}


SETS: dict[str, list[dict[str, Any]]] = {
    # a cheap model checked by agreement with a cheaper, faster partner; then a strong model
    "gsm8k-zeroeval": [
        {
            "model": "gpt-4o-mini-2024-07-18",
            "scorer": sc(1, "number", mixture=[{"samples": 1, "model": "gemini-1.5-flash"}]),
            "threshold": 1.0,
        },
        {"model": "gpt-4o-2024-08-06"},
    ],
    # three tiers, five chain-of-thought samples each voting with five program-of-thought samples
    "date-mot-3tier": [
        {
            "model": m,
            "options": {"variant": "cot", "billing": "prompt_once"},
            **(
                {
                    "scorer": sc(5, "text", mixture=[{"samples": 5, "options": {"variant": "pot"}}]),
                    "threshold": 0.7,
                }
                if m != "gpt-4-0613"
                else {}
            ),
        }
        for m in ("llama-2-13b-chat", "gpt-3.5-turbo-0613", "gpt-4-0613")
    ],
}


def cascade_for(name: str) -> Cascade:
    tiers = []
    for i, t in enumerate(SETS[name]):
        options = {"path": str(DATA / f"{name}.jsonl.gz"), **t.get("options", {})}
        spec = {k: v for k, v in t.items() if k != "options"}
        tiers.append({"name": f"t{i}", "provider": "replay", "options": options, **spec})
    return build(Policy.model_validate({"name": f"{name}-hedged", "tiers": tiers}))


def hedging(c: Cascade, after: HedgeAfter | None, which: set[int] | None = None) -> Cascade:
    """``c`` with ``hedge: {after}`` on the tiers ``which`` (None: every tier but the last)."""
    last = len(c.tiers) - 1
    which = set(range(last)) if which is None else which - {last}
    tiers = [replace(t, hedge=after if i in which else None) for i, t in enumerate(c.tiers)]
    return Cascade(tiers, name=c.name)


def run(c: Cascade, records: list[outcomes.Record]) -> list[tuple[CascadeResult, float]]:
    loop = SimulatedLoop()

    async def one(prompt: str) -> tuple[CascadeResult, float]:
        start = loop.time()
        result = await c.arun(prompt)
        return result, loop.time() - start

    async def every() -> list[tuple[CascadeResult, float]]:
        return list(await asyncio.gather(*(one(r.prompt) for r in records)))

    try:
        return loop.run_until_complete(every())
    finally:
        loop.close()


def quality(result: CascadeResult) -> float:
    q = result.sample.quality if result.sample is not None else None
    return q or 0.0


def p95(seconds: list[float]) -> float:
    latencies = sorted(seconds)
    return latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]


def summary(runs: list[tuple[CascadeResult, float]]) -> dict[str, Any]:
    return {
        "p50": statistics.median(s for _, s in runs),
        "p95": p95([s for _, s in runs]),
        "cost": sum((r.cost for r, _ in runs), Decimal(0)),
        "hedge_cost": sum((r.hedge_cost for r, _ in runs), Decimal(0)),
        "quality": statistics.fmean(quality(r) for r, _ in runs),
        "answers": [r.answer for r, _ in runs],
        "hedged": sum(1 for r, _ in runs if any(a.hedge for a in r.attempts)),
        "tail_first": _tail_first(runs),
    }


def ceiling(name: str, runs: list[tuple[CascadeResult, float]], records: list[outcomes.Record]) -> float:
    """The p95 if every tier before the answering one took no time at all (its calls, its scorer's
    partner calls): the most any hedge can cut while an answer waits for its own tier's verdict."""
    tier_of = {m: i for i, t in enumerate(SETS[name]) for m in _models(t)}
    left = []
    for (result, seconds), record in zip(runs, records, strict=True):
        k = int(result.tier[1:])
        earlier = sum(s for m, s in CALLS.get(record.prompt, []) if tier_of[m] < k)
        left.append(max(0.0, seconds - earlier))
    return p95(left)


def in_parallel(name: str, runs: list[tuple[CascadeResult, float]], records: list[outcomes.Record]) -> float:
    """The p95 if every tier up to the answering one started at once, each scored as soon as its
    own answer is in: the most any hedge can cut while the answers stay the same (an answer waits
    for every earlier tier's verdict, since an earlier tier that accepts wins)."""
    tier_of = {m: i for i, t in enumerate(SETS[name]) for m in _models(t)}
    left = []
    for (result, _), record in zip(runs, records, strict=True):
        k = int(result.tier[1:])
        alone = [0.0] * (k + 1)  # each tier's call, then its scorer's partner calls
        for m, s in CALLS.get(record.prompt, []):
            alone[tier_of[m]] += s
        left.append(max(alone))
    return p95(left)


def _models(tier: dict[str, Any]) -> list[str]:
    partners = tier.get("scorer", {}).get("mixture", [])
    return [tier["model"], *(p["model"] for p in partners if "model" in p)]


def _tail_first(runs: list[tuple[CascadeResult, float]]) -> float:
    """Share of the slowest 5% answered by the first tier: no hedge can shorten them (its verdict
    is awaited, the fast answer does not win by arriving first)."""
    tail = sorted(runs, key=lambda rs: rs[1])[-max(1, len(runs) // 20) :]
    return sum(1 for r, _ in tail if r.tier == r.attempts[0].tier) / len(tail)


def main() -> None:
    global SEED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=0, help="first N records of each set (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--after", default="1,2,4,6,10,p50,p75,p90", help="comma-separated: seconds, or pNN (a quantile)"
    )
    parser.add_argument(
        "--tiers",
        default="",
        help="comma-separated indices of the tiers that hedge (default: all but the last)",
    )
    args = parser.parse_args()
    which = {int(x) for x in args.tiers.split(",")} if args.tiers else None
    SEED = args.seed
    if not (DATA / "gsm8k-zeroeval.jsonl.gz").exists():
        sys.exit(f"recorded outcomes not found in {DATA} (set CASCADE_DATA)")
    ReplayProvider.acomplete = _timed  # type: ignore[method-assign]  # simulated latency per call
    grid = [HedgeAfter.parse(x) for x in args.after.split(",")]
    for name in SETS:
        records = outcomes.load(DATA / f"{name}.jsonl.gz").records
        records = records[: args.records] if args.records else records
        base_cascade = cascade_for(name)
        CALLS.clear()
        runs = run(base_cascade, records)
        base, top, wide = summary(runs), ceiling(name, runs, records), in_parallel(name, runs, records)
        print(f"\n{name}: {len(records)} prompts, seed {SEED}, simulated time")
        print(f"slowest 5% answered by the first tier (a hedge cannot help them): {base['tail_first']:.0%}")
        print(
            f"ceiling: p95 {top:.2f} s ({1 - top / base['p95']:.1%} cut) if every tier before the answering"
            " one took no time"
        )
        print(
            f"in parallel: p95 {wide:.2f} s ({1 - wide / base['p95']:.1%} cut) if every tier up to the"
            " answering one started at once (each scored when in; an answer waits for earlier verdicts)"
        )
        print(
            f"{'after':>8} {'p50 s':>7} {'p95 s':>7} {'p95 cut':>8} {'cost $':>10} {'cost +':>7}"
            f" {'hedge $':>9} {'hedged':>7} {'quality':>8} same"
        )
        print(
            f"{'none':>8} {base['p50']:7.2f} {base['p95']:7.2f} {'':>8} {base['cost']:10.4f} {'':>7}"
            f" {'':>9} {'':>7} {base['quality']:8.3f}"
        )
        for after in grid:
            c = hedging(base_cascade, after, which)
            if after.quantile is not None:  # its latency window, filled by a first (unmeasured) pass
                run(c, records[:WINDOW])
            s = summary(run(c, records))
            cut = 1 - s["p95"] / base["p95"]
            more = s["cost"] / base["cost"] - 1
            same = "yes" if s["answers"] == base["answers"] else "NO"
            print(
                f"{after!s:>8} {s['p50']:7.2f} {s['p95']:7.2f} {cut:8.1%} {s['cost']:10.4f} {more:7.1%}"
                f" {s['hedge_cost']:9.4f} {s['hedged']:7d} {s['quality']:8.3f} {same}"
            )


if __name__ == "__main__":
    main()
