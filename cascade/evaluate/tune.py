"""Tune a policy from recorded outcomes: which tiers, in which order, with which thresholds.

The input is a *skeleton* policy: its tiers are the candidates (a model with a scorer). It can
be widened to every model of the file (``models="all"``: each gets the skeleton's first scorer);
for ``self_consistency`` scorers, to fewer samples (``samples``) and to *agreement* candidates
that add votes from up to ``partners`` other cheap models; and to trained confidence classifiers
for up to ``classifiers`` cheap models (:mod:`cascade.learn.learned`, out-of-fold on the
training part). "Cheap models" are the frontier and best-quality models costing at most
``pool_cost_share`` of the reference model (or the cost cap), measured on the training part.

Every candidate is scored once on every record by the real provider and scorer code
(:func:`~cascade.evaluate.simulate.score_tier`); the search then runs on arrays:

* one model alone (the last tier needs no scorer);
* two tiers ``scored -> last``: every threshold at once, by sorting the scores (exact);
* three tiers ``scored -> scored -> last`` (cheapest first) for the most useful scored candidates
  and last tiers: a grid on the first threshold, every value of the second;
* deeper cascades extend the best three-tier prefixes the same way.

The objective is either the highest quality under a cost cap per query or the lowest cost for a
target quality (a number, or ``"best"``: the best single model's quality on the training part).
A setting must meet its constraint with a margin of ``confidence`` standard errors on the
training part (paired against the reference model for ``"best"``), which keeps the choice from
riding on luck; what the margin costs is stated (``Tuning.unmargined``: the choice without it, and a
note). The chosen policy is then measured on the held-out part, with bootstrap intervals: that is
the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cascade.errors import ConfigurationError
from cascade.evaluate.candidates import (
    Candidate,
    agreement_candidates,
    candidates_from,
    check_choices,
    data_choices,
    frontier_models,
    raw_tiers,
    sample_count_candidates,
)
from cascade.evaluate.choose import (
    _calibration_share,
    _cheaper_single,
    _feasibility,
    _frontier,
    _passes,
    _randomised_boundary,
    _risk_controlled,
    _risk_reference,
)
from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.report import usd as _usd
from cascade.evaluate.search import _Search, _usefulness
from cascade.evaluate.simulate import Billing, ReplayContext, TierArrays, score_tier
from cascade.evaluate.tuning import Boundary, Guarantee, Objective, Setting, Target, Tuning
from cascade.outcomes import Outcomes
from cascade.policy import loader
from cascade.policy.schema import Policy, TierSpec


def tune(
    skeleton: str | Path,
    data: Outcomes,
    objective: Objective,
    *,
    models: Sequence[str] | Literal["all"] | None = None,
    partners: int = 0,
    samples: Sequence[int] = (),
    classifiers: int = 0,
    skip: int = 0,
    artifacts: str | Path | None = None,
    pool: int = 6,
    pool_cost_share: float = 0.2,
    depth: int = 3,
    split: Literal["auto", "file", "seed"] = "auto",
    seed: int = 0,
    test_fraction: float = 0.5,
    billing: Billing = "auto",
    breadth: int = 24,
    levels: int = 12,
    progress: Callable[[int, int], None] | None = None,
    cache: dict[str, TierArrays] | None = None,
    randomise: bool = True,
    min_records: int = 1,
) -> Tuning:
    """Choose tiers, order and thresholds from the training part of ``data`` (see the module doc).

    ``progress(done, total)`` is called while candidates are scored (the slow part). Fewer than
    ``min_records`` records in the training or the held-out part is a :class:`ConfigurationError`.

    The steps: the candidates and the split (:func:`_prepare`), the calibration part of a risk
    target (:func:`_calibration_part`), more candidates (samples, agreement partners), every
    candidate scored on the training rows (:func:`_score`), learned candidates
    (:func:`_learned`), the search (:func:`_search`), then the choice: risk-controlled
    (:func:`_choose_with_risk`) or for the objective (:func:`_choose_for_objective`)."""
    pol = loader.load(skeleton)
    split_rule = {"split": split, "seed": seed, "test_fraction": test_fraction}
    notes, cands, es, test = _prepare(
        skeleton, data, models, split, seed, test_fraction, artifacts, classifiers + skip, min_records
    )
    train = ~test
    fit, cal, reach = _calibration_part(es, cands, train, objective, seed, data)
    if reach is not None:
        notes.append(f"risk test: {reach.feasibility()}")
        if reach.infeasible:
            return Tuning(
                cands,
                es,
                test,
                None,
                reach.reference,
                None,
                [],
                0,
                notes,
                skeleton=pol,
                split=split_rule,
                guarantee=reach,
            )
    if samples:
        cands += sample_count_candidates(cands, samples)
    tq, tc = es.quality[fit].mean(axis=0), es.cost[fit].mean(axis=0)
    ref_cost = float(tc[int(np.lexsort((tc, -tq))[0])])
    cap = objective.cost_cap if objective.cost_cap is not None else ref_cost * pool_cost_share
    if partners > 0:
        pool_models = frontier_models(es, fit, pool, cap)
        extra = agreement_candidates(cands, pool_models, partners)
        notes.append(f"agreement partners from the cheapest frontier models: {', '.join(pool_models)}")
        cands += extra
    ctx = ReplayContext(Path(skeleton).resolve().parent, data, billing)
    complete = _score(cands, es, data, train, ctx, cache, progress)
    if classifiers > 0 or skip > 0:
        assert artifacts is not None
        cands += _learned(
            cands, es, data, train, fit, cap, classifiers, skip, Path(artifacts), seed, notes, ctx
        )
    search = _search(cands, fit, depth, breadth, levels)
    if objective.max_drop is not None:
        assert reach is not None
        choice, guarantee, reference = _choose_with_risk(
            search, cands, es, test, fit, cal, objective, pol, seed, notes
        )
        guarantee = replace(guarantee, smallest=reach.smallest, needed=reach.needed)
        return Tuning(
            cands,
            es,
            test,
            choice,
            reference,
            None,
            _frontier(search),
            search.flat()[0].size,
            notes,
            ctx,
            skeleton=pol,
            split=split_rule,
            guarantee=guarantee,
            _complete=complete,
        )
    return _choose_for_objective(
        search, cands, es, test, fit, objective, pol, seed, randomise, notes, ctx, split_rule, complete
    )


def _prepare(
    skeleton: str | Path,
    data: Outcomes,
    models: Sequence[str] | Literal["all"] | None,
    split: Literal["auto", "file", "seed"],
    seed: int,
    test_fraction: float,
    artifacts: str | Path | None,
    learned: int,
    min_records: int,
) -> tuple[list[str], list[Candidate], EvalSet, BoolArray]:
    """The skeleton's candidates, the records they can be evaluated on and the held-out part;
    one-line errors for what cannot be tuned."""
    raws = raw_tiers(skeleton)
    notes: list[str] = check_choices(raws, data, fill=True)
    cands = candidates_from(raws, data, models=models)
    es = EvalSet.build(data, sorted({c.spec.model for c in cands[: len(raws)]}))
    dropped = sorted({c.spec.model for c in cands if c.spec.model not in es.models})
    if dropped:
        notes.append(f"left out, too few labelled answers: {', '.join(dropped)}")
        cands = [c for c in cands if c.spec.model in es.models]
    test = es.split(split, seed=seed, test_fraction=test_fraction)
    train = ~test
    if artifacts is None and learned > 0:
        raise ConfigurationError(
            "tune: classifiers and skip estimators are artifact files: give artifacts=FOLDER (where the"
            " tuned policy will find them; the CLI writes them beside --out)"
        )
    n_train, n_test = int(train.sum()), int(test.sum())
    if min(n_train, n_test) < min_records:
        raise ConfigurationError(
            f"{data.path}: {n_train} training and {n_test} held-out records; at least {min_records} in"
            " each part give a meaningful interval (more data, or --min-records / min_records= to"
            " tune anyway)"
        )
    return notes, cands, es, test


def _calibration_part(
    es: EvalSet, cands: list[Candidate], train: BoolArray, objective: Objective, seed: int, data: Outcomes
) -> tuple[BoolArray, BoolArray, Guarantee | None]:
    """With a risk target, the training part is cut once more: the search (and the order of the
    settings to test) sees ``fit`` only; the p-values come from ``cal``. Returns ``(fit, cal,
    what the risk test can reach)``; without a risk target, ``(train, nothing, None)``."""
    fit, cal = train, np.zeros(len(train), dtype=bool)
    if objective.max_drop is None:
        return fit, cal, None
    idx = np.flatnonzero(train)
    share = objective.calibration or _calibration_share(es, train, objective)
    picked = np.random.default_rng(seed + 1).permutation(len(idx))[: round(len(idx) * share)]
    cal = np.zeros(len(train), dtype=bool)
    cal[idx[picked]] = True
    fit = train & ~cal
    if int(fit.sum()) < 2 or int(cal.sum()) < 2:
        raise ConfigurationError(f"{data.path}: too few training records to keep a calibration part")
    return fit, cal, _feasibility(es, cands, train, cal, objective)


def _score(
    cands: list[Candidate],
    es: EvalSet,
    data: Outcomes,
    train: BoolArray,
    ctx: ReplayContext,
    cache: dict[str, TierArrays] | None,
    progress: Callable[[int, int], None] | None,
) -> set[int]:
    """Every candidate scored on the training rows, with its scorer (``scored``) and bare (one
    sample, as the last tier); with a ``cache`` (repeated tunes of one file) on every row once.
    Returns the candidates scored on every row (``-1 - pos`` for a bare one)."""
    n_scored = sum(1 for k in cands if k.spec.scorer is not None)
    total = (n_scored + len({k.spec.model for k in cands})) * int(train.sum())
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    bare_by_model: dict[str, TierArrays] = {}
    complete: set[int] = set()

    def scored(spec: TierSpec) -> TierArrays:
        """The tier scored on the training rows, or (with a ``cache``, for repeated tunes of one
        file) on every row once."""
        if cache is None:
            return score_tier(spec, es.records, ctx, rows=train, progress=tick)
        key = f"{data.path}|{len(es)}|{spec.model_dump_json(exclude={'name'})}"
        if key not in cache:
            cache[key] = score_tier(spec, es.records, ctx)
        tick(int(train.sum()))
        return replace(cache[key], name=spec.name)

    for pos, cand in enumerate(cands):
        if cand.spec.scorer is not None:
            cand.scored = scored(cand.spec)
            if cache is not None:
                complete.add(pos)
        if not cand.partners:
            if cand.spec.model not in bare_by_model:
                bare_spec = cand.spec.model_copy(update={"scorer": None, "threshold": None})
                bare_by_model[cand.spec.model] = scored(bare_spec)
            cand.bare = bare_by_model[cand.spec.model]
            if cache is not None:
                complete.add(-1 - pos)
    return complete


def _learned(
    cands: list[Candidate],
    es: EvalSet,
    data: Outcomes,
    train: BoolArray,
    fit: BoolArray,
    cap: float,
    classifiers: int,
    skip: int,
    folder: Path,
    seed: int,
    notes: list[str],
    ctx: ReplayContext,
) -> list[Candidate]:
    """Learned candidates for the cheapest frontier models: classifiers and verifiers (trained on
    the training part only) and ex-ante skip estimators (issue 9; their thresholds are searched
    with the accept thresholds); their artifacts go to ``folder``."""
    out: list[Candidate] = []
    if classifiers > 0:
        from cascade.learn.learned import classifier_candidates

        clf_models = frontier_models(es, fit, classifiers, cap)
        out += classifier_candidates(
            cands,
            es,
            data,
            train,
            clf_models,
            folder,
            seed=seed,
            rescore=lambda spec: score_tier(spec, es.records, ctx, rows=train),
        )
        notes.append(
            f"classifiers trained (training part only) for: {', '.join(clf_models)}; artifacts in {folder}"
        )
    if skip > 0:
        from cascade.evaluate.routing import skip_candidates

        skip_models = frontier_models(es, fit, skip, cap)
        more, skip_notes = skip_candidates([*cands, *out], es, data, fit, skip_models, folder, seed=seed)
        out += more
        notes += skip_notes
    return out


def _search(cands: list[Candidate], fit: BoolArray, depth: int, breadth: int, levels: int) -> _Search:
    """Settings of up to ``depth`` tiers searched on the ``fit`` rows: single models, pairs, then
    deeper cascades grown from the most useful first and last tiers."""
    search = _Search(cands, fit)
    search.singles()
    if depth >= 2:
        search.pairs()
    if depth >= 3:
        firsts, lasts = _usefulness(search, breadth)
        search.deeper([(i,) for i in firsts], lasts, firsts, levels)
        for d in range(4, depth + 1):
            q, _, which, _ = search.flat()
            best_prefixes: list[tuple[int, ...]] = []
            for w in np.argsort(-q)[: 4 * breadth]:
                t = search.settings[which[w]][0]
                if len(t) == d - 1 and t[:-1] not in best_prefixes:
                    best_prefixes.append(t[:-1])
            search.deeper(best_prefixes[:breadth], lasts, firsts, max(3, levels // 2))
    return search


def _choose_with_risk(
    search: _Search,
    cands: list[Candidate],
    es: EvalSet,
    test: BoolArray,
    fit: BoolArray,
    cal: BoolArray,
    objective: Objective,
    pol: Policy,
    seed: int,
    notes: list[str],
) -> tuple[Setting | None, Guarantee, str]:
    """The risk-controlled choice, its guarantee and the reference model: the best model on the
    whole training part (a small search part would pick it by luck; choosing it with the
    calibration records only makes the tests more conservative, since its luck there inflates
    every drop), among the models the policy can fall back to."""
    train = ~test
    all_q, all_c = es.quality[train].mean(axis=0), es.cost[train].mean(axis=0)
    own = sorted({es.column(k.spec.model) for k in cands if k.bare is not None and not k.partners})
    best_j = _risk_reference(es, own, train)
    if own and int(np.lexsort((all_c, -all_q))[0]) not in own:
        notes.append(f"reference: {es.models[best_j]}, the best of the skeleton's models")
    choice, guarantee = _risk_controlled(search, cands, es, test, fit, cal, best_j, objective, pol, seed)
    if choice is None:
        notes.append("no setting passes the risk test; the reference model alone is the safe choice")
    return choice, guarantee, es.models[best_j]


def _choose_for_objective(
    search: _Search,
    cands: list[Candidate],
    es: EvalSet,
    test: BoolArray,
    fit: BoolArray,
    objective: Objective,
    pol: Policy,
    seed: int,
    randomise: bool,
    notes: list[str],
    ctx: ReplayContext,
    split_rule: dict[str, Any],
    complete: set[int],
) -> Tuning:
    """The first setting, in order of preference, that meets the objective on the training part
    with the margin (a cheaper single model preferred), a randomised boundary under a cost cap,
    and what the margin costs."""
    train = ~test
    q, c, which, row = search.flat()
    train_q = es.quality[fit].mean(axis=0)
    train_c = es.cost[fit].mean(axis=0)
    best_j = int(np.lexsort((train_c, -train_q))[0])
    reference = es.models[best_j]
    ref: FloatArray | None = None
    target: float | None = None
    if objective.target is not None:
        if objective.target == "best":
            target = float(train_q[best_j]) - objective.tolerance
            ref = es.quality[:, best_j]
        else:
            target = float(objective.target) - objective.tolerance
    # candidates in order of preference, checked exactly (with the margin) until one passes
    # (ties go to the shorter cascade)
    ntiers = np.array([len(search.settings[w][0]) for w in which])
    c_key = np.round(c, 12)  # sums in another order differ in the last bits
    q_key = np.round(q, 12)
    if objective.cost_cap is not None:
        feasible = np.flatnonzero(c <= objective.cost_cap)
        order = feasible[np.lexsort((ntiers[feasible], c_key[feasible], -np.round(q[feasible], 12)))]
    else:
        assert target is not None
        feasible = np.flatnonzero(q >= target - 1e-12)
        order = feasible[np.lexsort((ntiers[feasible], -np.round(q[feasible], 12), c_key[feasible]))]
    # every candidate in that order, not the first few thousand: more candidates put more near
    # misses first, and a cap then made an objective that fewer candidates met infeasible
    choice = None
    seen: set[tuple[int, float, float]] = set()
    for k in order:
        same = (int(which[k]), float(q_key[k]), float(c_key[k]))  # another threshold, the same outcome
        if same in seen:
            continue
        seen.add(same)
        s = search.setting(int(which[k]), int(row[k]), float(q[k]), float(c[k]))
        tmp = Tuning(cands, es, test, None, reference, target, [], 0)
        if _passes(train, tmp.arrays(s, train), tmp.thresholds(s), objective, ref, target, pol.on_exhausted):
            choice = s
            break
    if choice is None:
        notes.append("no setting meets the objective on the training part with the required margin")
    else:
        single = _cheaper_single(search, choice)
        if single is not None:
            notes.append(
                f"{cands[single.tiers[0]].spec.model} alone reaches {single.quality:.4f} on the training part"
                f" for {_usd(single.cost)}/query: chosen instead of a {len(choice.tiers)}-tier setting at"
                f" {choice.quality:.4f} for {_usd(choice.cost)}"
            )
            choice = single
    boundary: Boundary | None = None
    if choice is not None and objective.cost_cap is not None and randomise:
        tmp = Tuning(cands, es, test, None, reference, target, [], 0)
        boundary = _randomised_boundary(tmp, choice, train, objective, pol, seed)
        if boundary is not None:
            notes.append(boundary.note)
    # what the margin costs: the choice with no margin (confidence 0), for the user to weigh
    unmargined: Setting | None = None
    if objective.confidence > 0:
        free = replace(objective, confidence=0.0)
        for k in order[:50]:
            s = search.setting(int(which[k]), int(row[k]), float(q[k]), float(c[k]))
            tmp = Tuning(cands, es, test, None, reference, target, [], 0)
            if _passes(train, tmp.arrays(s, train), tmp.thresholds(s), free, ref, target, pol.on_exhausted):
                unmargined = s
                break
        if unmargined is not None and unmargined != choice:
            chosen = (
                f"{_usd(choice.cost)} at quality {choice.quality:.4f}"
                if choice is not None
                else "none passes"
            )
            notes.append(
                f"without the margin of {objective.confidence:g} standard errors: {_usd(unmargined.cost)} "
                f"per query at quality {unmargined.quality:.4f} on the training part (chosen: {chosen})"
            )
    return Tuning(
        cands,
        es,
        test,
        choice,
        reference,
        target,
        _frontier(search),
        len(q),
        notes,
        ctx,
        skeleton=pol,
        unmargined=unmargined,
        split=split_rule,
        boundary=boundary,
        _complete=complete,
    )


__all__ = [
    "Boundary",
    "Candidate",
    "Guarantee",
    "Objective",
    "Setting",
    "Target",
    "Tuning",
    "agreement_candidates",
    "candidates_from",
    "check_choices",
    "data_choices",
    "frontier_models",
    "raw_tiers",
    "sample_count_candidates",
    "tune",
]
