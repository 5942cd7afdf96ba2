"""Simulate a cascade over recorded outcomes, calling nothing.

Two steps. :func:`score_tier` runs each tier once per record through the *real* provider and
scorer code (a :class:`~cascade.providers.replay.ReplayProvider` answers from the file; the
tier's scorer scores the recorded samples, its own calls included) and keeps three numbers per
record: the score, the quality label of the sample the cascade would return, and the billed cost
(call plus scoring). :func:`run` and :func:`sweep` then play the engine's decision rule over those
arrays with numpy, for one set of thresholds or thousands at once, so threshold sweeps and tuning
cost milliseconds.

The decision rule is the engine's (:mod:`cascade.engine.loop`): a tier that cannot answer
escalates at no cost; a scorer error escalates; a score at or above the threshold is accepted; a
last tier without scorer always accepts; when nothing is accepted, ``return_best`` returns the
best-scored answer (ties to the later tier), ``return_last`` the last one, ``raise`` nothing
(quality 0), and ``on_unverified: abstain`` nothing either: :func:`run` marks those records
``abstained`` (no answer, quality 0, everything spent still counted).

**One call per model per request**, as the engine does: every provider call a tier makes (its
own, a voter's, a mixture source's, a partner's) is metered by call key (provider, model,
options, parameters and the prompt template), and when a later tier needs samples of a key an
earlier tier already bought, it pays only for the missing ones (pro rata per sample; see
:func:`chain_costs`). **Ex-ante skip**: a tier with ``skip:`` (a prompt-only estimator) is not
called where the estimate is below its threshold (zero cost, outcome ``skipped``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cascade.engine.build import BuildContext
from cascade.errors import ProviderError, ScorerError
from cascade.evaluate.data import BoolArray, FloatArray
from cascade.outcomes import Outcomes, Record
from cascade.policy.schema import TierSpec
from cascade.protocols import Provider
from cascade.providers.replay import ReplayProvider
from cascade.request import Request
from cascade.types import Completion, Usage

Billing = Literal["auto", "recorded", "prompt_once"]
OnExhausted = Literal["return_last", "return_best", "raise"]
OnUnverified = Literal["answer", "abstain"]
# providers that bill the prompt once for n samples (OpenAI-style ``n=``)
PROMPT_ONCE_PROVIDERS = frozenset({"openai", "openai_compatible", "vllm", "azure_openai", "scripted"})


@dataclass(frozen=True)
class TierArrays:
    """One tier's simulated outcome on every record (arrays of equal length).

    ``score`` is NaN where the tier has no scorer or the scorer failed (``scorer_error``);
    ``quality`` is the label of the sample the cascade would return; ``cost`` is the call plus the
    scoring; ``ok`` is false where the model has no recorded answer (the call fails, costs 0) or
    the tier is ``skipped`` (its prompt-only estimate is below the skip threshold).
    ``calls`` breaks the cost down by call key (samples bought, cost per record; the rest of
    ``cost`` is scoring that buys no samples), so a later tier can reuse what this one bought.
    """

    name: str
    model: str
    has_scorer: bool
    threshold: float | None
    score: FloatArray
    quality: FloatArray
    cost: FloatArray
    scorer_cost: FloatArray
    ok: BoolArray
    scorer_error: BoolArray
    calls: Mapping[str, tuple[np.ndarray, FloatArray]] = field(default_factory=dict)
    skipped: BoolArray | None = None
    skip_score: FloatArray | None = None
    skip_threshold: float | None = None

    def take(self, rows: BoolArray | np.ndarray) -> TierArrays:
        """The same tier on a subset of records (a mask or indices)."""
        return replace(
            self,
            score=self.score[rows],
            quality=self.quality[rows],
            cost=self.cost[rows],
            scorer_cost=self.scorer_cost[rows],
            ok=self.ok[rows],
            scorer_error=self.scorer_error[rows],
            calls={k: (n[rows], c[rows]) for k, (n, c) in self.calls.items()},
            skipped=None if self.skipped is None else self.skipped[rows],
            skip_score=None if self.skip_score is None else self.skip_score[rows],
        )

    def with_skip(self, estimate: FloatArray, threshold: float) -> TierArrays:
        """This tier behind a skip rule: where ``estimate < threshold`` it is not called (no
        answer, no cost, nothing bought)."""
        skip = np.asarray(estimate) < threshold
        keep = ~skip
        return replace(
            self,
            score=np.where(skip, np.nan, self.score),
            cost=np.where(skip, 0.0, self.cost),
            scorer_cost=np.where(skip, 0.0, self.scorer_cost),
            ok=self.ok & keep,
            scorer_error=self.scorer_error & keep,
            calls={k: (np.where(skip, 0, n), np.where(skip, 0.0, c)) for k, (n, c) in self.calls.items()},
            skipped=skip,
            skip_score=np.asarray(estimate, dtype=np.float64),
            skip_threshold=threshold,
        )

    @property
    def mean_cost(self) -> float:
        return float(self.cost[self.ok].mean()) if self.ok.any() else 0.0


def replay_provider(spec: TierSpec, data: Outcomes, billing: Billing = "auto") -> ReplayProvider:
    """A replay provider answering as ``spec`` would, from ``data``.

    A replay tier keeps its ``variant`` and ``billing`` options; any other provider is replayed
    with the billing of its kind (prompt once for ``n`` samples with OpenAI-style APIs, separate
    calls otherwise) unless ``billing`` says otherwise."""
    variant = spec.options.get("variant") if spec.provider == "replay" else None
    if billing == "auto":
        if spec.provider == "replay":
            mode = spec.options.get("billing", "recorded")
        else:
            mode = "prompt_once" if spec.provider in PROMPT_ONCE_PROVIDERS else "recorded"
    else:
        mode = billing
    return ReplayProvider(data, spec.model, variant=variant, billing=mode)


class ReplayContext(BuildContext):
    """A build context whose providers answer from ``data``: every tier, and every provider a
    scorer builds (mixture sources), is replayed when its model is in the file. Anything else (a
    replay judge reading recorded verdicts) is built as usual."""

    def __init__(self, base_dir: Path, data: Outcomes, billing: Billing = "auto") -> None:
        super().__init__(base_dir)
        self.data = data
        self.billing: Billing = billing
        self._models = set(data.models)
        self._cache: dict[tuple[str, str, Any, Any], ReplayProvider] = {}
        self.log: list[tuple[str, int, float]] = []  # (call key, samples, cost) of the current record
        self.prompt = ""  # the current record's prompt (call keys hold the template, not the text)

    def build_provider(self, spec: TierSpec) -> Provider:
        if spec.model in self._models and spec.provider != "replay_judge":
            key = (spec.provider, spec.model, spec.options.get("variant"), spec.options.get("billing"))
            if key not in self._cache:
                self._cache[key] = replay_provider(spec, self.data, self.billing)
            return _Metered(self._cache[key], spec, self)
        return super().build_provider(spec)

    def begin(self, prompt: str) -> None:
        """Start metering the calls of one record."""
        self.log = []
        self.prompt = prompt


def _call_key(spec: TierSpec, ctx: ReplayContext, request: Request) -> str:
    """What makes two calls the same call: provider, model, options, parameters, prompt template."""
    text = json.dumps([[m.role, m.content] for m in request.messages]).replace(
        json.dumps(ctx.prompt)[1:-1], "{prompt}"
    )
    opts = {k: v for k, v in spec.options.items() if k != "path"}
    params = spec.params.model_dump(exclude_defaults=True, mode="json")
    digest = hashlib.sha256(json.dumps([opts, params, text], sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec.provider}:{spec.model}:{digest}"


class _Metered:
    """A replayed provider that logs every call (key, samples, cost) in its context."""

    def __init__(self, inner: ReplayProvider, spec: TierSpec, ctx: ReplayContext) -> None:
        self.inner = inner
        self.spec = spec
        self.ctx = ctx
        self._price: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _log(self, request: Request, n: int, got: Completion) -> Completion:
        if got.cost is not None:
            cost = got.cost
        else:
            if self._price is None:
                self._price = self.ctx.price(self.spec, self.inner)
            cost = self._price.cost(got.usage)
        self.ctx.log.append((_call_key(self.spec, self.ctx, request), n, float(cost)))
        return got

    def complete(self, request: Request, n: int = 1) -> Completion:
        return self._log(request, n, self.inner.complete(request, n))

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        return self._log(request, n, await self.inner.acomplete(request, n))

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return self.inner.max_usage(request, n)


def score_tier(
    spec: TierSpec,
    records: Sequence[Record],
    ctx: ReplayContext,
    *,
    rows: BoolArray | None = None,
    into: TierArrays | None = None,
    progress: Callable[[int], None] | None = None,
) -> TierArrays:
    """Run ``spec`` (its provider replayed from the context's file, its real scorer) on every record
    (or only on ``rows``, the others left unanswered; ``into`` fills those rows of earlier arrays)."""
    ctx.tier = spec
    prov = ctx.build_provider(spec)
    price = ctx.price(spec, prov)
    scorer = ctx.build_scorer(spec.scorer) if spec.scorer is not None else None
    ctx.tier = None
    n_samples = int(getattr(scorer, "samples", 1)) if scorer is not None else 1
    n = len(records)
    skip = getattr(spec, "skip", None)
    estimate: FloatArray | None = None
    if skip is not None:  # a prompt-only estimator decides, before the call, whether to call
        from cascade.learn.estimator import load_prompt_estimator

        est = load_prompt_estimator(ctx.path(_get(skip, "artifact")))
        if into is not None and into.skip_score is not None:
            estimate = into.skip_score.copy()
        else:
            estimate = np.full(n, np.nan)
        todo_est = np.arange(n) if rows is None else np.flatnonzero(rows)
        estimate[todo_est] = est.predict_many([records[int(i)].prompt for i in todo_est])
    calls: dict[str, tuple[np.ndarray, FloatArray]] = {}
    if into is not None:
        calls = {k: (c[0].copy(), c[1].copy()) for k, c in into.calls.items()}
    if into is not None:
        score, quality, cost = into.score.copy(), into.quality.copy(), into.cost.copy()
        scorer_cost, ok, scorer_error = into.scorer_cost.copy(), into.ok.copy(), into.scorer_error.copy()
    else:
        score = np.full(n, np.nan)
        quality = np.full(n, np.nan)
        cost = np.zeros(n)
        scorer_cost = np.zeros(n)
        ok = np.zeros(n, dtype=bool)
        scorer_error = np.zeros(n, dtype=bool)
    todo = range(n) if rows is None else np.flatnonzero(rows).tolist()
    for i in todo:
        record = records[i]
        request = Request.of(record.prompt, metadata={"id": record.id})
        ctx.begin(record.prompt)
        try:
            completion = prov.complete(request, n_samples)
        except ProviderError:
            continue
        ok[i] = True
        call = completion.cost if completion.cost is not None else price.cost(completion.usage)
        chosen = 0
        if scorer is not None:
            try:
                s = scorer.score(request, completion)
            except (ScorerError, ProviderError):
                scorer_error[i] = True
            else:
                score[i] = s.value
                scorer_cost[i] = float(s.cost)
                if 0 <= s.chosen < len(completion.samples):
                    chosen = s.chosen
        q = completion.samples[chosen].quality if completion.samples else None
        quality[i] = np.nan if q is None else q
        cost[i] = float(call) + scorer_cost[i]
        for key, k, c in ctx.log:
            if key not in calls:
                calls[key] = (np.zeros(n, dtype=np.int64), np.zeros(n))
            calls[key][0][i] += k
            calls[key][1][i] += c
        if progress is not None:
            progress(1)
    out = TierArrays(
        name=spec.name,
        model=spec.model,
        has_scorer=scorer is not None,
        threshold=spec.threshold,
        score=score,
        quality=quality,
        cost=cost,
        scorer_cost=scorer_cost,
        ok=ok,
        scorer_error=scorer_error,
        calls=calls,
    )
    if estimate is not None and skip is not None:
        out = out.with_skip(estimate, float(_get(skip, "threshold")))
    elif into is not None and into.skip_score is not None and into.skip_threshold is not None:
        out = out.with_skip(into.skip_score, into.skip_threshold)  # a tuner's skip candidate
    return out


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def chain_costs(tiers: Sequence[TierArrays]) -> list[FloatArray]:
    """Each tier's cost per record when every earlier tier was called first (as in a cascade: a
    record reaches tier ``i`` only through tiers ``0..i-1``): samples of a call key an earlier
    tier bought are reused, so only the missing ones are paid (pro rata per sample; a top-up
    that re-sends the prompt costs a little more live). Without shared keys, the tiers' own costs."""
    out: list[FloatArray] = []
    bought: dict[str, np.ndarray] = {}
    for t in tiers:
        if not any(k in bought for k in t.calls):
            out.append(t.cost)
        else:
            own = sum((c for _, c in t.calls.values()), np.zeros(len(t.cost)))
            rest = np.maximum(t.cost - own, 0.0)
            eff = rest.copy()
            for key, (k, c) in t.calls.items():
                have = bought.get(key)
                if have is None:
                    eff += c
                else:
                    missing = np.maximum(k - have, 0)
                    eff += np.where(k > 0, c * missing / np.maximum(k, 1), 0.0)
            out.append(np.where(t.ok, eff, 0.0))
        for key, (k, _) in t.calls.items():
            prev = bought.get(key)
            got = np.where(t.ok, k, 0)
            bought[key] = got if prev is None else np.maximum(prev, got)
    return out


@dataclass(frozen=True)
class Run:
    """A simulated cascade on every record: what it returned and what it spent.

    ``answered`` is the index of the tier whose answer was returned (-1: none); ``accepted`` is
    whether that answer cleared its threshold; ``reached[:, i]`` whether tier ``i`` was called;
    ``outcome[:, i]`` what happened there: 0 not reached, 1 accepted, 2 low score, 3 no answer
    (provider error), 4 scorer error, 5 skipped (the prompt-only estimate was below threshold).
    ``cost`` counts each call once per request (see :func:`chain_costs`). ``abstained``: records
    given no answer under ``on_unverified: abstain`` (``answered`` -1, quality 0).
    """

    quality: FloatArray
    cost: FloatArray
    answered: np.ndarray
    accepted: BoolArray
    reached: BoolArray
    outcome: np.ndarray
    abstained: BoolArray


NOT_REACHED, ACCEPTED, LOW_SCORE, NO_ANSWER, SCORER_ERROR, SKIPPED = range(6)
OUTCOME_NAMES = ("not reached", "accepted", "low score", "no answer", "scorer error", "skipped")


def _thresholds(tiers: Sequence[TierArrays], thresholds: Sequence[float | None] | None) -> list[float | None]:
    if thresholds is None:
        return [t.threshold if t.has_scorer else None for t in tiers]
    if len(thresholds) != len(tiers):
        raise ValueError("one threshold (or None) per tier")
    return list(thresholds)


def run(
    tiers: Sequence[TierArrays],
    thresholds: Sequence[float | None] | None = None,
    on_exhausted: OnExhausted = "return_best",
    on_unverified: OnUnverified = "answer",
) -> Run:
    """Play the cascade once (thresholds default to the tiers' own); under ``on_unverified:
    abstain`` the records no tier accepted get no answer (``Run.abstained``)."""
    ths = _thresholds(tiers, thresholds)
    abstain = on_unverified == "abstain"
    if abstain:
        on_exhausted = "raise"  # nothing is returned; the records are marked below
    n = len(tiers[0].cost)
    alive = np.ones(n, dtype=bool)
    quality = np.zeros(n)
    cost = np.zeros(n)
    answered = np.full(n, -1)
    accepted = np.zeros(n, dtype=bool)
    reached = np.zeros((n, len(tiers)), dtype=bool)
    outcome = np.zeros((n, len(tiers)), dtype=np.int8)
    best_s = np.full(n, -np.inf)
    best_q = np.zeros(n)
    best_i = np.full(n, -1)
    last_q = np.zeros(n)
    last_i = np.full(n, -1)
    costs = chain_costs(tiers)
    for i, (t, th) in enumerate(zip(tiers, ths, strict=True)):
        reach = alive.copy()
        reached[:, i] = reach
        cost += np.where(reach & t.ok, costs[i], 0.0)
        if th is None or not t.has_scorer:
            acc = reach & t.ok
        else:
            acc = reach & t.ok & ~t.scorer_error & (t.score >= th)
        quality = np.where(acc, t.quality, quality)
        answered = np.where(acc, i, answered)
        accepted |= acc
        outcome[reach, i] = LOW_SCORE
        outcome[reach & ~t.ok, i] = NO_ANSWER
        outcome[reach & t.ok & t.scorer_error, i] = SCORER_ERROR
        if t.skipped is not None:
            outcome[reach & t.skipped, i] = SKIPPED
        outcome[acc, i] = ACCEPTED
        cand = reach & t.ok & ~acc
        s_eff = np.where(t.scorer_error | np.isnan(t.score), -1.0, t.score)
        upd = cand & (s_eff >= best_s)
        best_s = np.where(upd, s_eff, best_s)
        best_q = np.where(upd, t.quality, best_q)
        best_i = np.where(upd, i, best_i)
        last_q = np.where(cand, t.quality, last_q)
        last_i = np.where(cand, i, last_i)
        alive &= ~acc
    if on_exhausted == "return_best":
        quality = np.where(alive, best_q, quality)
        answered = np.where(alive, best_i, answered)
    elif on_exhausted == "return_last":
        quality = np.where(alive, last_q, quality)
        answered = np.where(alive, last_i, answered)
    else:
        quality = np.where(alive, 0.0, quality)
    quality = np.where(answered < 0, 0.0, quality)
    # the engine abstains only when some tier answered (every tier failing is an error there)
    answers = reached & np.stack([t.ok for t in tiers], axis=1)
    abstained = alive & answers.any(axis=1) if abstain else np.zeros(n, dtype=bool)
    return Run(np.nan_to_num(quality), cost, answered, accepted, reached, outcome, abstained)


def sweep(
    tiers: Sequence[TierArrays],
    grid: np.ndarray,
    on_exhausted: OnExhausted = "return_best",
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Play the cascade for every row of ``grid`` (``(G, len(tiers))`` thresholds; NaN or -inf for
    a tier that accepts everything, as the last tier without scorer does).

    Returns per-record ``quality`` and ``cost`` as ``(G, n)`` arrays and ``(G, n)`` share of
    calls reaching the last tier (the "strong model" calls of a weak/strong pair)."""
    g = grid.shape[0]
    n = len(tiers[0].cost)
    alive = np.ones((g, n), dtype=bool)
    quality = np.zeros((g, n))
    cost = np.zeros((g, n))
    best_s = np.full((g, n), -np.inf)
    best_q = np.zeros((g, n))
    last_q = np.zeros((g, n))
    any_answer = np.zeros((g, n), dtype=bool)
    strong = np.zeros((g, n))
    costs = chain_costs(tiers)
    for i, t in enumerate(tiers):
        reach = alive
        if i == len(tiers) - 1:
            strong = reach.astype(np.float64)
        cost += np.where(reach & t.ok[None, :], costs[i][None, :], 0.0)
        th = grid[:, i : i + 1]
        if not t.has_scorer:
            acc = reach & t.ok[None, :]
        else:
            passes = np.isnan(th) | (t.score[None, :] >= th)
            acc = reach & (t.ok & ~t.scorer_error)[None, :] & passes
        tq = np.nan_to_num(t.quality)[None, :]
        quality = np.where(acc, tq, quality)
        any_answer |= acc
        cand = reach & t.ok[None, :] & ~acc
        s_eff = np.where(t.scorer_error | np.isnan(t.score), -1.0, t.score)[None, :]
        upd = cand & (s_eff >= best_s)
        best_s = np.where(upd, s_eff, best_s)
        best_q = np.where(upd, tq, best_q)
        last_q = np.where(cand, tq, last_q)
        any_answer |= cand
        alive = reach & ~acc
    if on_exhausted == "return_best":
        quality = np.where(alive, best_q, quality)
    elif on_exhausted == "return_last":
        quality = np.where(alive, last_q, quality)
    else:
        quality = np.where(alive, 0.0, quality)
    quality = np.where(any_answer, quality, 0.0)
    return quality, cost, strong


def threshold_grid(tiers: Sequence[TierArrays], levels: int = 24) -> np.ndarray:
    """Every combination of candidate thresholds for the scored tiers (the others: NaN).

    A tier's candidates are its distinct scores when there are at most ``levels`` of them, else
    ``levels`` quantiles; plus +inf (never accept: the tier only feeds ``return_best``) is left
    out, since that is the shorter cascade without it."""
    axes: list[np.ndarray] = []
    for t in tiers:
        if not t.has_scorer:
            axes.append(np.array([np.nan]))
            continue
        s = t.score[~np.isnan(t.score)]
        values = np.unique(s)
        if len(values) > levels:
            values = np.unique(np.quantile(s, np.linspace(0, 1, levels)))
        axes.append(np.concatenate([values, [np.inf]]))
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


__all__ = [
    "OUTCOME_NAMES",
    "Billing",
    "OnExhausted",
    "OnUnverified",
    "ReplayContext",
    "Run",
    "TierArrays",
    "chain_costs",
    "replay_provider",
    "run",
    "score_tier",
    "sweep",
    "threshold_grid",
]
