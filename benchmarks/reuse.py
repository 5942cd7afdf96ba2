"""Live engine: what one call per model per request saves, on recorded GSM8K answers.

    .venv/bin/python benchmarks/reuse.py [--records N]

A four-tier ladder where each cheap tier is checked by agreement with the next tier's model
(a partner sample), so without reuse every partner's answer is bought twice: once as a voter,
once as the next tier. The same policy runs through the live engine (replay provider, `abatch`)
with sample reuse on and off; answers and decisions must be identical, only the bill differs.
Needs ../shared/data (or $CASCADE_DATA); exits with a message without it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from dataclasses import replace
from decimal import Decimal

from data_path import default_data

from cascade import Cascade, CascadeResult, outcomes
from cascade.engine.build import build
from cascade.policy.schema import Policy

DATA = default_data()
FILE = DATA / "gsm8k-zeroeval.jsonl.gz"
LADDER = ["Phi-3.5-mini-instruct", "Qwen2-7B-Instruct", "Meta-Llama-3.1-70B-Instruct", "gpt-4o-2024-08-06"]


def policy() -> Policy:
    tiers = []
    for i, model in enumerate(LADDER):
        tier: dict[str, object] = {
            "name": f"t{i}",
            "provider": "replay",
            "model": model,
            "options": {"path": str(FILE)},
        }
        if i < len(LADDER) - 1:  # agreement with the next tier's model decides
            tier["scorer"] = {
                "kind": "self_consistency",
                "k": 1,
                "answer": "number",
                "mixture": [{"samples": 1, "model": LADDER[i + 1]}],
            }
            tier["threshold"] = 1.0
        tiers.append(tier)
    return Policy.model_validate({"name": "reuse-ladder", "tiers": tiers})


def without_reuse(c: Cascade) -> Cascade:
    """The same cascade with tier calls never served from the run's samples."""
    return Cascade(
        [replace(t, call_key="") for t in c.tiers],
        name=c.name,
        budget=c.settings.budget,
        on_exhausted=c.settings.on_exhausted,
    )


async def run(c: Cascade, records: list[outcomes.Record]) -> list[CascadeResult]:
    out = await c.abatch([p for p in (r.prompt for r in records)], concurrency=64, return_exceptions=False)
    return [r for r in out if isinstance(r, CascadeResult)]


def _outcome(r: CascadeResult) -> tuple[str, str, list[str]]:
    return r.answer, r.tier, [a.decision for a in r.attempts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400)
    args = parser.parse_args()
    if not FILE.exists():
        sys.exit(f"recorded outcomes not found at {FILE} (set CASCADE_DATA)")
    records = outcomes.load(FILE).records[: args.records]
    on = build(policy())
    off = without_reuse(on)
    with_reuse = asyncio.run(run(on, records))
    plain = asyncio.run(run(off, records))
    same = all(
        (a.answer, a.tier, [x.decision for x in a.attempts])
        == (b.answer, b.tier, [x.decision for x in b.attempts])
        for a, b in zip(with_reuse, plain, strict=True)
    )
    cost_on = sum((r.cost for r in with_reuse), Decimal(0))
    cost_off = sum((r.cost for r in plain), Decimal(0))
    reused = sum(a.reused_samples for r in with_reuse for a in r.attempts)
    tiers = {t.name: sum(1 for r in with_reuse if r.tier == t.name) for t in on.tiers}
    quality = sum((r.sample.quality or 0.0) for r in with_reuse if r.sample is not None) / len(with_reuse)
    print(
        textwrap.dedent(f"""\
        ## Sample reuse on the live path (gsm8k-zeroeval, first {len(records)} records, replay, abatch)

        ladder: {" -> ".join(LADDER)} (each tier checked by agreement with the next tier's model)
        answered at: {", ".join(f"{k} {v}" for k, v in tiers.items())}; quality {quality:.3f}
        identical answers and decisions with and without reuse: {same}

        | | cost of {len(records)} requests | per request | samples reused |
        |---|---|---|---|
        | without reuse | ${cost_off:.4f} | ${cost_off / len(records):.6f} | 0 |
        | with reuse | ${cost_on:.4f} | ${cost_on / len(records):.6f} | {reused} |
        | saved | {1 - cost_on / cost_off:.1%} | | |
        """)
    )
    if not same:
        sys.exit("reuse changed an answer or a decision")


if __name__ == "__main__":
    main()
