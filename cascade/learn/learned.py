"""Learned candidates for the tuner: per cheap model, a confidence classifier and a combined
verifier (:mod:`cascade.scorers.verifier`: text features, agreement with the other cheap models,
the arithmetic check), trained on the training part only, with out-of-fold scores so the
thresholds are not tuned on the very records the scorer learned from.

For each model, the training records are cut into ``folds`` by a hash of the prompt; each record's
score comes from a scorer fit on the other folds. The artifact written for the policy is
cross-fit: the model fit on every training record, plus the fold models, and a prompt is scored by
its fold's model, so the thresholds chosen on out-of-fold scores transfer; the held-out records are
scored with it, through the real scorer
(:class:`~cascade.scorers.classifier.ClassifierScorer`, :class:`~cascade.scorers.verifier.VerifierScorer`).

A verifier calls its partner models when it scores: its training-part cost (and the samples it
buys, which later tiers reuse) comes from running the real scorer there (``rescore``), only its
scores from the out-of-fold models; a classifier calls nothing, so it costs what its tier does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.evaluate.candidates import Candidate
from cascade.evaluate.candidates import slug as _slug
from cascade.evaluate.candidates import validate_tier as _validate_tier
from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.learn.classifier import Classifier, Example
from cascade.logging import get_logger
from cascade.outcomes import Outcomes
from cascade.policy.schema import TierSpec

if TYPE_CHECKING:
    from cascade.evaluate.simulate import TierArrays

Rescore = Callable[[TierSpec], "TierArrays"]
"""A learned candidate's tier run through its real scorer on the training rows (cost, calls)."""


def _out_of_fold(
    rows: Sequence[Example | None],
    train: BoolArray,
    fit: Callable[[list[Example]], Classifier],
    folds: int,
) -> tuple[FloatArray, Classifier] | None:
    """Out-of-fold probabilities on the training rows and the cross-fit model that reproduces
    them: the model fit on all of them, scoring each prompt with the model of the other folds
    (:func:`~cascade.learn.classifier.fold_of`), so new prompts get scores from the distribution the
    thresholds were tuned on (issue 20 §2: the refit model alone accepted 57% of the held-out half
    at a threshold that accepts 70% out of fold)."""
    from cascade.learn.classifier import fold_of

    tr = [int(i) for i in np.flatnonzero(train) if rows[int(i)] is not None]
    if len(tr) < 40 or len({rows[i].label for i in tr}) < 2:  # type: ignore[union-attr]
        return None
    ex = [e for e in (rows[i] for i in tr) if e is not None]
    fold = [fold_of(e.prompt, folds) for e in ex]
    labels = [{e.label for e, f in zip(ex, fold, strict=True) if f != g} for g in range(folds)]
    if len(set(fold)) < folds or any(len(seen) < 2 for seen in labels):  # every fold model needs both
        return None
    oof = np.full(len(rows), np.nan)
    models = []
    for f in range(folds):
        model = fit([e for e, g in zip(ex, fold, strict=True) if g != f])
        models.append(model)
        for i, e, g in zip(tr, ex, fold, strict=True):
            if g == f:
                oof[i] = model.predict(e.prompt, e.samples, e.extra)[0]
    return oof, fit(ex).cross_fit(models)


def _candidate(
    base: Candidate,
    scorer: dict[str, Any],
    suffix: str,
    train: BoolArray,
    oof: FloatArray,
    rescore: Rescore | None = None,
) -> Candidate:
    """The learned tier as a candidate: its out-of-fold scores on the training rows, on the arrays
    of its real scoring there (``rescore``: a scorer that calls models) or else its bare tier's."""
    assert base.bare is not None
    raw = copy.deepcopy(base.raw)
    raw["scorer"] = scorer
    raw["threshold"] = 0.5
    raw["name"] = f"{base.name}-{suffix}"
    raw.pop("skip", None)
    spec = _validate_tier(raw)
    score = np.where(train, oof, np.nan)
    arrays = base.bare
    if rescore is not None:
        arrays = rescore(spec)
        score = np.where(arrays.scorer_error, np.nan, score)  # where the real scorer fails, none
    scored = replace(arrays, name=spec.name, has_scorer=True, threshold=0.5, score=score)
    return Candidate(spec.name, raw, spec, scored=scored, bare=base.bare)


def classifier_candidates(
    cands: Sequence[Candidate],
    es: EvalSet,
    data: Outcomes,
    train: BoolArray,
    models: Sequence[str],
    folder: Path,
    *,
    folds: int = 2,
    seed: int = 0,
    verifiers: bool = True,
    rescore: Rescore | None = None,
) -> list[Candidate]:
    """Per model in ``models``: the model with a trained classifier scorer, and (``verifiers``)
    with a trained verifier over its text, the arithmetic check and agreement with up to two other
    models of ``models``."""
    from cascade.learn.verifier import train_verifier, verifier_examples
    from cascade.scorers import classifier
    from cascade.scorers.verifier import VerifierOptions

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Candidate] = []
    for m in models:
        base = next((c for c in cands if c.spec.model == m and not c.partners and c.bare is not None), None)
        if base is None or base.bare is None:
            continue
        by_id = {e.id: e for e in classifier.examples_from_outcomes(data, m)}
        meta = classifier.trained_for(m, data)  # what the artifact is for: checked when it is loaded
        got = _out_of_fold(
            [by_id.get(r.id) for r in es.records],
            train,
            lambda ex: classifier.train(ex, lams=(2e-4,), folds=2, seed=seed, meta=meta),  # noqa: B023
            folds,
        )
        if got is None:
            continue
        oof, final = got
        path = (folder / f"{_slug(m)}.classifier.json").resolve()
        final.save(path)
        out.append(_candidate(base, {"kind": "classifier", "path": str(path)}, "clf", train, oof))
        if not verifiers:
            continue
        sc = (base.raw.get("scorer") or {}) if isinstance(base.raw.get("scorer"), dict) else {}
        answer = sc.get("answer", "text") if sc.get("kind") == "self_consistency" else "text"
        partners = [p for p in models if p != m][:2]
        vpath = (folder / f"{_slug(m)}.verifier.json").resolve()
        scorer: dict[str, Any] = {
            "kind": "verifier",
            "path": str(vpath),
            "k": 1,
            "answer": answer,
            "partners": [{"samples": 1, "model": p} for p in partners],
            "checks": ["arithmetic"],
        }
        options = VerifierOptions(**{k: v for k, v in scorer.items() if k != "kind"})
        ids = {r.id for r, t in zip(es.records, train, strict=True) if t}
        examples, names = verifier_examples(options, data, m, ids=ids, base_dir=folder)
        vby_id = {e.id: e for e in examples}
        vgot = _out_of_fold(
            [vby_id.get(r.id) for r in es.records],
            train,
            lambda ex: train_verifier(ex, names, seed=seed, meta={**meta, "answer": answer}),  # noqa: B023
            folds,
        )
        if vgot is None:
            continue
        voof, vfinal = vgot
        vfinal.save(vpath)
        out.append(_candidate(base, scorer, "ver", train, voof, rescore if partners else None))
        get_logger().info("tune_verifier_candidate", model=m, partners=len(partners), inputs=len(names))
    return out


__all__ = ["classifier_candidates"]
