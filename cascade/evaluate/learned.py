"""Classifier candidates for the tuner: a confidence classifier per cheap model, trained on the
training part only, with out-of-fold scores so the thresholds are not tuned on the very records
the classifier learned from.

For each model, the training records are cut into ``folds``; each record's score comes from a
classifier fit on the other folds. The artifact written for the policy is fit on every training
record; the held-out records are scored with it, through the real
:class:`~cascade.scorers.classifier.ClassifierScorer`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cascade.evaluate.candidates import Candidate
from cascade.evaluate.candidates import slug as _slug
from cascade.evaluate.candidates import validate_tier as _validate_tier
from cascade.evaluate.data import BoolArray, EvalSet
from cascade.outcomes import Outcomes


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
) -> list[Candidate]:
    """One candidate per model in ``models``: the model with a trained classifier scorer."""
    from cascade.scorers import classifier

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Candidate] = []
    n = len(es)
    for m in models:
        base = next((c for c in cands if c.spec.model == m and not c.partners and c.bare is not None), None)
        if base is None or base.bare is None:
            continue
        by_id = {e.id: e for e in classifier.examples_from_outcomes(data, m)}
        rows = [by_id.get(r.id) for r in es.records]
        tr = [int(i) for i in np.flatnonzero(train) if rows[int(i)] is not None]
        labels = {rows[i].label for i in tr}  # type: ignore[union-attr]
        if len(tr) < 40 or len(labels) < 2:
            continue
        order = np.random.default_rng(seed).permutation(len(tr))
        oof = np.full(n, np.nan)
        for f in range(folds):
            fit = [rows[tr[k]] for k in order if k % folds != f]
            model = classifier.train([e for e in fit if e is not None], lams=(2e-4,), folds=2, seed=seed)
            for k in order:
                if k % folds == f:
                    e = rows[tr[k]]
                    assert e is not None
                    oof[tr[k]] = model.predict(e.prompt, e.samples)[0]
        final = classifier.train(
            [e for e in (rows[i] for i in tr) if e is not None], lams=(2e-4,), folds=2, seed=seed
        )
        path = (folder / f"{_slug(m)}.classifier.json").resolve()
        final.save(path)
        raw = copy.deepcopy(base.raw)
        raw["scorer"] = {"kind": "classifier", "path": str(path)}
        raw["threshold"] = 0.5
        raw["name"] = f"{base.name}-clf"
        spec = _validate_tier(raw)
        scored = replace(
            base.bare,
            name=spec.name,
            has_scorer=True,
            threshold=0.5,
            score=np.where(train, oof, np.nan),
        )
        out.append(Candidate(spec.name, raw, spec, scored=scored, bare=base.bare))
    return out


__all__ = ["classifier_candidates"]
