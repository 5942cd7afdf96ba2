"""The tuner's side of issue 9: one call per model per request, and ex-ante skipping.

* :func:`after` gives a candidate's arrays costed after the tiers before it: samples of a call an
  earlier tier bought (a voter that is also the next tier, a partner of two tiers) are reused, so
  the search never pays twice (the same rule as :func:`~cascade.evaluate.simulate.chain_costs`).
* :func:`skip_candidates` trains a prompt-only estimator per cheap model on the training part
  (out-of-fold scores there, the final estimator on the held-out part) and adds each scored
  candidate again behind a skip rule at several thresholds. The tuner then searches the skip
  thresholds jointly with the accept thresholds (every skip level meets every accept threshold).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.simulate import TierArrays, chain_costs
from cascade.logging import get_logger
from cascade.outcomes import Outcomes


class _Costed(Protocol):
    ok: BoolArray
    cost: FloatArray


A = TypeVar("A", bound=_Costed)


def after(cands: Sequence[Any], arrs: Mapping[int, A], prefix: tuple[int, ...], j: int, scored: bool) -> A:
    """``arrs[j]`` (a tuner ``_Arr``) with the cost candidate ``j`` has when ``prefix``'s tiers
    (scored candidates) were called before it in the same request."""
    base = arrs[j]
    if not prefix:
        return base
    last: TierArrays | None = cands[j].scored if scored else cands[j].bare
    chain: list[TierArrays] = [cands[i].scored for i in prefix]
    if last is None or not last.calls or not any(k in t.calls for t in chain for k in last.calls):
        return base
    cost = chain_costs([*chain, last])[-1]
    out: A = replace(base, cost=np.where(base.ok, cost, 0.0))  # type: ignore[type-var]
    return out


def oof_estimates(
    data: Outcomes,
    es: EvalSet,
    train: BoolArray,
    model: str,
    *,
    versus: str | None = None,
    folds: int = 3,
    seed: int = 0,
) -> tuple[FloatArray, Any] | None:
    """Out-of-fold prompt-only estimates of ``model`` being right (``versus``: as good as that
    model) on the training rows, the final estimator's on the others (fit on every training row),
    and that estimator; None when the training part has too few labels."""
    from cascade.learn.classifier import trained_for
    from cascade.learn.estimator import prompt_examples, train_prompt_estimator

    by_id = {e.id: e for e in prompt_examples(data, model, versus=versus)}
    rows = [by_id.get(r.id) for r in es.records]
    tr = [int(i) for i in np.flatnonzero(train) if rows[int(i)] is not None]
    if len(tr) < 40 or len({rows[i].label for i in tr}) < 2:  # type: ignore[union-attr]
        return None
    n = len(es)
    out = np.full(n, np.nan)
    order = np.random.default_rng(seed).permutation(len(tr))
    for f in range(folds):
        fit = [rows[tr[k]] for k in order if k % folds != f]
        held = [tr[k] for k in order if k % folds == f]
        est = train_prompt_estimator([e for e in fit if e is not None], folds=2, seed=seed)
        out[held] = est.predict_many([es.records[i].prompt for i in held])
    meta = {**trained_for(model, data), **({"versus": versus} if versus else {})}
    final = train_prompt_estimator(
        [e for e in (rows[i] for i in tr) if e is not None], folds=2, seed=seed, meta=meta
    )
    rest = np.flatnonzero(~train)
    if len(rest):
        out[rest] = final.predict_many([es.records[int(i)].prompt for i in rest])
    return out, final


def skip_levels(estimate: FloatArray, rows: BoolArray, levels: int) -> list[float]:
    """Skip thresholds to try: quantiles of the estimate on ``rows`` (skipping 10%..90%)."""
    e = estimate[rows & np.isfinite(estimate)]
    if len(e) == 0:
        return []
    qs = np.linspace(0.1, 0.9, levels)
    return sorted({round(float(x), 6) for x in np.quantile(e, qs)})


def skip_candidates(
    cands: Sequence[Any],
    es: EvalSet,
    data: Outcomes,
    train: BoolArray,
    models: Sequence[str],
    folder: Path,
    *,
    levels: int = 8,
    bases: int = 3,
    seed: int = 0,
) -> tuple[list[Any], list[str]]:
    """For each scored candidate of ``models``: the same tier behind a skip rule at ``levels``
    thresholds, for two estimators: P(its answer is right), and P(it is as good as the best model
    on the training part). Only the ``bases`` candidates of a model with the fewest partners (then
    the cheapest) get skip rules, which bounds the search. Returns the new candidates and notes."""
    from cascade.evaluate.candidates import Candidate, slug, validate_tier

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Any] = []
    notes: list[str] = []
    q, c_ = es.quality[train].mean(axis=0), es.cost[train].mean(axis=0)
    best = es.models[int(np.lexsort((c_, -q))[0])]
    for m, versus in [(m, v) for m in models for v in (None, best) if v != m]:
        base = [c for c in cands if c.spec.model == m and c.scored is not None and c.scored.skipped is None]
        base = sorted(base, key=lambda c: (len(c.partners), float(c.scored.cost[train].mean())))[:bases]
        if not base:
            continue
        got = oof_estimates(data, es, train, m, versus=versus, seed=seed)
        if got is None:
            continue
        estimate, final = got
        tag = "" if versus is None else f".vs-{slug(versus)}"
        path = (folder / f"{slug(m)}{tag}.prompt.json").resolve()
        final.save(path)
        ths = skip_levels(estimate, train, levels)
        # the written rule runs the final estimator: a level at which it skips every training
        # prompt would write a tier that is never called (issue 20), so it is not offered
        seen = final.predict_many([r.prompt for r, t in zip(es.records, train, strict=True) if t])
        top = float(np.max(seen)) if len(seen) else -np.inf
        if any(th > top for th in ths):
            notes.append(
                f"skip levels above {top:.4g} left out for {m}: the final estimator skips every prompt"
            )
            ths = [th for th in ths if th <= top]
        for c in base:
            for th in ths:
                raw = copy.deepcopy(c.raw)
                raw["skip"] = {"artifact": str(path), "threshold": th}
                raw["name"] = f"{c.name}-skip{'v' if versus else ''}{th:.3f}".replace("0.", "")
                # the spec without `skip:` (the arrays carry the rule, so the simulation needs no
                # schema support; the written policy keeps it)
                spec = validate_tier({k: v for k, v in raw.items() if k != "skip"})
                assert c.scored is not None
                scored = c.scored.with_skip(estimate, th)
                out.append(
                    Candidate(
                        spec.name,
                        raw,
                        spec,
                        scored=replace(scored, name=spec.name),
                        bare=c.bare,
                        partners=c.partners,
                    )
                )
        what = "right" if versus is None else f"as good as {versus}"
        notes.append(f"prompt-only skip estimator for {m} (P({what}); training part, out-of-fold): {path}")
        get_logger().info(
            "tune_skip_candidates", model=m, thresholds=len(ths), candidates=len(base) * len(ths)
        )
    return out, notes


__all__ = ["after", "oof_estimates", "skip_candidates", "skip_levels"]
