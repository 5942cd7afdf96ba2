"""How often the ``--max-drop`` guarantee holds on held-out data, against the 1-SE tuner.

    .venv/bin/python benchmarks/risk_splits.py SKELETON.yaml [--splits 50] [--max-drop 0.01] [--risk 0.05]

For each of ``--splits`` seeded train/test splits of the skeleton's recorded outcomes, the tuner runs
twice (``--max-drop EPS --risk DELTA`` and ``--target-quality best`` with the 1-SE margin); the
held-out drop of each chosen policy against the reference model (best on the training part) and its
held-out cost are recorded. Prints the share of splits where the risk-controlled drop is <= EPS and
the mean cost of both, and how often the risk-controlled policy costs no more than the 1-SE one.
Example: ``benchmarks/risk_splits.py cascade/demo/demo.yaml``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from cascade import outcomes
    from cascade.cli.eval import data_path
    from cascade.evaluate.simulate import run
    from cascade.evaluate.tune import Objective, tune

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("skeleton")
    p.add_argument("--splits", type=int, default=50)
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--risk", type=float, default=0.05)
    p.add_argument("--models", default=None, help="all or M1,M2 (as cascade tune)")
    p.add_argument("--depth", type=int, default=2)
    args = p.parse_args(argv)
    data = outcomes.load(data_path(args.skeleton, None))
    models = None if not args.models else ("all" if args.models == "all" else args.models.split(","))
    rows = []
    started = time.perf_counter()
    for seed in range(args.splits):
        out = []
        for obj in (Objective(max_drop=args.max_drop, risk=args.risk), Objective(target="best")):
            t = tune(args.skeleton, data, obj, split="seed", seed=seed, models=models, depth=args.depth)
            if t.choice is None:
                out.append((np.nan, np.nan))
                continue
            r = run(t.arrays(t.choice, t.test), t.thresholds(t.choice))
            j = t.evalset.column(t.reference)
            out.append((float(t.evalset.quality[t.test, j].mean() - r.quality.mean()), float(r.cost.mean())))
        rows.append([*out[0], *out[1]])
        print(
            f"split {seed}: risk drop {out[0][0]:+.4f} cost {out[0][1]:.6f}; 1-SE drop {out[1][0]:+.4f} cost"
            f" {out[1][1]:.6f}",
            file=sys.stderr,
            flush=True,
        )
    a = np.array(rows)
    ok = float(np.mean(a[:, 0] <= args.max_drop + 1e-12))
    cheaper = float(np.mean(a[:, 1] <= a[:, 3] + 1e-12))
    print(f"{args.skeleton}: {args.splits} seeded splits, --max-drop {args.max_drop} --risk {args.risk}")
    print(f"  held-out drop <= {args.max_drop}: {ok:.0%} of splits (target >= {1 - args.risk:.0%})")
    print(
        f"  mean held-out drop: risk-controlled {np.nanmean(a[:, 0]):+.4f}, 1-SE {np.nanmean(a[:, 2]):+.4f}"
    )
    print(
        f"  mean held-out cost/query: risk-controlled ${np.nanmean(a[:, 1]):.6f},"
        f" 1-SE ${np.nanmean(a[:, 3]):.6f}"
    )
    print(f"  risk-controlled costs no more than 1-SE on {cheaper:.0%} of splits")
    print(f"  ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
