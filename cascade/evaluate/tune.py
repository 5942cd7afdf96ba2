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

import copy
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from cascade.errors import ConfigurationError
from cascade.evaluate.candidates import Candidate
from cascade.evaluate.candidates import slug as _slug
from cascade.evaluate.candidates import validate_tier as _validate_tier
from cascade.evaluate.data import BoolArray, EvalSet, FloatArray
from cascade.evaluate.metrics import upper_hull
from cascade.evaluate.report import usd as _usd
from cascade.evaluate.simulate import Billing, ReplayContext, TierArrays, run, score_tier
from cascade.outcomes import Outcomes
from cascade.policy import loader
from cascade.policy.schema import Policy, TierSpec

Target = float | Literal["best"]


@dataclass(frozen=True)
class Objective:
    """``cost_cap`` (USD per query): maximise quality under it; ``target``: minimise cost while
    reaching it (``"best"`` = the best single model's quality). ``confidence``: the margin in
    standard errors on the training part."""

    cost_cap: float | None = None
    target: Target | None = None
    confidence: float = 1.0
    max_drop: float | None = None
    risk: float = 0.05
    calibration: float | None = None  # None: :func:`_calibration_share`

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.cost_cap, self.target, self.max_drop))
        if given != 1:
            raise ConfigurationError(
                "give exactly one objective: a cost cap, a target quality or a maximum drop"
            )
        if self.cost_cap is not None and not (math.isfinite(self.cost_cap) and self.cost_cap > 0):
            raise ConfigurationError(f"the cost cap must be a positive number of USD (got {self.cost_cap:g})")
        if isinstance(self.target, float | int) and not 0 <= self.target <= 1:
            raise ConfigurationError(f"the target quality must be between 0 and 1 (got {self.target:g})")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise ConfigurationError(f"the maximum drop must be in [0, 1) (got {self.max_drop:g})")
        if not 0 < self.risk < 1:
            raise ConfigurationError(f"the risk must be between 0 and 1 (got {self.risk:g})")
        if self.calibration is not None and not 0 < self.calibration < 1:
            raise ConfigurationError(
                f"the calibration share must be between 0 and 1 (got {self.calibration:g})"
            )
        if not (math.isfinite(self.confidence) and self.confidence >= 0):
            raise ConfigurationError(f"the confidence margin must be >= 0 (got {self.confidence:g})")


@dataclass(frozen=True)
class Setting:
    """One cascade: candidate indices (the last one answers without scorer) and thresholds."""

    tiers: tuple[int, ...]
    thresholds: tuple[float, ...]
    quality: float
    cost: float


@dataclass(frozen=True)
class Guarantee:
    """What ``--max-drop``/``--risk`` established (see :mod:`cascade.evaluate.risk`): the chosen
    setting's expected quality drop against ``reference`` is at most ``max_drop`` with probability
    at least ``1 - risk``, from ``calibration`` records the search never saw."""

    max_drop: float
    risk: float
    reference: str
    method: str
    calibration: int
    search: int
    tested: int
    rejected: int
    pvalue: float
    calibration_drop: float
    fallback: bool = False
    smallest: float = math.nan  # the smallest drop the calibration records can prove at this risk
    needed: int | None = None  # the calibration records the asked drop needs (None: too many)
    infeasible: bool = False  # too few records: nothing was searched

    def feasibility(self) -> str:
        """What the calibration size allows, said before the search."""
        need = f"at least {self.needed:,}" if self.needed is not None else "more than 100,000"
        return (
            f"{self.calibration} calibration records can prove an expected drop vs {self.reference} of"
            f" {self.smallest:.4g} at best at risk {self.risk:g} ({self.method} p-values, a setting that"
            f" never disagrees with it); a maximum drop of {self.max_drop:g} needs {need} records"
        )

    def sentence(self) -> str:
        if self.infeasible:
            return (
                f"infeasible: {self.feasibility()}. Nothing was searched: give more labelled records, a"
                f" larger --calibration share, a larger --max-drop or a larger --risk"
            )
        if self.fallback:
            return (
                f"no setting cheaper than {self.reference} passed the risk test"
                f" (max drop {self.max_drop:g},"
                f" risk {self.risk:g}, {self.calibration} calibration records;"
                f" first p-value {self.pvalue:.3g}):"
                f" {self.reference} alone, which loses nothing by definition"
            )
        return (
            f"expected quality drop vs {self.reference} <= {self.max_drop:g} with probability"
            f" >= {1 - self.risk:g} (Learn-then-Test, {self.method} p-values, fixed sequence;"
            f" {self.calibration} calibration records, {self.search} search records)"
        )


@dataclass(frozen=True)
class Boundary:
    """A randomised boundary on the chosen setting's tier ``pos`` (:mod:`cascade.scorers.boundary`):
    scores in ``[below, above)`` are accepted for a seeded share ``p`` of requests; the tier's
    threshold is ``above``. Used under a cost cap when the deterministic choice leaves budget unused."""

    pos: int
    below: float
    above: float
    p: float
    seed: int
    quality: float
    cost: float
    note: str = ""

    def apply(self, arrays: list[TierArrays], prompts: Sequence[str]) -> list[TierArrays]:
        """The arrays as the boundary scorer makes them (the same coin per prompt as live runs)."""
        from cascade.scorers.boundary import coin

        t = arrays[self.pos]
        u = np.array([coin(self.seed, p) for p in prompts])
        band = (t.score >= self.below) & (t.score < self.above) & (u < self.p)
        out = list(arrays)
        out[self.pos] = replace(t, score=np.where(band, self.above, t.score), threshold=self.above)
        return out


@dataclass
class Tuning:
    """What :func:`tune` found."""

    candidates: list[Candidate]
    evalset: EvalSet
    test: BoolArray
    choice: Setting | None
    reference: str
    target_quality: float | None
    frontier: list[Setting]
    settings_tried: int
    notes: list[str] = field(default_factory=list)
    ctx: ReplayContext | None = None
    skeleton: Policy | None = None
    unmargined: Setting | None = None
    split: dict[str, Any] = field(default_factory=dict)
    guarantee: Guarantee | None = None
    boundary: Boundary | None = None
    _complete: set[int] = field(default_factory=set)

    @property
    def train(self) -> BoolArray:
        return ~self.test

    def ensure(self, s: Setting) -> None:
        """Score the held-out rows of the setting's tiers (the search only scored the training rows)."""
        if self.ctx is None:
            return
        for pos, idx in enumerate(s.tiers):
            c = self.candidates[idx]
            last = pos == len(s.tiers) - 1
            key = -1 - idx if last else idx
            if key in self._complete:
                continue
            self._complete.add(key)
            records = self.evalset.records
            if last:
                assert c.bare is not None
                bare_spec = c.spec.model_copy(update={"scorer": None, "threshold": None})
                full = score_tier(bare_spec, records, self.ctx, rows=self.test, into=c.bare)
                for other_idx, other in enumerate(self.candidates):
                    if other.bare is c.bare:
                        other.bare = full
                        self._complete.add(-1 - other_idx)
            else:
                assert c.scored is not None
                c.scored = score_tier(c.spec, records, self.ctx, rows=self.test, into=c.scored)

    def arrays(self, s: Setting, rows: BoolArray) -> list[TierArrays]:
        if (rows & self.test).any():
            self.ensure(s)
        out: list[TierArrays] = []
        for pos, idx in enumerate(s.tiers):
            c = self.candidates[idx]
            t = c.bare if pos == len(s.tiers) - 1 else c.scored
            assert t is not None
            out.append(t.take(rows))
        return out

    def thresholds(self, s: Setting) -> list[float | None]:
        return [*s.thresholds, None]

    def policy_tiers(self, s: Setting) -> list[TierSpec]:
        return [self.candidates[i].spec for i in s.tiers]


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
        spec = _validate_tier(raw)
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
            raw["name"] = _slug(m)
            raw.pop("threshold", None) if not raw.get("scorer") else None
            spec = _validate_tier(raw)
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
                raw["name"] = _slug("+".join([c.spec.model, *group]))
                spec = _validate_tier(raw)
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
            spec = _validate_tier(raw)
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


# -- search -------------------------------------------------------------------------------------


@dataclass
class _Arr:
    """A tier's train arrays, ready for the fast two-tier path."""

    accept_score: FloatArray  # -inf where the tier cannot accept (no answer, scorer error)
    ok: BoolArray
    quality: FloatArray
    cost: FloatArray

    @classmethod
    def of(cls, t: TierArrays) -> _Arr:
        can = t.ok & ~t.scorer_error & ~np.isnan(t.score)
        return cls(
            np.where(can, t.score, -np.inf), t.ok, np.nan_to_num(t.quality), np.where(t.ok, t.cost, 0.0)
        )


def _two_tier(
    first: _Arr, last: _Arr, rows: BoolArray, fallback_q: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """All thresholds of ``first -> last`` on ``rows`` at once: (thresholds, quality sums, cost sums).

    ``fallback_q`` is what a record gets when the last tier has no answer (an earlier candidate)."""
    a = first.accept_score[rows]
    q1 = first.quality[rows]
    c1 = first.cost[rows]
    okl = last.ok[rows]
    ql = np.where(okl, last.quality[rows], np.where(first.ok[rows], q1, fallback_q[rows]))
    cl = last.cost[rows]
    order = np.argsort(-a, kind="stable")
    a_s = a[order]
    gain = np.cumsum((q1 - ql)[order])
    saved = np.cumsum(cl[order])
    # a cut after position i accepts every record with score >= a_s[i]; keep the last index of
    # each distinct finite score
    finite = np.isfinite(a_s)
    last_of = np.r_[a_s[1:] != a_s[:-1], True] & finite
    th = np.r_[a_s[last_of], np.inf]
    base_q, base_c = float(ql.sum()), float(c1.sum() + cl.sum())
    qs = np.r_[base_q + gain[last_of], base_q]
    cs = np.r_[base_c - saved[last_of], base_c]
    return th, qs, cs


def _levels(score: FloatArray, k: int) -> FloatArray:
    s = score[np.isfinite(score)]
    values = np.unique(s)
    if len(values) > k:
        values = np.unique(np.quantile(s, np.linspace(0, 1, k + 1)[1:]))
    out: FloatArray = np.r_[values, np.inf]
    return out


class _Search:
    def __init__(self, cands: list[Candidate], rows: BoolArray) -> None:
        self.cands = cands
        self.rows = rows
        self.n = int(rows.sum())
        self.scored = {i: _Arr.of(c.scored) for i, c in enumerate(cands) if c.scored is not None}
        self.bare = {i: _Arr.of(c.bare) for i, c in enumerate(cands) if c.bare is not None}
        self.cost = {i: float(a.cost[rows].mean()) for i, a in self.scored.items()}
        self.zero = np.zeros(len(rows))
        self.settings: list[tuple[tuple[int, ...], FloatArray, FloatArray, FloatArray]] = []
        # (tiers, thresholds (G, k-1), quality means (G,), cost means (G,))

    def singles(self) -> None:
        for i, a in self.bare.items():
            q = np.where(a.ok, a.quality, 0.0)[self.rows].mean()
            c = a.cost[self.rows].mean()
            self.settings.append(((i,), np.zeros((1, 0)), np.array([q]), np.array([c])))

    def pairs(self) -> None:
        for i, s in self.scored.items():
            for j in self.bare:
                if j == i or (
                    self.cands[j].spec.model == self.cands[i].spec.model and not self.cands[i].partners
                ):
                    continue
                th, qs, cs = _two_tier(s, self._after((i,), j), self.rows, self.zero)
                self.settings.append(((i, j), th[:, None], qs / self.n, cs / self.n))

    def _after(self, prefix: tuple[int, ...], j: int, scored: bool = False) -> _Arr:
        """Candidate ``j`` (scored or bare) costed after ``prefix``'s tiers: one call per model per
        request, samples bought earlier are reused (issue 9; :func:`routing.after`)."""
        from cascade.evaluate.routing import after

        return after(self.cands, self.scored if scored else self.bare, prefix, j, scored)

    def deeper(
        self, prefixes: Sequence[tuple[int, ...]], lasts: Sequence[int], firsts: Sequence[int], levels: int
    ) -> None:
        """Extend each prefix of scored tiers by one scored tier of ``firsts`` (costlier than the
        prefix's last) before each last tier."""
        for prefix in prefixes:
            for mid in firsts:
                if mid in prefix or self.cost[mid] <= self.cost[prefix[-1]]:
                    continue
                for j in lasts:
                    if j != mid and j not in prefix:
                        self._extend(prefix, mid, j, levels)

    def _extend(self, prefix: tuple[int, ...], mid: int, last: int, levels: int) -> None:
        # enumerate a grid over the prefix thresholds, then every threshold of `mid`
        arrs = [self._after(prefix[:k], i, scored=True) for k, i in enumerate(prefix)]
        mid_arr, last_arr = self._after(prefix, mid, scored=True), self._after((*prefix, mid), last)
        grids = [_levels(a.accept_score[self.rows], levels) for a in arrs]
        rows_all = self.rows
        ths: list[FloatArray] = []
        qs: list[FloatArray] = []
        cs: list[FloatArray] = []
        for combo in itertools.product(*grids):
            alive = rows_all.copy()
            q_acc = 0.0
            c_acc = 0.0
            fallback = np.zeros(len(rows_all))
            fb_set = np.zeros(len(rows_all), dtype=bool)
            for a, th in zip(arrs, combo, strict=True):
                c_acc += float(a.cost[alive].sum())
                acc = alive & (a.accept_score >= th)
                q_acc += float(a.quality[acc].sum())
                new_fb = alive & ~acc & a.ok & ~fb_set
                fallback = np.where(new_fb, a.quality, fallback)
                fb_set |= new_fb
                alive &= ~acc
            th2, q2, c2 = _two_tier(mid_arr, last_arr, alive, fallback)
            g = len(th2)
            ths.append(np.column_stack([np.tile(np.array(combo), (g, 1)), th2]))
            qs.append((q_acc + q2) / self.n)
            cs.append((c_acc + c2) / self.n)
        self.settings.append(
            ((*prefix, mid, last), np.concatenate(ths), np.concatenate(qs), np.concatenate(cs))
        )

    def flat(self) -> tuple[FloatArray, FloatArray, np.ndarray, np.ndarray]:
        """Every setting tried (a tier that never accepts is left out: the shorter cascade is cheaper)."""
        q = np.concatenate([s[2] for s in self.settings])
        c = np.concatenate([s[3] for s in self.settings])
        which = np.concatenate([np.full(len(s[2]), k) for k, s in enumerate(self.settings)])
        row = np.concatenate([np.arange(len(s[2])) for s in self.settings])
        finite = np.concatenate([np.isfinite(s[1]).all(axis=1) for s in self.settings])
        return q[finite], c[finite], which[finite], row[finite]

    def setting(self, which: int, row: int, q: float, c: float) -> Setting:
        tiers, th, _, _ = self.settings[which]
        return Setting(tiers, tuple(float(x) for x in th[row]), float(q), float(c))


def _usefulness(search: _Search, k: int) -> tuple[list[int], list[int]]:
    """Scored candidates and last tiers that appear most on the two-tier frontier."""
    q, c, _, _ = search.flat()
    xs, ys = upper_hull(c, q)
    score_first: dict[int, float] = {}
    score_last: dict[int, float] = {}
    for w in range(len(search.settings)):
        tiers, _, qs, cs = search.settings[w]
        if len(tiers) != 2:
            continue
        # how close this pair gets to the hull, at its best
        hull_q = np.interp(cs, xs, ys, left=ys[0], right=ys[-1])
        gap = float(np.max(qs - hull_q))
        score_first[tiers[0]] = max(score_first.get(tiers[0], -math.inf), gap)
        score_last[tiers[1]] = max(score_last.get(tiers[1], -math.inf), gap)
    firsts = sorted(score_first, key=lambda i: -score_first[i])[:k]
    lasts = sorted(score_last, key=lambda i: -score_last[i])[: max(4, k // 3)]
    return firsts, lasts


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
        return float(d.mean()) - z * se >= -1e-12
    se = float(r.quality.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return float(r.quality.mean()) - z * se >= target - 1e-12


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
    ``min_records`` records in the training or the held-out part is a :class:`ConfigurationError`."""
    pol = loader.load(skeleton)
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
    if artifacts is None and (classifiers > 0 or skip > 0):
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
    # with a risk target, the training part is cut once more: the search (and the order of the
    # settings to test) sees ``fit`` only; the p-values come from ``cal``
    fit, cal = train, np.zeros(len(train), dtype=bool)
    if objective.max_drop is not None:
        idx = np.flatnonzero(train)
        share = objective.calibration or _calibration_share(es, train, objective)
        picked = np.random.default_rng(seed + 1).permutation(len(idx))[: round(len(idx) * share)]
        cal = np.zeros(len(train), dtype=bool)
        cal[idx[picked]] = True
        fit = train & ~cal
        if int(fit.sum()) < 2 or int(cal.sum()) < 2:
            raise ConfigurationError(f"{data.path}: too few training records to keep a calibration part")
        reach = _feasibility(es, cands, train, cal, objective)
        notes.append(f"risk test: {reach.feasibility()}")
        if reach.infeasible:
            split_rule = {"split": split, "seed": seed, "test_fraction": test_fraction}
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

    if classifiers > 0:
        from cascade.learn.learned import classifier_candidates

        clf_models = frontier_models(es, fit, classifiers, cap)
        assert artifacts is not None
        folder = Path(artifacts)
        cands += classifier_candidates(cands, es, data, train, clf_models, folder, seed=seed)
        notes.append(
            f"classifiers trained (training part only) for: {', '.join(clf_models)}; artifacts in {folder}"
        )
    if skip > 0:  # issue 9: ex-ante skip; skip thresholds are searched with the accept thresholds
        from cascade.evaluate.routing import skip_candidates

        skip_models = frontier_models(es, fit, skip, cap)
        assert artifacts is not None
        folder = Path(artifacts)
        more, skip_notes = skip_candidates(cands, es, data, fit, skip_models, folder, seed=seed)
        cands += more
        notes += skip_notes
    search = _Search(cands, fit)
    search.singles()
    if depth >= 2:
        search.pairs()
    if depth >= 3:
        firsts, lasts = _usefulness(search, breadth)
        search.deeper([(i,) for i in firsts], lasts, firsts, levels)
        for d in range(4, depth + 1):
            q, c, which, _ = search.flat()
            best_prefixes: list[tuple[int, ...]] = []
            for w in np.argsort(-q)[: 4 * breadth]:
                t = search.settings[which[w]][0]
                if len(t) == d - 1 and t[:-1] not in best_prefixes:
                    best_prefixes.append(t[:-1])
            search.deeper(best_prefixes[:breadth], lasts, firsts, max(3, levels // 2))

    q, c, which, row = search.flat()
    train_q = es.quality[fit].mean(axis=0)
    train_c = es.cost[fit].mean(axis=0)
    best_j = int(np.lexsort((train_c, -train_q))[0])
    reference = es.models[best_j]
    ref: FloatArray | None = None
    target: float | None = None
    split_rule = {"split": split, "seed": seed, "test_fraction": test_fraction}
    if objective.max_drop is not None:
        # the reference: the best model on the whole training part (a small search part would pick
        # it by luck; choosing it with the calibration records only makes the tests more
        # conservative, since its luck there inflates every drop), among the models the policy can
        # fall back to
        all_q, all_c = es.quality[train].mean(axis=0), es.cost[train].mean(axis=0)
        own = sorted({es.column(k.spec.model) for k in cands if k.bare is not None and not k.partners})
        best_j = _risk_reference(es, own, train)
        if own and int(np.lexsort((all_c, -all_q))[0]) not in own:
            notes.append(f"reference: {es.models[best_j]}, the best of the skeleton's models")
        reference = es.models[best_j]
        choice: Setting | None
        choice, guarantee = _risk_controlled(search, cands, es, test, fit, cal, best_j, objective, pol, seed)
        guarantee = replace(guarantee, smallest=reach.smallest, needed=reach.needed)
        if choice is None:
            notes.append("no setting passes the risk test; the reference model alone is the safe choice")
        return Tuning(
            cands,
            es,
            test,
            choice,
            reference,
            None,
            _frontier(search),
            len(q),
            notes,
            ctx,
            skeleton=pol,
            split=split_rule,
            guarantee=guarantee,
            _complete=complete,
        )
    if objective.target is not None:
        if objective.target == "best":
            target = float(train_q[best_j])
            ref = es.quality[:, best_j]
        else:
            target = float(objective.target)
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


__all__ = [
    "Candidate",
    "Objective",
    "Setting",
    "Tuning",
    "agreement_candidates",
    "candidates_from",
    "frontier_models",
    "raw_tiers",
    "sample_count_candidates",
    "tune",
]
