"""Abstention at an error target: coverage reached and held-out error in seeded random splits.

    .venv/bin/python benchmarks/abstain_splits.py [--only NAME ...] [--splits 50] [--target 0.02]

For every recorded set (``../shared/data`` or ``$CASCADE_DATA``) whose models were sampled several
times, and each of ``--splits`` seeded random train/test halves: the last tier is the model with the
best first-sample quality on the *training* half among those with at least 3 samples per record;
its score is the self-consistency agreement (the share of its samples giving the majority answer)
and its answer the majority one. :func:`cascade.evaluate.abstain.tune_abstain` picks the abstain threshold for
an error rate among answered requests of at most ``--target`` at risk ``--risk`` on the training
half only; the held-out half gives the coverage and the error among answered. Prints per set the
splits where a threshold was proven, the mean held-out coverage and error, and the share of splits
whose held-out error is within the target (the guarantee is on the expected error; the held-out
half adds its own noise). Sets with one sample per model have no last-tier score in the recording
and are reported as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from data_path import default_data

DEFAULT_DATA = default_data()


def agreement(data: Any, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: (has >= 3 labelled samples, agreement share, majority answer right)."""
    ok, score, right = [], [], []
    for r in data:
        samples = [s for s in r.responses.get(model, ()) if s.quality is not None]
        if len(samples) < 3:
            ok.append(False), score.append(0.0), right.append(0.0)
            continue
        keys = [s.answer if s.answer is not None else f"\0{i}" for i, s in enumerate(samples)]
        top, count = Counter(keys).most_common(1)[0]
        first = next(s for s, k in zip(samples, keys, strict=True) if k == top)
        ok.append(True), score.append(count / len(samples)), right.append(float(first.quality >= 0.5))
    return np.array(ok), np.array(score), np.array(right)


def first_quality(data: Any, model: str) -> np.ndarray:
    return np.array(
        [float(r.responses[model][0].quality or 0.0) if r.responses.get(model) else np.nan for r in data]
    )


def abstain_row(
    name: str, data: Any, splits: int = 50, target: float = 0.02, risk: float = 0.05
) -> dict[str, Any]:
    """The set's abstention figures over ``splits`` seeded halves (see the module)."""
    from cascade.evaluate.abstain import selective, tune_abstain

    per = {m: agreement(data, m) for m in data.models}
    multi = [m for m, (ok, _, _) in per.items() if ok.mean() >= 0.9]
    if not multi:
        return {"set": name, "error": "one sample per model: the recording holds no last-tier score"}
    firsts = {m: first_quality(data, m) for m in multi}
    n = len(data)
    rows = []
    for seed in range(splits):
        perm = np.random.default_rng(seed).permutation(n)
        train, test = perm[: n // 2], perm[n // 2 :]
        model = max(multi, key=lambda m: (float(np.nanmean(firsts[m][train])), m))  # chosen on train
        ok, s, c = per[model]
        tr, te = train[ok[train]], test[ok[test]]
        t = tune_abstain(s[tr], c[tr], target, risk, seed=seed)
        full = selective(s[te], c[te], 0.0)
        strictest = selective(s[tr], c[tr], 1.0).risk  # the lowest error any threshold gets (training half)
        if t.threshold is None:
            rows.append((model, np.nan, 0.0, np.nan, full.risk, strictest))
            continue
        h = selective(s[te], c[te], t.threshold)
        rows.append((model, t.threshold, h.coverage, h.risk, full.risk, strictest))
    proven = [r for r in rows if not np.isnan(r[1])]
    held = np.array([r[3] for r in proven]) if proven else np.array([np.nan])
    return {
        "set": name,
        "target": target,
        "risk": risk,
        "splits": splits,
        "models": dict(Counter(r[0] for r in rows)),
        "proven": len(proven),
        "threshold_mean": float(np.mean([r[1] for r in proven])) if proven else None,
        "coverage_mean": float(np.mean([r[2] for r in rows])),  # unproven splits abstain on all: 0
        "coverage_mean_proven": float(np.mean([r[2] for r in proven])) if proven else None,
        "error_mean": float(np.nanmean(held)) if proven else None,
        "error_p90": float(np.nanquantile(held, 0.9)) if proven else None,
        "within_target": float(np.mean(held[~np.isnan(held)] <= target)) if proven else None,
        "error_without_abstaining": float(np.mean([r[4] for r in rows])),
        "train_error_unanimous": float(np.mean([r[5] for r in rows])),  # all samples agree: the floor
    }


def line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['set']} | {r['error']} | | | | | |"
    model = ", ".join(f"{m} ({k})" for m, k in r["models"].items())
    if not r["proven"]:
        floor = f"0 (training error when all samples agree: {r['train_error_unanimous']:.3f})"
        rest = f"{floor} | - | - | {r['error_without_abstaining']:.3f} |"
        return f"| {r['set']} | {model} | 0/{r['splits']} | {rest}"
    return (
        f"| {r['set']} | {model} | {r['proven']}/{r['splits']} | {r['coverage_mean']:.3f}"
        f" ({r['coverage_mean_proven']:.3f} where proven) | {r['error_mean']:.4f} (p90 {r['error_p90']:.4f})"
        f" | {r['within_target']:.0%} | {r['error_without_abstaining']:.3f} |"
    )


HEADER = (
    "| set | last tier (splits) | threshold proven | held-out coverage | held-out error among answered"
    " | splits within target | error answering all |\n|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    from cascade import outcomes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--only", nargs="*", help="set names (default: every recorded set in --data)")
    p.add_argument("--splits", type=int, default=50)
    p.add_argument("--target", type=float, default=0.02)
    p.add_argument("--risk", type=float, default=0.05)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"no recorded data at {args.data}: nothing to measure", file=sys.stderr)
        return 0
    rows = []
    names = args.only or sorted(f.name.removesuffix(".jsonl.gz") for f in args.data.glob("*.jsonl.gz"))
    for name in names:
        path = args.data / f"{name}.jsonl.gz"
        if path.exists():
            rows.append(abstain_row(name, outcomes.load(path), args.splits, args.target, args.risk))
    print(f"target: error among answered <= {args.target:.0%} at risk {args.risk}, {args.splits} splits")
    print(HEADER)
    for r in rows:
        print(line(r))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
