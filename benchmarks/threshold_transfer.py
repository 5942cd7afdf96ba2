"""Do thresholds chosen on out-of-fold scores transfer to the deployed learned scorers? (issue 20 §2)

    .venv/bin/python benchmarks/threshold_transfer.py [--only NAME ...] [--seeds 0 1 2 3 4]

For every set of ``benchmarks/run_all.py``, the tuner runs with its options and at least one trained
classifier (``--classifiers 1``; skip rules left out: they are another scorer). For each learned
candidate (classifier ``-clf``, verifier ``-ver``): the thresholds that accept 50%, 70% and 80% of
the training half by its out-of-fold scores, and the share the written artifact (scored through the
real scorer) accepts on the held-out half at those thresholds. Then the tuned policy: its predicted
cost and quality (the training half, out-of-fold scores: what the search saw) against the held-out
half; "inside" is |held-out - predicted| <= 1.96 * sqrt(se_train^2 + se_held^2) of the quality.
Figures are means over the ``--seeds`` random halves (one half's sampling noise is a few points of
accept share). Fits and choices use the training half only; the held-out half only measures.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one_set(name: str, data_dir: Path, seed: int, folder: Path) -> dict[str, Any]:
    import run_all

    from cascade import outcomes
    from cascade.evaluate.simulate import run
    from cascade.evaluate.tune import Objective, Setting, tune

    spec = run_all.SETS[name]
    folder.mkdir(parents=True, exist_ok=True)
    sk = run_all.skeleton(name, data_dir, spec, folder, seed)
    kw = {k: v for k, v in spec["tune"].items() if k not in ("target", "skip")}
    kw["classifiers"] = max(1, int(kw.get("classifiers", 0)))
    target = spec["tune"].get("target", "best")
    data = outcomes.load(data_dir / f"{name}.jsonl.gz")
    t = tune(sk, data, Objective(target=target), seed=seed, artifacts=folder / f"{name}-art", **kw)
    out: dict[str, Any] = {"set": name, "learned": []}
    for idx, c in enumerate(t.candidates):
        if not (c.name.endswith("-clf") or c.name.endswith("-ver")) or c.scored is None:
            continue
        last = next(i for i, k in enumerate(t.candidates) if k.bare is not None and not k.partners)
        t.ensure(Setting((idx, last), (0.5,), 0.0, 0.0))
        oof = c.scored.score[t.train]
        held = c.scored.score[t.test]
        ok_o, ok_h = np.isfinite(oof), np.isfinite(held)
        row = {"candidate": c.name, "shares": []}
        for share in (0.5, 0.7, 0.8):
            th = float(np.quantile(oof[ok_o], 1 - share))
            row["shares"].append(
                (
                    share,
                    float(np.mean(oof[ok_o] >= th)),
                    float(np.mean(held[ok_h] >= th)) if ok_h.any() else math.nan,
                )
            )
        out["learned"].append(row)
    s = t.choice
    if s is not None:
        tr = run(t.arrays(s, t.train), t.thresholds(s))
        te = run(t.arrays(s, t.test), t.thresholds(s))
        se = math.sqrt(tr.quality.var(ddof=1) / len(tr.quality) + te.quality.var(ddof=1) / len(te.quality))
        out["policy"] = " -> ".join(t.candidates[i].name for i in s.tiers)
        out["cost_pred"], out["cost_held"] = float(tr.cost.mean()), float(te.cost.mean())
        out["q_pred"], out["q_held"] = float(tr.quality.mean()), float(te.quality.mean())
        out["inside"] = abs(out["q_held"] - out["q_pred"]) <= 1.96 * se
        out["learned_in_policy"] = any(t.candidates[i].name.endswith(("-clf", "-ver")) for i in s.tiers)
    return out


def main(argv: list[str] | None = None) -> int:
    import run_all

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=run_all.DEFAULT_DATA)
    p.add_argument("--only", nargs="*", choices=sorted(run_all.SETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    if not (args.data / "README.md").exists():
        print(f"benchmarks: recorded outcomes not found at {args.data} (set CASCADE_DATA); nothing to do")
        return 0
    rows: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(run_all.SETS):
            if (args.data / f"{name}.jsonl.gz").exists():
                print(f"{name} ...", file=sys.stderr, flush=True)
                rows.append([one_set(name, args.data, seed, Path(tmp) / str(seed)) for seed in args.seeds])
    print(f"seeds {args.seeds}; held-out accept share at the thresholds accepting 50/70/80% out of fold\n")
    print("| set | learned candidate | out of fold 50% / 70% / 80% -> held-out (mean) |")
    print("|---|---|---|")
    for runs in rows:
        for k, c in enumerate(runs[0]["learned"]):
            got = [[r["learned"][k]["shares"][i][2] for r in runs if len(r["learned"]) > k] for i in range(3)]
            shares = " / ".join(f"{np.nanmean(g):.1%}" for g in got)
            print(f"| {runs[0]['set']} | {c['candidate']} | {shares} |")
    print(
        "\n| set | tuned policies (learned tier in) | held-out cost vs predicted (mean, range) |"
        " held-out quality inside its interval |"
    )
    print("|---|---|---|---|")
    for runs in rows:
        got = [r for r in runs if "policy" in r and r["cost_pred"] > 0]
        if not got:
            print(f"| {runs[0]['set']} | none | | |")
            continue
        ratio = np.array([r["cost_held"] / r["cost_pred"] - 1 for r in got])
        print(
            f"| {runs[0]['set']} | {len(got)} ({sum(r['learned_in_policy'] for r in got)}) |"
            f" {ratio.mean():+.1%} ({ratio.min():+.1%} .. {ratio.max():+.1%}) |"
            f" {sum(r['inside'] for r in got)} of {len(got)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
