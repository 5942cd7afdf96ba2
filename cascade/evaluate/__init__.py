"""Offline evaluation and tuning of policies on recorded outcomes (nothing is called).

* :mod:`~cascade.evaluate.data`: the records evaluated, train/test splits, single-model arrays;
* :mod:`~cascade.evaluate.simulate`: tiers scored once by the real scorers, cascades played with numpy;
* :mod:`~cascade.evaluate.metrics`: AIQ, PGR/APGR, CPT, cost at matched quality, oracle, bootstrap;
* :mod:`~cascade.evaluate.evaluate`: every figure of ``cascade eval``;
* :mod:`~cascade.evaluate.tune`: tiers, order and thresholds chosen on a training part;
* :mod:`~cascade.evaluate.report` and :mod:`~cascade.evaluate.write`: tables, JSON, plots, YAML.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cascade.evaluate.data import EvalSet
from cascade.evaluate.evaluate import Evaluation, evaluate, score_policy
from cascade.evaluate.simulate import TierArrays
from cascade.evaluate.tune import Objective, Setting, Tuning, tune
from cascade.evaluate.write import floor_threshold
from cascade.outcomes import Outcomes
from cascade.policy.schema import Policy


def evaluate_file(
    policy: Policy,
    data: Outcomes,
    base_dir: str | Path = ".",
    *,
    split: str = "none",
    seed: int = 0,
    reps: int = 500,
) -> Evaluation:
    """Score ``policy`` on ``data`` and evaluate it on the chosen part (default: every record)."""
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    tiers = score_policy(policy, data, es, Path(base_dir))
    rows = es.split(split, seed=seed)  # type: ignore[arg-type]
    return evaluate(policy, es, tiers, rows, reps=reps, seed=seed)


def held_out(
    tuning: Tuning,
    setting: Setting,
    policy: Policy,
    *,
    reps: int = 500,
    seed: int = 0,
    baselines: bool = False,
) -> Evaluation:
    """The tuned ``setting`` (written as ``policy``) measured on the tuning's held-out part;
    ``baselines``: with the two-model cascade and prompt-router baselines, chosen among the
    tuning's single-model candidates on the training part."""
    arrays = tuning.arrays(setting, np.ones(len(tuning.evalset), dtype=bool))
    ths = [floor_threshold(t) for t in setting.thresholds]
    arrays = [replace(a, threshold=ths[i]) if i < len(ths) else a for i, a in enumerate(arrays)]
    b = tuning.boundary
    if b is not None and setting == tuning.choice:
        b = replace(b, below=floor_threshold(b.below), above=floor_threshold(b.above))
        arrays = b.apply(arrays, [r.prompt for r in tuning.evalset.records])
    es, test = tuning.evalset, tuning.test
    rule = tuning.split or {}
    how = (
        f"seed {rule.get('seed')}, held-out share {rule.get('test_fraction'):g}"
        if rule.get("split") == "seed"
        else f"split rule {rule.get('split', 'auto')}, seed {rule.get('seed', 0)}"
    )
    part = f"the held-out part of {es.data.path.name} ({int(test.sum())} of {len(es)} records; {how})"
    ev = evaluate(policy, es, arrays, test, reps=reps, seed=seed, reference=tuning.reference, part=part)
    if baselines:
        ev.figures["baselines"] = tuned_baselines(tuning, ev, seed)
    return ev


def tuned_baselines(tuning: Tuning, ev: Evaluation, seed: int = 0) -> dict[str, Any]:
    """The baselines of a tuning, held out: the two-model cascade among its single-model
    candidates and the prompt router, chosen on the training part, against the tuned family
    (every setting on the training frontier, measured on the held-out part)."""
    from cascade.evaluate.baselines import baseline_figures
    from cascade.evaluate.family import frontier_aiq

    cands = [i for i, c in enumerate(tuning.candidates) if not c.partners]
    firsts = [i for i in cands if tuning.candidates[i].scored is not None]
    lasts = [i for i in cands if tuning.candidates[i].bare is not None]

    def full(i: int, j: int) -> tuple[TierArrays, TierArrays]:
        a, b = firsts[i], lasts[j]
        tuning.ensure(Setting((a, b), (0.0,), 0.0, 0.0))
        sa, sb = tuning.candidates[a].scored, tuning.candidates[b].bare
        assert sa is not None
        assert sb is not None
        return sa, sb

    first_model = ev.figures["tiers"][0]["model"]
    lo, hi = ev.figures["aiq"]["cost_range_usd"]
    out = baseline_figures(
        tuning.evalset,
        tuning.test,
        [tuning.candidates[i].scored for i in firsts],  # type: ignore[misc]
        [tuning.candidates[i].bare for i in lasts],  # type: ignore[misc]
        [first_model],
        frontier_aiq(tuning, lo, hi),
        choose=tuning.train,
        full=full,
        seed=seed,
        what="the tuned family",
    )
    return {**out, "chosen_on": "the training part"}


__all__ = [
    "EvalSet",
    "Evaluation",
    "Objective",
    "Setting",
    "Tuning",
    "evaluate",
    "evaluate_file",
    "held_out",
    "tune",
]
