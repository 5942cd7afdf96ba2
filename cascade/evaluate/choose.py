"""The tuner's choice among the settings searched: the objective checked with its margin, a
cheaper single model, a randomised boundary, the frontier, and the risk-controlled choice."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from cascade.evaluate.candidates import Candidate
from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.metrics import upper_hull
from cascade.evaluate.report import usd as _usd
from cascade.evaluate.search import _Search
from cascade.evaluate.simulate import TierArrays, run
from cascade.evaluate.tuning import Boundary, Guarantee, Objective, Setting, Tuning
from cascade.policy.schema import Policy

# -- choosing -----------------------------------------------------------------------------------


def _passes(
    tuning_rows: BoolArray,
    arrays: list[TierArrays],
    ths: list[float | None],
    obj: Objective,
    ref: FloatArray | None,
    target: float | None,
    on_exhausted: Any,
) -> bool:
    r = run(list(arrays), ths, on_exhausted)
    n = len(r.quality)
    z = obj.confidence
    if obj.cost_cap is not None:
        se = float(r.cost.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return float(r.cost.mean()) + z * se <= obj.cost_cap
    assert target is not None
    if ref is not None:
        d = r.quality - ref[tuning_rows]
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return float(d.mean()) - z * se >= -obj.tolerance - 1e-12
    se = float(r.quality.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return float(r.quality.mean()) - z * se >= target - 1e-12


def _randomised_boundary(
    tmp: Tuning, choice: Setting, train: BoolArray, objective: Objective, pol: Policy, seed: int
) -> Boundary | None:
    """Under a cost cap: for each scored tier of ``choice``, the next threshold up (the neighbouring,
    costlier setting) mixed in with the probability that spends the cap (less the margin) on the
    training part; the tier whose mix gains most quality, or None when no mix gains."""
    assert objective.cost_cap is not None
    prompts = [r.prompt for r, keep in zip(tmp.evalset.records, train, strict=True) if keep]
    base = tmp.arrays(choice, train)
    ra = run(base, tmp.thresholds(choice), pol.on_exhausted)
    n = len(ra.cost)
    se = float(ra.cost.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    cap = objective.cost_cap - objective.confidence * se
    qa, ca = float(ra.quality.mean()), float(ra.cost.mean())
    if ca >= cap:
        return None
    best: Boundary | None = None
    for pos, t_a in enumerate(choice.thresholds):
        scores = base[pos].score
        above = np.unique(scores[np.isfinite(scores) & (scores > t_a + 1e-12)])
        if len(above) == 0:
            continue
        t_b = float(above[0])
        ths_b = list(choice.thresholds)
        ths_b[pos] = t_b
        rb = run(base, [*ths_b, None], pol.on_exhausted)
        qb, cb = float(rb.quality.mean()), float(rb.cost.mean())
        if cb <= cap or qb <= qa or cb <= ca:
            continue
        # the share of the band still accepted (p = 1: the choice itself), as written in the policy
        p = round((cb - cap) / (cb - ca), 6)
        trial = Boundary(pos, float(t_a), t_b, float(p), seed, 0.0, 0.0)
        rm = run(trial.apply(base, prompts), [*ths_b, None], pol.on_exhausted)
        qm, cm = float(rm.quality.mean()), float(rm.cost.mean())
        if qm > qa and cm <= objective.cost_cap and (best is None or qm > best.quality):
            note = (
                f"randomised boundary on tier {pos + 1}: scores in [{t_a:.4g}, {t_b:.4g}) accepted for"
                f" {p:.1%} of requests (seed {seed}); on the training part {_usd(cm)}/query at quality"
                f" {qm:.4f}, against {_usd(ca)} at {qa:.4f} deterministic"
            )
            best = Boundary(pos, float(t_a), t_b, float(p), seed, qm, cm, note)
    return best


def _cheaper_single(search: _Search, choice: Setting) -> Setting | None:
    """The cheapest single model at least as good as ``choice`` on the training part and cheaper,
    if any: a tuned policy never costs more than that (issue 20)."""
    q, c, which, row = search.flat()
    single = np.array([len(search.settings[w][0]) == 1 for w in which], dtype=bool)
    ok = np.flatnonzero(single & (q >= choice.quality - 1e-12) & (c < choice.cost - 1e-15))
    if len(ok) == 0:
        return None
    k = int(ok[np.lexsort((-q[ok], c[ok]))[0]])
    return search.setting(int(which[k]), int(row[k]), float(q[k]), float(c[k]))


def _frontier(search: _Search) -> list[Setting]:
    """The settings on the training part's hull, one per vertex (a setting that only shares a
    vertex's cost, at a lower quality, is dominated and left out)."""
    q, c, which, row = search.flat()
    hx, hy = upper_hull(c, q)
    out: list[Setting] = []
    for x, y in zip(hx.tolist(), hy.tolist(), strict=True):
        at = np.flatnonzero((c == x) & (q == y))
        k = int(at[0])
        out.append(search.setting(int(which[k]), int(row[k]), float(q[k]), float(c[k])))
    return out


def _risk_reference(es: EvalSet, own: Sequence[int], train: BoolArray) -> int:
    """The column the risk test compares with: the best of the policy's own models (``own``) on the
    whole training part, the cheaper on ties."""
    all_q, all_c = es.quality[train].mean(axis=0), es.cost[train].mean(axis=0)
    return min(own or range(len(es.models)), key=lambda j: (-float(all_q[j]), float(all_c[j])))


def _calibration_share(es: EvalSet, train: BoolArray, objective: Objective) -> float:
    """The default share of the training part for the risk test: as many records as prove half the
    target when nothing disagrees with the reference (so that a setting with a few disagreements can
    pass), the rest for the search that orders the tests; at least 50% and at most 85%."""
    from cascade.evaluate import risk

    assert objective.max_drop is not None
    n = int(train.sum())
    need = risk.records_needed(objective.max_drop / 2, objective.risk, risk.method_of(es.quality[train]))
    return min(0.85, max(0.5, (need or n) / max(n, 1)))


def _feasibility(
    es: EvalSet, cands: Sequence[Candidate], train: BoolArray, cal: BoolArray, objective: Objective
) -> Guarantee:
    """Before the search: the smallest drop ``cal`` can prove, the records the asked one needs, and
    whether the asked one is out of reach whatever the search finds (``infeasible``)."""
    from cascade.evaluate import risk

    assert objective.max_drop is not None
    eps, delta, n = objective.max_drop, objective.risk, int(cal.sum())
    ref_j = _risk_reference(es, sorted({es.column(k.spec.model) for k in cands if not k.partners}), train)
    method = risk.method_of(es.quality[cal])
    needed = risk.records_needed(eps, delta, method)
    smallest = risk.smallest_provable(n, delta, method)
    blocked = needed is None or n < needed
    return Guarantee(
        eps,
        delta,
        es.models[ref_j],
        method,
        n,
        int((train & ~cal).sum()),
        0,
        0,
        1.0,
        math.nan,
        smallest=smallest,
        needed=needed,
        infeasible=blocked,
    )


def _pareto(q: FloatArray, c: FloatArray, below: float) -> np.ndarray:
    """The settings no other setting beats on both cost and quality, costing less than ``below``."""
    ok = np.flatnonzero(c < below - 1e-15)
    out: list[int] = []
    best = -math.inf
    for k in ok[np.lexsort((-np.round(q[ok], 12), np.round(c[ok], 12)))]:
        if q[k] > best + 1e-12:
            best = float(q[k])
            out.append(int(k))
    return np.asarray(out, dtype=np.int64)


def _risk_controlled(
    search: _Search,
    cands: list[Candidate],
    es: EvalSet,
    test: BoolArray,
    fit: BoolArray,
    cal: BoolArray,
    ref_j: int,
    objective: Objective,
    pol: Policy,
    seed: int,
    max_tests: int = 400,
    max_risk_estimates: int = 5000,
) -> tuple[Setting | None, Guarantee]:
    """Learn-then-Test with Pareto testing (Laufer-Goldshtein et al., 2023). On the search part:
    the settings cheaper than the reference and within the target, each one's estimated risk (the upper
    bound its paired drops would give on as many records as ``cal`` holds, widened by the search
    part's own noise; normal approximation),
    and the front of cost against that risk, kept where the risk is within the target. Those are
    tested on ``cal`` from the lowest risk up; the cheapest setting rejected before the first
    failure is chosen (:mod:`cascade.evaluate.risk`). The order never sees ``cal``: the guarantee
    holds."""
    from cascade.evaluate import risk

    assert objective.max_drop is not None
    eps, delta = objective.max_drop, objective.risk
    q, c, which, row = search.flat()
    ref_model = es.models[ref_j]
    ref_q_cal = es.quality[cal, ref_j]
    ref_cost = float(es.cost[fit, ref_j].mean())
    ref_q_fit = es.quality[fit, ref_j]
    # every setting cheaper than the reference and within the target on the search part (the
    # ``max_risk_estimates`` with the smallest drops there)
    front = np.flatnonzero((c < ref_cost - 1e-15) & (float(ref_q_fit.mean()) - q <= eps + 1e-12))
    front = front[np.argsort(-q[front], kind="stable")[:max_risk_estimates]]
    tmp = Tuning(cands, es, test, None, ref_model, None, [], 0)
    # the calibration test's own margin, plus the search part's noise in the drop it estimates
    z = statistics.NormalDist().inv_cdf(1 - delta) * (1 / math.sqrt(cal.sum()) + 1 / math.sqrt(fit.sum()))
    found = [search.setting(int(which[k]), int(row[k]), float(q[k]), float(c[k])) for k in front]
    est = []
    for s in found:
        d = ref_q_fit - run(tmp.arrays(s, fit), tmp.thresholds(s), pol.on_exhausted).quality
        est.append(float(d.mean() + z * (d.std(ddof=1) if len(d) > 1 else 1.0)))
    risky = np.array(est)
    keep = _pareto(-risky, np.array([s.cost for s in found]), math.inf)  # cheaper and safer
    keep = keep[risky[keep] <= eps][::-1]  # from the lowest estimated risk up
    if len(keep) > max_tests:  # evenly along the order
        keep = keep[np.unique(np.linspace(0, len(keep) - 1, max_tests).round().astype(np.int64))]
    settings = [found[int(k)] for k in keep]
    method = risk.method_of(es.quality[cal])
    sequence = range(len(settings))  # already in the order of the test
    results: dict[int, tuple[float, float]] = {}

    def check(i: int) -> tuple[float, float]:
        s = settings[i]
        r = run(tmp.arrays(s, cal), tmp.thresholds(s), pol.on_exhausted)
        results[i] = (float(r.cost.mean()), float(r.quality.mean()))
        return float((ref_q_cal - r.quality).mean()), risk.pvalue(r.quality, ref_q_cal, eps, delta, seed=seed)

    tested = risk.fixed_sequence(sequence, check, delta)
    passed = [t for t in tested if t.rejected]
    # the reference alone loses nothing by definition: it is the fallback
    ref_single = next(
        (
            i
            for i, cand in enumerate(cands)
            if cand.bare is not None and cand.spec.model == ref_model and not cand.partners
        ),
        None,
    )
    choice: Setting | None = None
    best = None
    if passed:
        best = min(passed, key=lambda t: (round(results[t.index][0], 12), -results[t.index][1]))
        choice = settings[best.index]
    elif ref_single is not None:
        choice = Setting((ref_single,), (), float(es.quality[fit, ref_j].mean()), ref_cost)
    guarantee = Guarantee(
        eps,
        delta,
        ref_model,
        method,
        int(cal.sum()),
        int(fit.sum()),
        len(tested),
        len(passed),
        best.pvalue if best is not None else (tested[0].pvalue if tested else 1.0),
        best.drop if best is not None else 0.0,
        fallback=best is None,
    )
    return choice, guarantee
