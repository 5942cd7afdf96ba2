"""Reports of an evaluation: a terminal table, JSON, and a PNG of quality against cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cascade.evaluate.baselines import baseline_lines
from cascade.evaluate.evaluate import Evaluation, as_interval
from cascade.evaluate.metrics import upper_hull
from cascade.files import replacing
from cascade.money import usd_text as usd


def _pct(d: dict[str, Any]) -> str:
    return as_interval(d).fmt(".1f", 100, "%")


def table(ev: Evaluation, *, models: int = 40) -> str:
    """A plain-text report for the terminal."""
    f = ev.figures
    out: list[str] = []
    out.append(f"policy {f['policy']!r} on {f['file']}: {f['records']} records")
    if f["records_dropped"] or f["models_dropped"]:
        out.append(
            f"  ({f['records_dropped']} records without a label from every model left out"
            + (
                f"; models with too few labels left out: {', '.join(f['models_dropped'])}"
                if f["models_dropped"]
                else ""
            )
            + ")"
        )
    q, c = as_interval(f["quality"]), as_interval(f["cost_per_query_usd"])
    out.append(
        f"  quality {q.fmt('.4f')}   cost/query {usd(c.value)} [{usd(c.low)}, {usd(c.high)}]  (95% bootstrap)"
    )
    if f.get("part"):
        out.append(f"  measured on {f['part']}")
    out.append("")
    # full tier names: a name longer than the column gets its own line (names are never cut)
    wt = max([4, *(len(t["tier"]) for t in f["tiers"] if len(t["tier"]) <= 40)])
    wm = max([5, *(len(t["model"]) for t in f["tiers"] if len(t["model"]) <= 40)])
    out.append(
        f"  {'tier':<{wt}} {'model':<{wm}} {'thr':>6} {'reached':>8} {'accepted':>9}"
        f" {'acc.rate':>8} {'accuracy':>8}  escalated"
    )
    for t in f["tiers"]:
        thr = "-" if t["threshold"] is None else f"{t['threshold']:.3f}"
        rate = "-" if t["accept_rate"] is None else f"{t['accept_rate']:.1%}"
        acc = "-" if t["accuracy_accepted"] is None else f"{t['accuracy_accepted']:.4f}"
        esc = ", ".join(f"{k}: {v}" for k, v in t["escalated"].items()) or "-"
        name, model = t["tier"], t["model"]
        if len(name) > wt:
            out.append(f"  {name}")
            name = ""
        if len(model) > wm:
            out.append(f"  {'':<{wt}} {model}")
            model = ""
        out.append(
            f"  {name:<{wt}} {model:<{wm}} {thr:>6} {t['reached']:>8} {t['accepted']:>9}"
            f" {rate:>8} {acc:>8}  {esc}"
        )
    if "abstention" in f:
        ab = f["abstention"]
        out.append(
            f"  abstained on {ab['abstained']} records (on_unverified: abstain):"
            f" coverage {_pct(ab['coverage'])}, error among the {ab['answered']} answered"
            f" {_pct(ab['error_among_answered'])}, cost/query counts every abstention's spend"
        )
    elif f["exhausted"]:
        out.append(f"  no tier accepted {f['exhausted']} records (answered per on_exhausted)")
    out.append("")
    b = f["best_single"]
    out.append(
        f"  best single model   {b['model']}: quality {_q(b['quality'])},"
        f" cost/query {usd(b['cost_per_query_usd'])}"
    )
    vs = f["vs_best"]
    out.append(
        f"  policy vs best      quality {as_interval(vs['quality_delta']).fmt('+.4f')},"
        f" cost {_pct(vs['cost_share'])} of it"
    )
    if "vs_reference" in f:
        r = f["vs_reference"]
        out.append(
            f"  vs {r['model']} (best on the training part; here quality {r['quality']:.4f},"
            f" cost/query {usd(r['cost_per_query_usd'])}):"
            f" quality {as_interval(r['quality_delta']).fmt('+.4f')},"
            f" cost {_pct(r['cost_share'])} of it"
        )
    out.append(
        f"  cost at matched quality (best point of the threshold curve): {_pct(f['cost_at_matched_quality'])}"
    )
    o = f["oracle"]
    out.append(f"  oracle              quality {o['quality']:.4f}, cost/query {usd(o['cost_per_query_usd'])}")
    a = f["aiq"]
    curve = as_interval(a["policy_curve"]).fmt(".4f")
    if len(f["tiers"]) == 1:  # one point, read by the same rule as the single models (metrics.aiq)
        curve += " (one tier: a single point)"
    out.append(
        f"  AIQ                 policy curve {curve};"
        f" best single {a['best_single']['value']:.4f} ({a['best_single']['model']});"
        f" best random mix {a['best_random_mix']['value']:.4f} ({' + '.join(a['best_random_mix']['models'])})"
    )
    if f.get("baselines"):
        out.extend(baseline_lines(f["baselines"]))
    if "pair" in f:
        p = f["pair"]
        out.append(
            f"  cheapest/strongest  {p['weak']} -> {p['strong']}: APGR {as_interval(p['apgr']).fmt('.3f')},"
            f" CPT(50%) {_pct(p['cpt50'])}, CPT(80%) {_pct(p['cpt80'])};"
            f" the policy sends {p['policy_strong_share']:.1%} to the strong model"
        )
    elif f.get("pair_omitted"):
        out.append(f"  APGR/CPT            omitted: {f['pair_omitted']}")
    shown = f["single_models"][:models]
    if shown:
        wn = max(12, *(len(s["model"]) for s in shown))
        out.append("")
        out.append(f"  {'single model':<{wn}} {'quality':>8} {'cost/query':>11}")
        for s in shown:
            out.append(f"  {s['model']:<{wn}} {s['quality']:>8.4f} {usd(s['cost_per_query_usd']):>11}")
    return "\n".join(out)


def _q(d: dict[str, Any]) -> str:
    return as_interval(d).fmt(".4f")


def to_json(ev: Evaluation) -> str:
    return json.dumps(ev.to_dict(), indent=2)


def plot(ev: Evaluation, path: str | Path, *, title: str | None = None) -> Path:
    """Quality against cost per query (log scale): the policy's threshold curve (its frontier),
    the policy's own setting, every single model and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = ev.figures
    q, c, _ = ev.curve.means()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    ax.scatter(c, q, s=6, color="#9ecae1", label="policy, other thresholds", zorder=1)
    hx, hy = upper_hull(c, q)
    ax.plot(hx, hy, color="#08519c", lw=2, label="policy frontier (thresholds)", zorder=2)
    ax.scatter(
        [f["cost_per_query_usd"]["value"]],
        [f["quality"]["value"]],
        marker="*",
        s=260,
        color="#e6550d",
        edgecolor="black",
        zorder=5,
        label=f"policy {f['policy']} (as set)",
    )
    singles = f["single_models"]
    sx = np.array([s["cost_per_query_usd"] for s in singles])
    sy = np.array([s["quality"] for s in singles])
    ax.scatter(sx, sy, color="#636363", s=22, zorder=3, label="single models")
    for s in singles:
        ax.annotate(
            s["model"][:28],
            (s["cost_per_query_usd"], s["quality"]),
            fontsize=6,
            xytext=(3, 2),
            textcoords="offset points",
            color="#404040",
        )
    mix = f["aiq"]["best_random_mix"]["models"]
    pts = [s for s in singles if s["model"] in mix]
    if len(pts) == 2:
        ax.plot(
            [p["cost_per_query_usd"] for p in pts],
            [p["quality"] for p in pts],
            ls=":",
            color="#756bb1",
            label="best random mix of two models",
        )
    o = f["oracle"]
    ax.scatter(
        [o["cost_per_query_usd"]], [o["quality"]], marker="D", s=60, color="#31a354", zorder=4, label="oracle"
    )
    b = f["best_single"]
    ax.axhline(b["quality"]["value"], color="#bdbdbd", ls="--", lw=1, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("cost per query (USD, log scale)")
    ax.set_ylabel("quality (mean label)")
    lo = min(float(np.min(sy)), float(np.min(q)))
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(o["quality"], float(np.max(q))) + 0.03))
    ax.set_title(title or f"{f['policy']} on {f['file']} ({f['records']} records)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    with replacing(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return out


__all__ = ["plot", "table", "to_json", "usd"]
