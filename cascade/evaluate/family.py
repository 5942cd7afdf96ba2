"""A family of tuned policies along the cost/quality frontier (``cascade tune --frontier N``).

The members are the training part's frontier settings at N cost budgets, log-spaced from the
cheapest frontier setting to the reference model's cost; each is written as its own policy. The
family's figures are measured on the held-out part: each member's quality and cost, the family's
AIQ (RouterBench: area under the hull of its points over the single models' cost range), every
single model's and the best random two-model mix's AIQ for comparison.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cascade.errors import ConfigurationError
from cascade.evaluate.baselines import baseline_lines, verdict
from cascade.evaluate.evaluate import Evaluation
from cascade.evaluate.metrics import aiq, signless, upper_hull
from cascade.evaluate.tune import Setting, Tuning
from cascade.files import replacing, write_text


def members(tuning: Tuning, n: int) -> list[Setting]:
    """Up to ``n`` frontier settings at log-spaced budgets up to the reference model's cost."""
    if n < 1:
        raise ConfigurationError(f"the frontier needs at least one member (got {n})")
    es = tuning.evalset
    j = es.column(tuning.reference)
    ref_cost = float(es.cost[tuning.train, j].mean())
    front = sorted((s for s in tuning.frontier if s.cost <= ref_cost * (1 + 1e-9)), key=lambda s: s.cost)
    if not front:
        return []
    lo = max(front[0].cost, 1e-12)
    budgets = np.geomspace(lo, max(ref_cost, lo), n) if n > 1 else np.array([ref_cost])
    out: list[Setting] = []
    for b in budgets:
        under = [s for s in front if s.cost <= b * (1 + 1e-9)]
        if not under:
            continue
        best = max(under, key=lambda s: (round(s.quality, 12), -s.cost))
        if best not in out:
            out.append(best)
    return out


def is_family(path: str | Path) -> bool:
    """Whether ``path`` is a family file (a ``family:`` list of policy files) rather than a policy."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "family" in data and "tiers" not in data


def read_family(path: str | Path) -> list[Path]:
    """The member policy files of a family file (relative to it)."""
    p = Path(path)
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    files = data.get("family") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ConfigurationError(f"{p}: `family:` must be a non-empty list of policy files")
    out = [q if (q := Path(f).expanduser()).is_absolute() else p.resolve().parent / q for f in files]
    for q in out:
        if not q.exists():
            raise ConfigurationError(f"{p}: member {q} does not exist")
    return out


def write_family(path: str | Path, files: Sequence[str | Path], figures: dict[str, Any]) -> None:
    folder = Path(path).resolve().parent
    names = []
    for f in files:
        q = Path(f).resolve()
        try:
            names.append(str(q.relative_to(folder)))
        except ValueError:
            names.append(str(q))
    lines = ["# A family of tuned policies from `cascade tune --frontier`; `cascade eval` accepts it."]
    for m in figures["members"]:
        lines.append(
            f"# {m['policy']}: held-out quality {m['quality']:.4f}, cost/query ${m['cost_per_query_usd']:.7f}"
        )
    lines.append(f"# family AIQ {figures['aiq']['family']:.4f} (held-out)")
    body = yaml.safe_dump({"family": names}, sort_keys=False)
    write_text(path, "\n".join(lines) + "\n" + body)


def frontier_aiq(tuning: Tuning, lo: float, hi: float, max_points: int = 40) -> float:
    """AIQ on the held-out part of the settings on the training frontier (at most ``max_points``
    of them, evenly spread by cost)."""
    from cascade.evaluate.simulate import run

    front = sorted(tuning.frontier, key=lambda s: s.cost)
    if len(front) > max_points:
        idx = np.unique(np.linspace(0, len(front) - 1, max_points).round().astype(int))
        front = [front[i] for i in idx]
    qs, cs = [], []
    for s in front:
        r = run(tuning.arrays(s, tuning.test), tuning.thresholds(s))
        qs.append(float(r.quality.mean()))
        cs.append(float(r.cost.mean()))
    return aiq(np.array(cs), np.array(qs), lo, hi)


def family_figures(evals: Sequence[tuple[str, Evaluation]]) -> dict[str, Any]:
    """The family's figures from its members' evaluations (on the same records)."""
    first = evals[0][1]
    es, rows = first.evalset, first.rows
    sq, sc = es.quality[rows].mean(axis=0), es.cost[rows].mean(axis=0)
    # the single models' and the best mix's AIQ on these records: the evaluation has them
    base = first.figures["aiq"]
    lo, hi = base["cost_range_usd"]
    mq = np.array([float(ev.run.quality.mean()) for _, ev in evals])
    mc = np.array([float(ev.run.cost.mean()) for _, ev in evals])
    out: dict[str, Any] = {
        "file": first.figures["file"],
        "records": int(rows.sum()),
        "part": first.figures.get("part"),
        "members": [
            {"policy": name, "quality": float(q), "cost_per_query_usd": float(c)}
            for (name, _), q, c in zip(evals, mq, mc, strict=True)
        ],
        "single_models": first.figures["single_models"],
        "aiq": {
            "family": aiq(mc, mq, lo, hi),
            "best_single": base["best_single"],
            "best_random_mix": base["best_random_mix"],
            "all_single_models": aiq(sc, sq, lo, hi),
            "cost_range_usd": [lo, hi],
        },
    }
    base_fig = next((ev.figures["baselines"] for _, ev in evals if "baselines" in ev.figures), None)
    if base_fig is not None:  # the family, not its first member, against the baselines
        out["baselines"] = {**base_fig, "verdict": verdict(out["aiq"]["family"], base_fig, "the family")}
    return out


def table(f: dict[str, Any]) -> str:
    from cascade.evaluate.report import usd

    out = [f"family of {len(f['members'])} policies on {f['file']}: {f['records']} records"]
    if f.get("part"):
        out.append(f"  measured on {f['part']}")
    w = max(6, *(len(m["policy"]) for m in f["members"]))
    out.append(f"  {'member':<{w}} {'quality':>8} {'cost/query':>11}")
    for m in f["members"]:
        out.append(f"  {m['policy']:<{w}} {m['quality']:>8.4f} {usd(m['cost_per_query_usd']):>11}")
    a = f["aiq"]
    out.append(
        f"  AIQ  family {signless(a['family'], '.4f')}; best single {a['best_single']['value']:.4f}"
        f" ({a['best_single']['model']}); best random mix {a['best_random_mix']['value']:.4f}"
        f" ({' + '.join(a['best_random_mix']['models'])}); hull of all single models"
        f" {a['all_single_models']:.4f}"
    )
    if f.get("baselines"):
        out.extend(baseline_lines(f["baselines"]))
    return "\n".join(out)


def plot(f: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """The family against every single model and the best random two-model mix (log cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    mx = np.array([m["cost_per_query_usd"] for m in f["members"]])
    my = np.array([m["quality"] for m in f["members"]])
    hx, hy = upper_hull(mx, my)
    # between members, a seeded mix of the two neighbours: a straight line in linear cost
    t = np.linspace(0.0, 1.0, 30)
    cx = np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(hx)]) if len(hx) > 1 else hx
    cy = np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(hy)]) if len(hy) > 1 else hy
    ax.plot(cx, cy, color="#08519c", lw=2, zorder=3, label=f"tuned family (AIQ {f['aiq']['family']:.4f})")
    ax.scatter(mx, my, color="#08519c", s=40, zorder=4)
    singles = f["single_models"]
    sx = np.array([s["cost_per_query_usd"] for s in singles])
    sy = np.array([s["quality"] for s in singles])
    best = f["aiq"]["best_single"]
    ax.scatter(sx, sy, color="#636363", s=22, zorder=2, label=f"single models (best AIQ {best['value']:.4f})")
    for s in singles:
        ax.annotate(s["model"], (s["cost_per_query_usd"], s["quality"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points", color="#404040")  # fmt: skip
    mix = f["aiq"]["best_random_mix"]
    pts = [s for s in singles if s["model"] in mix["models"]]
    if len(pts) == 2:
        ax.plot(
            pts[0]["cost_per_query_usd"] + t * (pts[1]["cost_per_query_usd"] - pts[0]["cost_per_query_usd"]),
            pts[0]["quality"] + t * (pts[1]["quality"] - pts[0]["quality"]),
            ls=":",
            color="#756bb1",
            label=f"best random mix of two models (AIQ {mix['value']:.4f})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("cost per query (USD, log scale)")
    ax.set_ylabel("quality (mean label)")
    lo = float(min(np.min(sy), np.min(my)))
    ax.set_ylim(max(0.0, lo - 0.03), min(1.0, float(max(np.max(sy), np.max(my))) + 0.02))
    ax.set_title(title or f"tuned family on {f['file']} ({f['records']} held-out records)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    with replacing(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return out


__all__ = [
    "family_figures",
    "frontier_aiq",
    "is_family",
    "members",
    "plot",
    "read_family",
    "table",
    "write_family",
]
