"""The two baselines every report shows beside a policy or a family (issue 20, item 4).

* the best **two-model cascade**: a scored first tier, then a second model that answers whatever
  reaches it, over every threshold of the first (chosen by AIQ on the choosing part);
* a **prompt-only router**: one model per prompt from prompt features and no escalation. A
  prompt-only estimator of "the weak model is as good as the strong one" (trained on the choosing
  part, out-of-fold where that part is the one measured) sends each prompt to the weak model when
  its estimate reaches a threshold, else to the strong one; every threshold is a point.

Each baseline gives its AIQ (over the single models' cost range) and the cost share of its
cheapest point that reaches the best single model's quality. :func:`verdict` says whether the
policy (or family) beats both, or which one wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.metrics import aiq, cost_at_quality
from cascade.evaluate.simulate import TierArrays, sweep
from cascade.logging import get_logger


@dataclass(frozen=True)
class Baseline:
    """One baseline curve measured on the reported records."""

    kind: str  # "two_model_cascade" | "prompt_router"
    models: tuple[str, str]
    aiq: float
    matched_cost_share: float | None  # cost of its cheapest point at the best single's quality, as a share
    points: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "aiq": self.aiq,
            "matched_cost_share": self.matched_cost_share,
            "points": self.points,
        }


@dataclass(frozen=True)
class Frame:
    """What every curve is measured against: the single models' cost range and the best single."""

    lo: float
    hi: float
    best_quality: float
    best_cost: float

    def figures(self, cost: FloatArray, quality: FloatArray) -> tuple[float, float | None]:
        found = cost_at_quality(cost, quality, self.best_quality)
        share = None if found is None or self.best_cost <= 0 else found / self.best_cost
        return aiq(cost, quality, self.lo, self.hi), share


def frame(es: EvalSet, rows: BoolArray) -> Frame:
    sq, sc = es.quality[rows].mean(axis=0), es.cost[rows].mean(axis=0)
    best = int(np.lexsort((sc, -sq))[0])
    return Frame(float(sc.min()), float(sc.max()), float(sq[best]), float(sc[best]))


def cascade_curve(first: TierArrays, last: TierArrays, levels: int = 48) -> tuple[FloatArray, FloatArray]:
    """Mean cost and quality of ``first -> last`` at every threshold of ``first`` (quantiles of
    its scores, plus "never accept")."""
    s = first.score[np.isfinite(first.score)]
    ths = np.unique(np.quantile(s, np.linspace(0, 1, levels))) if len(s) else np.array([])
    grid = np.column_stack([np.r_[ths, np.inf], np.full(len(ths) + 1, np.nan)])
    q, c, _ = sweep([first, last], grid)
    return c.mean(axis=1), q.mean(axis=1)


Pair = Callable[[int, int], tuple[TierArrays, TierArrays]]


def best_cascade(
    firsts: Sequence[TierArrays],
    lasts: Sequence[TierArrays],
    es: EvalSet,
    rows: BoolArray,
    choose: BoolArray,
    full: Pair | None = None,
) -> Baseline | None:
    """The two-model cascade ``firsts[i] -> lasts[j]`` (scored on ``choose``) with the best AIQ on
    ``choose``, measured on ``rows`` (``full(i, j)``: the pair scored on ``rows`` too; default: as
    given). A first tier needs a scorer and no skip rule; the two models differ."""
    on_choose = frame(es, choose)
    best: tuple[float, int, int] | None = None
    for i, a in enumerate(firsts):
        if not a.has_scorer or a.skipped is not None:
            continue
        ta = a.take(choose)
        for j, b in enumerate(lasts):
            if b.model == a.model or b.skipped is not None:
                continue
            value, _ = on_choose.figures(*cascade_curve(ta, b.take(choose)))
            if best is None or value > best[0]:
                best = (value, i, j)
    if best is None:
        return None
    _, i, j = best
    a, b = full(i, j) if full is not None else (firsts[i], lasts[j])
    c, q = cascade_curve(a.take(rows), b.take(rows))
    value, share = frame(es, rows).figures(c, q)
    return Baseline("two_model_cascade", (a.model, b.model), value, share, len(c))


def router_curve(
    estimate: FloatArray,
    weak: tuple[FloatArray, FloatArray],
    strong: tuple[FloatArray, FloatArray],
    levels: int = 41,
) -> tuple[FloatArray, FloatArray]:
    """Mean cost and quality when prompts with ``estimate >= threshold`` go to the weak model and
    the others to the strong one (``weak``/``strong``: per-record quality and cost), at every
    threshold (quantiles of the estimate, plus all-weak and all-strong)."""
    e = np.where(np.isfinite(estimate), estimate, -np.inf)
    ths = np.r_[
        -np.inf, np.unique(np.quantile(estimate[np.isfinite(estimate)], np.linspace(0, 1, levels))), np.inf
    ]
    to_weak = e[None, :] >= ths[:, None]
    q = np.where(to_weak, weak[0][None, :], strong[0][None, :]).mean(axis=1)
    c = np.where(to_weak, weak[1][None, :], strong[1][None, :]).mean(axis=1)
    return c, q


def prompt_router(
    es: EvalSet, rows: BoolArray, choose: BoolArray, weak: str, seed: int = 0
) -> Baseline | None:
    """``weak`` against the best single model of ``choose``, routed by a prompt-only estimator
    trained on ``choose`` (out-of-fold on its own rows), measured on ``rows``."""
    from cascade.evaluate.routing import oof_estimates

    sq, sc = es.quality[choose].mean(axis=0), es.cost[choose].mean(axis=0)
    strong = es.models[int(np.lexsort((sc, -sq))[0])]
    if weak == strong or weak not in es.models:
        return None
    got = oof_estimates(es.data, es, choose, weak, versus=strong, seed=seed)
    if got is None:
        return None
    jw, js = es.models.index(weak), es.models.index(strong)
    qm, cm = es.quality[rows], es.cost[rows]
    c, q = router_curve(got[0][rows], (qm[:, jw], cm[:, jw]), (qm[:, js], cm[:, js]))
    value, share = frame(es, rows).figures(c, q)
    return Baseline("prompt_router", (weak, strong), value, share, len(c))


def verdict(aiq_value: float, baselines: dict[str, dict[str, Any] | None], what: str = "the policy") -> str:
    """One sentence: ``what`` (its AIQ) beats both baselines (``to_dict`` figures), or which wins."""
    names = {"two_model_cascade": "the best two-model cascade", "prompt_router": "the prompt-only router"}
    shown = {k: float(b["aiq"]) for k, b in baselines.items() if k in names and b is not None}
    if math.isnan(aiq_value):
        return f"{what} has no AIQ to compare"
    if not shown:
        return "no baseline could be measured"
    beaten = {k: v for k, v in shown.items() if v >= aiq_value}
    if not beaten:
        return f"{what} beats " + " and ".join(names[k] for k in shown) + " on AIQ"
    top = max(beaten, key=lambda k: beaten[k])
    return f"{names[top]} wins: AIQ {beaten[top]:.4f} against {aiq_value:.4f} for {what}"


def baseline_lines(f: dict[str, Any]) -> list[str]:
    """The report's lines for :func:`baseline_figures`' output."""

    def share(x: float | None) -> str:
        return "not reached" if x is None else f"{x * 100:.1f}% of its cost"

    out = []
    for key, label in (("two_model_cascade", "2-model cascade"), ("prompt_router", "prompt router")):
        b = f.get(key)
        if b is None:
            out.append(f"  {label:<19} n/a (no scored first tier, or too few labels to train on)")
            continue
        sep = " -> " if key == "two_model_cascade" else " | "
        out.append(
            f"  {label:<19} {sep.join(b['models'])}: AIQ {b['aiq']:.4f};"
            f" at the best single model's quality: {share(b['matched_cost_share'])}"
        )
    out.append(f"  baselines           {f['verdict']} (chosen on {f['chosen_on']})")
    return out


def baseline_figures(
    es: EvalSet,
    rows: BoolArray,
    firsts: Sequence[TierArrays],
    lasts: Sequence[TierArrays],
    weak: Sequence[str],
    policy_aiq: float,
    *,
    choose: BoolArray | None = None,
    full: Pair | None = None,
    seed: int = 0,
    what: str = "the policy",
) -> dict[str, Any]:
    """Both baselines on ``rows`` and the verdict against ``policy_aiq``. ``choose`` (default:
    the other records when there are at least 40 of them, else ``rows`` themselves) picks the
    cascade's pair (:func:`best_cascade`), the router's weak model when there is no such cascade
    (the cheapest of ``weak`` on ``choose``), and trains the router."""
    if choose is None:
        other = ~rows
        choose = other if int(other.sum()) >= 40 else rows
    cost = es.cost[choose].mean(axis=0)
    fallback = min(weak, key=lambda m: float(cost[es.models.index(m)]))
    found = {
        "two_model_cascade": best_cascade(firsts, lasts, es, rows, choose, full),
    }
    cas = found["two_model_cascade"]
    found["prompt_router"] = prompt_router(es, rows, choose, cas.models[0] if cas else fallback, seed=seed)
    get_logger().info(
        "eval_baselines",
        cascade=None if cas is None else list(cas.models),
        cascade_aiq=None if cas is None else round(cas.aiq, 6),
        router_aiq=None if found["prompt_router"] is None else round(found["prompt_router"].aiq, 6),
    )
    out: dict[str, Any] = {k: None if b is None else b.to_dict() for k, b in found.items()}
    out["chosen_on"] = "the measured records" if choose is rows else "the other records"
    out["verdict"] = verdict(policy_aiq, out, what)
    return out


__all__ = [
    "Baseline",
    "Frame",
    "Pair",
    "baseline_figures",
    "baseline_lines",
    "best_cascade",
    "cascade_curve",
    "frame",
    "prompt_router",
    "router_curve",
    "verdict",
]
