"""How often the ``--max-drop`` guarantee holds on held-out data, against the 1-SE tuner.

    .venv/bin/python benchmarks/risk_splits.py [--only NAME ...] [--splits 50] [--max-drop 0.01] [--risk 0.05]
    .venv/bin/python benchmarks/risk_splits.py --skeleton cascade/demo/demo.yaml

For every set of ``benchmarks/run_all.py`` (its skeleton and tuner options; or one ``--skeleton``),
and each of ``--splits`` seeded random train/test halves, the tuner runs twice: ``--max-drop EPS
--risk DELTA``, and ``--target-quality best`` with the 1-SE margin. For each chosen policy it records
the held-out drop against the reference model and the held-out cost per query. Prints, per set, the
share of splits where the risk-controlled drop is <= EPS (the guarantee is on the expected drop; the
held-out half adds its own sampling noise), the mean drop and cost of both, and the share of splits
where the risk-controlled policy costs no more than the 1-SE one; also its held-out cost as a share
of the reference's, and the splits where the risk target is infeasible (too few calibration
records: no policy; the drop share is over the splits with one). ``--risk-only`` skips the 1-SE
tuner. Candidates are scored once per set (every record) and reused across splits, so only the
search and the tests run per split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def splits_of(sk: Path, data: Any, kw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from cascade.evaluate.simulate import run
    from cascade.evaluate.tune import Objective, tune

    cache: dict[str, Any] = {}
    rows = []
    objectives = [Objective(max_drop=args.max_drop, risk=args.risk)]
    if not args.risk_only:
        objectives.append(Objective(target="best"))
    infeasible = 0
    for seed in range(args.splits):
        out = []
        ref_cost = np.nan
        for obj in objectives:
            t = tune(sk, data, obj, split="seed", seed=seed, cache=cache, **kw)
            j = t.evalset.column(t.reference)
            if obj.max_drop is not None:
                ref_cost = float(t.evalset.cost[t.test, j].mean())
                infeasible += bool(getattr(t.guarantee, "infeasible", False))
            if t.choice is None:
                out.append((np.nan, np.nan))
                continue
            r = run(t.arrays(t.choice, t.test), t.thresholds(t.choice))
            out.append((float(t.evalset.quality[t.test, j].mean() - r.quality.mean()), float(r.cost.mean())))
        if len(out) == 1:
            out.append((np.nan, np.nan))
        rows.append([*out[0], *out[1], ref_cost])
        print(
            f"  split {seed}: risk drop {out[0][0]:+.4f} cost {out[0][1]:.6f} ({out[0][1] / ref_cost:.1%} of"
            f" the reference); 1-SE drop {out[1][0]:+.4f} cost {out[1][1]:.6f}",
            file=sys.stderr,
            flush=True,
        )
    a = np.array(rows)
    answered = ~np.isnan(a[:, 0])
    return {
        "splits": args.splits,
        "infeasible": infeasible,
        "answered": int(answered.sum()),
        # among the splits with a policy (an infeasible split deploys nothing)
        "within": float(np.mean(a[answered, 0] <= args.max_drop + 1e-12)) if answered.any() else np.nan,
        "cost_share": float(np.nanmean(a[:, 1]) / np.nanmean(a[:, 4])) if answered.any() else np.nan,
        "risk_drop": float(np.nanmean(a[:, 0])),
        "se_drop": float(np.nanmean(a[:, 2])),
        "se_within": float(np.mean(a[:, 2] <= args.max_drop + 1e-12)),
        "risk_cost": float(np.nanmean(a[:, 1])),
        "se_cost": float(np.nanmean(a[:, 3])),
        "no_costlier": float(np.mean(a[:, 1] <= a[:, 3] * (1 + 1e-9))),
    }


def main(argv: list[str] | None = None) -> int:
    import run_all

    from cascade import outcomes
    from cascade.cli.eval import data_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skeleton", type=Path, help="one skeleton instead of the run_all.py sets")
    p.add_argument("--data", type=Path, default=run_all.DEFAULT_DATA)
    p.add_argument("--only", nargs="*", choices=sorted(run_all.SETS))
    p.add_argument("--splits", type=int, default=50)
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--risk", type=float, default=0.05)
    p.add_argument(
        "--no-classifiers",
        action="store_true",
        help="skip the sets' trained candidates: classifiers, skip rules (each split trains them again)",
    )
    p.add_argument(
        "--risk-only", action="store_true", help="run only the risk-controlled tuner (not the 1-SE one)"
    )
    args = p.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    if args.skeleton is not None:
        data = outcomes.load(data_path(str(args.skeleton), None))
        results[args.skeleton.name] = splits_of(args.skeleton, data, {"depth": 2}, args)
    else:
        if not (args.data / "README.md").exists():
            print(f"benchmarks: recorded outcomes not found at {args.data} (set CASCADE_DATA); nothing to do")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.only or list(run_all.SETS):
                if not (args.data / f"{name}.jsonl.gz").exists():
                    continue
                spec = run_all.SETS[name]
                print(f"{name} ...", file=sys.stderr, flush=True)
                sk = run_all.skeleton(name, args.data, spec, Path(tmp), 0)
                kw = {k: v for k, v in spec["tune"].items() if k != "target"}
                if args.no_classifiers:
                    kw.pop("classifiers", None)
                    kw.pop("skip", None)
                if kw.get("classifiers") or kw.get("skip"):
                    kw["artifacts"] = Path(tmp) / f"{name}-artifacts"
                t0 = time.perf_counter()
                results[name] = splits_of(sk, outcomes.load(args.data / f"{name}.jsonl.gz"), kw, args)
                results[name]["seconds"] = round(time.perf_counter() - t0)
                r = results[name]
                print(
                    f"  {name}: within {r['within']:.0%} (1-SE {r['se_within']:.0%}), cost"
                    f" {r['cost_share']:.1%} of the reference, risk"
                    f" {r['risk_cost']:.6f} vs 1-SE {r['se_cost']:.6f},"
                    f" no costlier on {r['no_costlier']:.0%}",
                    file=sys.stderr,
                    flush=True,
                )
    eps, delta = args.max_drop, args.risk
    print(f"--max-drop {eps} --risk {delta}, {args.splits} seeded random halves per set (held-out figures)\n")
    print(
        f"| set | infeasible splits | held-out drop <= {eps} (risk-controlled / 1-SE) | mean held-out drop"
        " (risk / 1-SE) | risk cost vs the reference | mean cost/query (risk / 1-SE) | risk costs no more"
        " than 1-SE |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['infeasible']} of {r['splits']} | **{r['within']:.0%}** / {r['se_within']:.0%}"
            f" | {r['risk_drop']:+.4f} / {r['se_drop']:+.4f} | **{r['cost_share']:.1%}**"
            f" | ${r['risk_cost']:.6f} / ${r['se_cost']:.6f} | {r['no_costlier']:.0%} of splits |"
        )
    met = sum(r["within"] >= 1 - delta for r in results.values())
    blocked = [name for name, r in results.items() if r["answered"] == 0]
    if blocked:
        print(f"\ninfeasible on every split (too few calibration records; no policy): {', '.join(blocked)}")
    saving = sum(r["cost_share"] <= 0.6 for r in results.values())
    print(f"\nrisk-controlled policy at most 60% of the reference's cost on {saving} of {len(results)} sets")
    cheap = sum(r["risk_cost"] <= r["se_cost"] * (1 + 1e-9) for r in results.values())
    print(
        f"\nguarantee rate >= {1 - delta:.0%} on {met} of {len(results)} sets; mean cost no higher than"
        f" the 1-SE tuner's on {cheap} of {len(results)} sets ({time.perf_counter() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
