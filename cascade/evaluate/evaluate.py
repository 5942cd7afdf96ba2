"""Evaluate a policy on a recorded-outcomes file: the policy, every single model, the oracle,
random two-model mixes, and the field's metrics with bootstrap 95% intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.errors import ConfigurationError
from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.metrics import (
    Interval,
    aiq,
    best_mix_aiq,
    bootstrap,
    bootstrap_weights,
    cost_at_quality,
    gap_metrics,
    interval,
    oracle,
    wmean,
)
from cascade.evaluate.simulate import (
    OUTCOME_NAMES,
    Billing,
    ReplayContext,
    Run,
    TierArrays,
    run,
    score_tier,
    sweep,
    threshold_grid,
)
from cascade.outcomes import Outcomes
from cascade.policy.schema import Policy


def grid_levels(k: int) -> int:
    """Threshold candidates per scored tier so a sweep stays near a few thousand settings."""
    return {1: 1, 2: 48, 3: 16, 4: 8}.get(k, 5)


@dataclass
class Curve:
    """Mean quality, cost and strong-call share of the policy at each threshold setting."""

    grid: np.ndarray
    quality: FloatArray  # (G, n) per record
    cost: FloatArray
    strong: FloatArray

    def means(self, w: FloatArray | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
        return wmean(self.quality, w), wmean(self.cost, w), wmean(self.strong, w)


@dataclass
class Evaluation:
    """Everything ``cascade eval`` reports; :meth:`to_dict` is the JSON."""

    policy: Policy
    evalset: EvalSet
    rows: BoolArray
    tiers: list[TierArrays]
    run: Run
    curve: Curve
    figures: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.rows.sum())

    def to_dict(self) -> dict[str, Any]:
        return self.figures


def score_policy(
    policy: Policy,
    data: Outcomes,
    evalset: EvalSet,
    base_dir: Path,
    *,
    billing: Billing = "auto",
    progress: Callable[[int], None] | None = None,
) -> list[TierArrays]:
    """Every tier of ``policy`` scored on every record of ``evalset``."""
    ctx = ReplayContext(base_dir, data, billing)
    return [score_tier(t, evalset.records, ctx, progress=progress) for t in policy.tiers]


def _best_single(q: FloatArray, c: FloatArray) -> int:
    order = np.lexsort((c, -q))
    return int(order[0])


def evaluate(
    policy: Policy,
    evalset: EvalSet,
    tiers: Sequence[TierArrays],
    rows: BoolArray,
    *,
    reps: int = 500,
    seed: int = 0,
    pair: tuple[str, str] | None = None,
    reference: str | None = None,
    part: str | None = None,
    pool: Sequence[TierArrays] | None = None,
    choose: BoolArray | None = None,
) -> Evaluation:
    """Figures for the policy on ``rows`` of ``evalset`` (tiers already scored on every row).

    ``pair`` (weak, strong) for APGR/CPT defaults to the cheapest and the strongest model of the
    policy's tiers on these rows; ``part`` says which records were measured (for the report).
    ``pool`` (tiers scored on every record) adds the baselines of
    :mod:`~cascade.evaluate.baselines`, chosen on ``choose`` (default: the other records)."""
    full = list(tiers)
    tiers = [t.take(rows) for t in tiers]
    qm = evalset.quality[rows]
    cm = evalset.cost[rows]
    n = len(qm)
    if n == 0:
        raise ConfigurationError(
            f"no records to evaluate: {part or 'the part measured'} is empty"
            f" ({len(evalset)} record(s) in the file); give more records, or --split none"
        )
    models = evalset.models
    res = run(tiers, on_exhausted=policy.on_exhausted, on_unverified=policy.on_unverified)
    grid = threshold_grid(tiers, grid_levels(len(tiers)))
    own = np.array([[t.threshold if t.has_scorer and t.threshold is not None else np.nan for t in tiers]])
    grid = np.concatenate([own, grid])
    # an abstention answers nothing: in the curve's per-record quality it is what `raise` gives (0)
    cq, cc, cs = sweep(tiers, grid, "raise" if policy.on_unverified == "abstain" else policy.on_exhausted)
    curve = Curve(grid, cq, cc, cs)
    wts = bootstrap_weights(n, reps, seed)

    sq, sc = qm.mean(axis=0), cm.mean(axis=0)
    best = _best_single(sq, sc)
    oq, oc = oracle(qm, cm)
    lo, hi = float(sc.min()), float(sc.max())

    def pol_q(w: FloatArray | None) -> float:
        return float(wmean(res.quality, w))

    def pol_c(w: FloatArray | None) -> float:
        return float(wmean(res.cost, w))

    def ratio(w: FloatArray | None) -> float:
        return pol_c(w) / float(wmean(cm[:, best], w))

    def delta_q(w: FloatArray | None) -> float:
        return pol_q(w) - float(wmean(qm[:, best], w))

    def matched(w: FloatArray | None) -> float:
        q, c, _ = curve.means(w)
        ref = float(wmean(qm[:, best], w))
        found = cost_at_quality(c, q, ref)
        return math.nan if found is None else found / float(wmean(cm[:, best], w))

    def curve_aiq(w: FloatArray | None) -> float:
        q, c, _ = curve.means(w)
        s_c = wmean(cm.T, w)
        return aiq(c, q, float(s_c.min()), float(s_c.max()))

    figures: dict[str, Any] = {
        "policy": policy.name,
        "file": str(evalset.data.path.name),
        "records": n,
        "records_dropped": evalset.dropped_records,
        "models_dropped": evalset.dropped_models,
        "bootstrap_reps": reps,
    }
    if part is not None:
        figures["part"] = part
    qi, ci = bootstrap(pol_q, wts), bootstrap(pol_c, wts)
    figures["quality"] = qi.to_dict()
    figures["cost_per_query_usd"] = ci.to_dict()
    figures["accepted_share"] = float(res.accepted.mean())
    if policy.on_unverified == "abstain":
        figures["abstention"] = abstention_figures(res, wts)
    per_tier = []
    for i, t in enumerate(tiers):
        reached = res.reached[:, i]
        acc = res.outcome[:, i] == 1
        reasons = {
            OUTCOME_NAMES[k]: int((res.outcome[:, i] == k).sum())
            for k in (2, 3, 4)
            if (res.outcome[:, i] == k).any()
        }
        per_tier.append(
            {
                "tier": t.name,
                "model": t.model,
                "threshold": t.threshold if t.has_scorer else None,
                "reached": int(reached.sum()),
                "accepted": int(acc.sum()),
                "accept_rate": float(acc.sum() / reached.sum()) if reached.any() else None,
                "accuracy_accepted": float(t.quality[acc].mean()) if acc.any() else None,
                "escalated": reasons,
                "mean_cost_when_called": float(t.cost[reached & t.ok].mean())
                if (reached & t.ok).any()
                else None,
            }
        )
    figures["tiers"] = per_tier
    figures["exhausted"] = int((~res.accepted).sum())
    figures["single_models"] = [
        {"model": m, "quality": float(sq[j]), "cost_per_query_usd": float(sc[j])}
        for j, m in sorted(enumerate(models), key=lambda x: sc[x[0]])
    ]
    figures["best_single"] = {
        "model": models[best],
        "quality": interval(float(sq[best]), [float(qm[:, best] @ w) for w in wts]).to_dict(),
        "cost_per_query_usd": float(sc[best]),
    }
    figures["oracle"] = {"quality": float(oq.mean()), "cost_per_query_usd": float(oc.mean())}
    figures["vs_best"] = {
        "quality_delta": bootstrap(delta_q, wts).to_dict(),
        "cost_share": bootstrap(ratio, wts).to_dict(),
    }
    figures["cost_at_matched_quality"] = bootstrap(matched, wts).to_dict()
    if reference is not None and reference in models:
        jr = models.index(reference)
        figures["vs_reference"] = {
            "model": reference,
            "quality": float(sq[jr]),
            "cost_per_query_usd": float(sc[jr]),
            "quality_delta": bootstrap(lambda w: pol_q(w) - float(wmean(qm[:, jr], w)), wts).to_dict(),
            "cost_share": bootstrap(lambda w: pol_c(w) / float(wmean(cm[:, jr], w)), wts).to_dict(),
        }
    mix_aiq, (a, b) = best_mix_aiq(sc, sq, lo, hi)
    single_aiq = [aiq(sc[[j]], sq[[j]], lo, hi) for j in range(len(models))]
    jbest = int(np.argmax(single_aiq))
    figures["aiq"] = {
        "policy_curve": bootstrap(curve_aiq, wts).to_dict(),
        "best_single": {"model": models[jbest], "value": single_aiq[jbest]},
        "best_random_mix": {"models": [models[a], models[b]], "value": mix_aiq},
        "oracle": aiq(np.array([oc.mean()]), np.array([oq.mean()]), lo, hi),
        "cost_range_usd": [lo, hi],
    }
    mine = [m for m in dict.fromkeys(t.model for t in tiers) if m in models]  # the policy's models
    if pool is not None:
        from cascade.evaluate.baselines import baseline_figures

        figures["baselines"] = baseline_figures(
            evalset,
            rows,
            pool,
            pool,
            mine or models,  # the cheapest on the records the baselines are chosen on
            figures["aiq"]["policy_curve"]["value"]
            if len(full) > 1
            else aiq(np.array([pol_c(None)]), np.array([pol_q(None)]), lo, hi),
            choose=choose,
            seed=seed,
        )
    omitted: str | None = None
    if pair is not None:
        weak, strong = pair
    else:
        weak = min(mine, key=lambda m: float(sc[models.index(m)])) if mine else ""
        strong = (
            max(mine, key=lambda m: (float(sq[models.index(m)]), -float(sc[models.index(m)]))) if mine else ""
        )
        if len(mine) < 2:
            omitted = "the policy has one model"
        elif weak == strong:
            omitted = f"the cheapest model ({weak}) is also the strongest: there is no gap to recover"
    if (
        omitted is None
        and weak in models
        and strong in models
        and float(sq[models.index(strong)]) <= float(sq[models.index(weak)])
    ):
        omitted = f"{strong} is not better than {weak} on these records: there is no gap to recover"
    if omitted is not None:
        figures["pair_omitted"] = omitted
    elif len(tiers) >= 2 and weak in models and strong in models:
        jw, js = models.index(weak), models.index(strong)

        def gm(w: FloatArray | None) -> tuple[float, float, float]:
            q, _, s = curve.means(w)
            g = gap_metrics(s, q, float(wmean(qm[:, jw], w)), float(wmean(qm[:, js], w)))
            return g.apgr, math.nan if g.cpt50 is None else g.cpt50, math.nan if g.cpt80 is None else g.cpt80

        point = gm(None)
        reps_g = np.array([gm(w) for w in wts])
        figures["pair"] = {
            "weak": weak,
            "strong": strong,
            "apgr": interval(point[0], reps_g[:, 0]).to_dict(),
            "cpt50": interval(point[1], reps_g[:, 1]).to_dict(),
            "cpt80": interval(point[2], reps_g[:, 2]).to_dict(),
            "policy_strong_share": float(res.reached[:, -1].mean()),
        }
    return Evaluation(policy, evalset, rows, list(tiers), res, curve, figures)


def abstention_figures(res: Run, wts: FloatArray) -> dict[str, Any]:
    """What ``on_unverified: abstain`` did: the share answered (coverage), the error rate among the
    answered records (selective risk: quality below 0.5 is an error, as in
    :mod:`cascade.evaluate.abstain`), with bootstrap intervals, and the counts."""
    answered = (~res.abstained).astype(np.float64)
    wrong = answered * (res.quality < 0.5)

    def coverage(w: FloatArray | None) -> float:
        return float(wmean(answered, w))

    def risk(w: FloatArray | None) -> float:
        shown = float(wmean(answered, w))
        return float(wmean(wrong, w)) / shown if shown > 0 else math.nan

    return {
        "coverage": bootstrap(coverage, wts).to_dict(),
        "error_among_answered": bootstrap(risk, wts).to_dict(),
        "answered": int(answered.sum()),
        "abstained": int(res.abstained.sum()),
    }


def as_interval(d: dict[str, Any]) -> Interval:
    nan = math.nan
    return Interval(
        nan if d["value"] is None else d["value"],
        nan if d["low"] is None else d["low"],
        nan if d["high"] is None else d["high"],
    )


__all__ = [
    "Curve",
    "Evaluation",
    "abstention_figures",
    "as_interval",
    "evaluate",
    "grid_levels",
    "score_policy",
]
