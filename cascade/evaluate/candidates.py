"""The tiers a tuner may use (:class:`Candidate`) and the helpers that build them, shared by
:mod:`cascade.evaluate.tune` and :mod:`cascade.learn.learned` (kept apart so neither imports
the other)."""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from cascade.errors import ConfigurationError
from cascade.evaluate.data import BoolArray, EvalSet
from cascade.evaluate.simulate import TierArrays
from cascade.outcomes import Outcomes
from cascade.policy import loader
from cascade.policy.schema import TierSpec


@dataclass
class Candidate:
    """A tier the tuner may use: its raw YAML (written back as is), the validated spec, and its
    simulated arrays with the scorer (``scored``; None when it has none) and without (``bare``:
    one sample, what it costs as the last tier)."""

    name: str
    raw: dict[str, Any]
    spec: TierSpec
    scored: TierArrays | None = None
    bare: TierArrays | None = None
    partners: tuple[str, ...] = ()


def slug(model: str) -> str:
    """A tier name from a model name (the characters a tier name allows)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")[:60] or "tier"


def validate_tier(raw: dict[str, Any]) -> TierSpec:
    """One raw tier checked as the policy loader checks it."""
    pol = loader.validate({"name": "candidate", "tiers": [raw]}, source="<candidate>")
    return pol.tiers[0]


# -- candidates ---------------------------------------------------------------------------------


def raw_tiers(path: str | Path) -> list[dict[str, Any]]:
    """The skeleton's tiers as written (``${VAR}`` kept), for writing back."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    tiers = data.get("tiers") if isinstance(data, dict) else None
    if not isinstance(tiers, list):
        raise ConfigurationError(f"{path}: no tiers")
    return [dict(t) for t in tiers]


def data_choices(data: Outcomes, limit: int = 3000) -> str:
    """The multiple-choice letters a file uses: from its references when they are letters, else from
    the recorded answers."""
    from cascade.scorers.answers import choice_letters

    refs = [r.reference for r in data.records[:limit]]
    if any(isinstance(v, str) and len(v.strip()) == 1 and v.strip().isalpha() for v in refs):
        return choice_letters(refs)  # the references say which letters exist
    from collections import Counter

    answers = [s[0].answer for r in data.records[:limit] for s in r.responses.values() if s]
    letters = Counter(a.strip().upper() for a in answers if a and len(a.strip()) == 1 and a.strip().isalpha())
    total = sum(letters.values())
    # a letter a model gave now and then is not an option: keep letters seen in >= 0.5% of answers
    return choice_letters([x for x, k in letters.items() if k >= max(2, 0.005 * total)])


def check_choices(raws: Sequence[dict[str, Any]], data: Outcomes, *, fill: bool) -> list[str]:
    """Tiers whose scorer reads ``answer: choice``: with ``fill``, those without ``choices:`` get the
    file's letter set; a ``choices:`` narrower than the file's letters is reported."""
    notes: list[str] = []
    letters: str | None = None
    for raw in raws:
        sc = raw.get("scorer")
        if not isinstance(sc, dict) or sc.get("answer") != "choice":
            continue
        letters = letters or data_choices(data)
        given = sc.get("choices")
        if given is None and fill:
            if letters != "ABCDE":
                sc["choices"] = letters
                notes.append(f"tier {raw.get('name')}: choices {letters} learned from the data")
        elif given is None:
            given = "ABCDE"
        if given is not None and set(letters) - set(str(given)):
            notes.append(
                f"tier {raw.get('name')}: the data uses letters {letters} but the scorer reads only"
                f" {given}: answers outside it are never read (set `choices: {letters}`)"
            )
    return notes


def candidates_from(
    raws: Sequence[dict[str, Any]],
    data: Outcomes,
    *,
    models: Sequence[str] | Literal["all"] | None = None,
) -> list[Candidate]:
    """The skeleton's tiers, plus one per extra model with the skeleton's first scorer."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for raw in raws:
        spec = validate_tier(raw)
        out.append(Candidate(spec.name, copy.deepcopy(raw), spec))
        seen.add(spec.model)
    if models:
        template = next((r for r in raws if r.get("scorer")), raws[0])
        wanted = data.models if models == "all" else list(models)
        for m in wanted:
            if m in seen:
                continue
            if m not in data.models:
                from cascade.registry import suggest

                raise ConfigurationError(
                    f"{data.path}: model {m!r} is not in the file{suggest(m, data.models)}"
                )
            raw = copy.deepcopy(template)
            raw["model"] = m
            raw["name"] = slug(m)
            raw.pop("threshold", None) if not raw.get("scorer") else None
            spec = validate_tier(raw)
            out.append(Candidate(spec.name, raw, spec))
            seen.add(m)
    names: set[str] = set()
    for c in out:  # unique tier names
        base, k = c.name, 2
        while c.name in names:
            c.name = f"{base}-{k}"
            k += 1
        c.raw["name"] = c.name
        names.add(c.name)
    return out


def agreement_candidates(base: Sequence[Candidate], pool: Sequence[str], partners: int) -> list[Candidate]:
    """For each self-consistency candidate whose model is in ``pool``: the same tier with votes
    added from every set of up to ``partners`` other pool models (one sample each)."""
    out: list[Candidate] = []
    for c in base:
        sc = c.raw.get("scorer") or {}
        if sc.get("kind") != "self_consistency" or c.spec.model not in pool:
            continue
        others = [m for m in pool if m != c.spec.model]
        for size in range(1, partners + 1):
            for group in itertools.combinations(others, size):
                raw = copy.deepcopy(c.raw)
                mixture = list(raw["scorer"].get("mixture") or [])
                mixture += [{"samples": 1, "model": m} for m in group]
                raw["scorer"] = {**raw["scorer"], "mixture": mixture}
                raw["name"] = slug("+".join([c.spec.model, *group]))
                spec = validate_tier(raw)
                out.append(Candidate(spec.name, raw, spec, partners=group))
    return out


def sample_count_candidates(base: Sequence[Candidate], counts: Sequence[int]) -> list[Candidate]:
    """Each self-consistency candidate again with fewer samples (``k`` in ``counts``, below its own);
    mixture sources of the same model (another prompt variant) are cut to the same count."""
    out: list[Candidate] = []
    for c in base:
        sc = c.raw.get("scorer") or {}
        if sc.get("kind") != "self_consistency" or c.partners:
            continue
        k0 = int(sc.get("k", 5))
        for k in sorted({int(k) for k in counts}):
            if not 1 <= k < k0:
                continue
            raw = copy.deepcopy(c.raw)
            raw["scorer"]["k"] = k
            for src in raw["scorer"].get("mixture") or []:
                if "model" not in src and "provider" not in src:
                    src["samples"] = min(int(src.get("samples", k)), k)
            raw["name"] = f"{c.name}-k{k}"
            spec = validate_tier(raw)
            out.append(Candidate(spec.name, raw, spec))
    return out


def frontier_models(es: EvalSet, rows: BoolArray, size: int, max_cost: float = math.inf) -> list[str]:
    """Up to ``size`` cheap voters worth asking (on ``rows``): the models on the quality/cost
    frontier that cost at most ``max_cost`` per query and reach the median model's quality, then
    the best-quality others under ``max_cost``."""
    q, c = es.quality[rows].mean(axis=0), es.cost[rows].mean(axis=0)
    floor = float(np.median(q))
    order = np.lexsort((-q, c))
    front: list[int] = []
    best = -math.inf
    for j in order:
        if q[j] > best:
            best = q[j]
            if c[j] <= max_cost and q[j] >= floor:
                front.append(int(j))
    rest = [int(j) for j in np.argsort(-q) if c[j] <= max_cost and int(j) not in front]
    chosen = (front + rest)[:size]
    return [es.models[j] for j in chosen]


__all__ = ["Candidate", "slug", "validate_tier"]
