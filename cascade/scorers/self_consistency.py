"""Self-consistency: draw k samples, extract each final answer, score by agreement with the majority.

The tier is called once for ``k`` samples (one request with ``n`` where the provider allows it);
each sample's answer is extracted (:mod:`cascade.scorers.answers`), and the score is the share of
all votes that agree with the answer the cascade returns, a sample of the tier carrying the
majority answer (``Score.chosen``). Unanswered samples count as votes for nothing. Tool calls
agree when tool name and arguments match. Free-form answers agree when their similarity reaches
``similarity_threshold``.

A *mixture* adds votes from other sources on the same tier, each called by the scorer itself:
the same model with another prompt (``template``, e.g. program-of-thought next to
chain-of-thought; with the replay provider, ``options: {variant: pot}``) or other cheap models
(agreement between different models). Their cost is the scorer's cost (``Score.cost``) and is
reserved in :meth:`max_cost`, so every sample counts against the budget.

>>> scorer = SelfConsistencyScorer("number", k=5)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.errors import CascadeError, ConfigurationError, ProviderError, ScorerError
from cascade.money import Price
from cascade.policy.schema import PriceSpec, TierSpec
from cascade.protocols import Provider
from cascade.request import Request
from cascade.retry import RetryPolicy, acall_with_retry, billed, call_with_retry, failure_charge
from cascade.scorers.answers import (
    SIMILARITIES,
    Extractor,
    ExtractorKind,
    SimilarityKind,
    make_extractor,
    tool_call_key,
)
from cascade.types import ZERO, Completion, Message, Sample, Score, Usage


def with_template(request: Request, template: str | None) -> Request:
    """``request`` with its last user message rewritten by ``template`` (``{prompt}`` = the text)."""
    if template is None:
        return request
    messages = list(request.messages)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            messages[i] = replace(messages[i], content=template.replace("{prompt}", messages[i].content))
            break
    else:
        messages.append(Message("user", template.replace("{prompt}", request.prompt)))
    return replace(request, messages=tuple(messages))


@dataclass(frozen=True, slots=True)
class Source:
    """Extra voters: ``n`` samples of ``provider`` (optionally with a prompt ``template``)."""

    provider: Provider
    n: int
    price: Price
    name: str = "mixture"
    template: str | None = None
    retry: RetryPolicy = RetryPolicy()

    def request(self, request: Request) -> Request:
        return with_template(request, self.template)

    def cost(self, completion: Completion) -> Decimal:
        return completion.cost if completion.cost is not None else self.price.cost(completion.usage)


@dataclass(frozen=True, slots=True)
class Agreement:
    value: float
    chosen: int
    votes: int
    total: int
    distinct: int
    unanswered: int


def agreement(
    keys: Sequence[str | None],
    primary: int,
    same: Callable[[str, str], bool] | None = None,
) -> Agreement:
    """Score the first ``primary`` keys (the returnable samples) by their votes among all ``keys``.

    With ``same`` (a similarity test) a key's votes are the keys similar to it; otherwise equal keys.
    """
    total = len(keys)
    answered = [k for k in keys if k is not None]
    distinct = len(set(answered))
    votes: list[int] = []
    if same is None:
        counts = Counter(answered)
        votes = [counts[k] if k is not None else 0 for k in keys[:primary]]
    else:
        for k in keys[:primary]:
            votes.append(0 if k is None else sum(1 for other in answered if other == k or same(k, other)))
    if not votes or max(votes) == 0:
        return Agreement(0.0, 0, 0, total, distinct, total - len(answered))
    best = max(votes)
    chosen = votes.index(best)
    return Agreement(best / total, chosen, best, total, distinct, total - len(answered))


class SourceSpec(BaseModel):
    """Extra samples for the vote. Without ``provider``, the tier's own provider and model are used
    (``options`` and ``params`` are merged over the tier's)."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(ge=1, le=100)
    provider: str | None = None
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    price: PriceSpec | None = None
    free: bool = False
    template: str | None = Field(None, description="Prompt template; {prompt} is the user's message.")

    @model_validator(mode="after")
    def _model_with_provider(self) -> SourceSpec:
        if self.provider is not None and self.model is None:
            raise ValueError("a mixture source with its own provider needs a model")
        return self


class SelfConsistencyScorer:
    """Agreement among ``k`` samples of the tier (plus any mixture sources)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: int = Field(5, ge=1, le=100, description="Samples drawn from the tier.")
        answer: ExtractorKind = Field("text", description="How to extract each sample's answer.")
        pattern: str | None = Field(None, description="answer: regex: the pattern (group 1 if any).")
        field: str | None = Field(None, description="answer: json_field: dotted path of the field.")
        function: str | None = Field(None, description="answer: callable: 'package.module:function'.")
        choices: str = Field("ABCDE", description="answer: choice: the letters.")
        ignore_case: bool = False
        use_recorded: bool = Field(True, description="Use a sample's recorded answer (replay) when present.")
        similarity: SimilarityKind | None = Field(None, description="Free-form: agree by similarity.")
        similarity_threshold: float = Field(0.7, ge=0, le=1)
        mixture: list[SourceSpec] = Field(default_factory=list)

        @model_validator(mode="after")
        def _extractor_builds(self) -> SelfConsistencyScorer.Options:
            if self.answer != "callable":  # a callable is imported when the scorer is built
                make_extractor(self.answer, pattern=self.pattern, field=self.field, choices=self.choices)
            return self

    def __init__(
        self,
        extractor: Extractor | ExtractorKind = "text",
        k: int = 5,
        *,
        use_recorded: bool = True,
        similarity: SimilarityKind | Callable[[str, str], float] | None = None,
        similarity_threshold: float = 0.7,
        sources: Sequence[Source] = (),
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.extract: Extractor = make_extractor(extractor) if isinstance(extractor, str) else extractor
        self.samples = k
        self.use_recorded = use_recorded
        self.sources = tuple(sources)
        self._same: Callable[[str, str], bool] | None = None
        if similarity is not None:
            sim = SIMILARITIES[similarity] if isinstance(similarity, str) else similarity
            self._same = lambda a, b: sim(a, b) >= similarity_threshold

    @classmethod
    def from_config(cls, options: SelfConsistencyScorer.Options, ctx: Any) -> SelfConsistencyScorer:
        try:
            extractor = make_extractor(
                options.answer,
                pattern=options.pattern,
                field=options.field,
                function=options.function,
                choices=options.choices,
                ignore_case=options.ignore_case,
            )
        except ValueError as err:
            raise ConfigurationError(f"self_consistency: {err}") from None
        sources = [_build_source(i, spec, ctx) for i, spec in enumerate(options.mixture)]
        return cls(
            extractor,
            options.k,
            use_recorded=options.use_recorded,
            similarity=options.similarity,
            similarity_threshold=options.similarity_threshold,
            sources=sources,
        )

    # -- answers ------------------------------------------------------------------------------

    def key(self, sample: Sample) -> str | None:
        """The comparable answer of one sample (None: no answer found)."""
        if sample.tool_calls:
            return tool_call_key(sample.tool_calls)
        try:
            if self.use_recorded and sample.answer is not None:
                value = self.extract(sample.answer)
                if value is not None:
                    return value
            return self.extract(sample.text) if sample.text else None
        except Exception as exc:  # a user extractor failed: say so, do not crash the cascade
            raise ScorerError(f"self_consistency: answer extractor failed: {type(exc).__name__}") from exc

    def rate(self, primary: Sequence[Sample], extra: Sequence[Sample] = (), missing: int = 0) -> Agreement:
        """Agreement of ``primary`` (returnable) samples among ``primary + extra`` votes; pure.

        ``missing`` samples (asked for but not returned: a failed parallel call or source) count
        as votes for nothing, so one surviving sample of five cannot claim full agreement.
        """
        keys = [self.key(s) for s in primary] + [self.key(s) for s in extra] + [None] * missing
        return agreement(keys, len(primary), self._same)

    def _score(
        self, completion: Completion, extra: Sequence[tuple[str, Completion | CascadeError, Decimal]]
    ) -> Score:
        samples: list[Sample] = []
        cost, usage = ZERO, Usage()
        by_source: dict[str, Any] = {}
        missing = _lost(self.samples, completion)
        for (name, got, spent), src in zip(extra, self.sources, strict=True):
            if isinstance(got, Completion):
                samples.extend(got.samples)
                cost += spent
                usage += got.usage
                by_source[name] = len(got.samples)
                missing += _lost(src.n, got)
            else:
                by_source[name] = f"error: {type(got).__name__}"
                missing += src.n
                cost += spent  # a failed call that may have been billed (see cascade.retry.failure_charge)
        a = self.rate(completion.samples, samples, missing)
        detail: dict[str, Any] = {
            "agreeing": a.votes,
            "total": a.total,
            "distinct": a.distinct,
            "unanswered": a.unanswered,
        }
        if by_source:
            detail["sources"] = by_source
        return Score(a.value, chosen=a.chosen, cost=cost, usage=usage, detail=detail)

    # -- Scorer protocol ----------------------------------------------------------------------

    def score(self, request: Request, completion: Completion) -> Score:
        extra: list[tuple[str, Completion | CascadeError, Decimal]] = []
        for src in self.sources:
            sub = src.request(request)
            try:
                call = lambda: src.provider.complete(sub, src.n)  # noqa: B023, E731
                got, _ = call_with_retry(call, src.retry, billed_stop=True)
            except ProviderError as exc:
                extra.append((src.name, exc, _charge(src, sub, exc)))
                continue
            extra.append((src.name, got, src.cost(got)))
        return self._score(completion, extra)

    async def ascore(self, request: Request, completion: Completion) -> Score:
        async def one(src: Source) -> tuple[str, Completion | CascadeError, Decimal]:
            sub = src.request(request)
            try:
                got = (
                    await acall_with_retry(
                        lambda: src.provider.acomplete(sub, src.n), src.retry, billed_stop=True
                    )
                )[0]
            except ProviderError as exc:
                return (src.name, exc, _charge(src, sub, exc))
            return (src.name, got, src.cost(got))

        extra = await asyncio.gather(*(one(s) for s in self.sources))
        return self._score(completion, list(extra))

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return sum((s.price.cost(s.provider.max_usage(s.request(request), s.n)) for s in self.sources), ZERO)


def _charge(src: Source, sub: Request, exc: ProviderError) -> Decimal:
    """What a source's failed call is charged (it may have been billed)."""
    return (
        failure_charge(exc, src.price, src.price.cost(src.provider.max_usage(sub, src.n)))
        if billed(exc)
        else ZERO
    )


def _lost(asked: int, got: Completion) -> int:
    """Samples asked for that failed to come back (some of the parallel calls failed).

    A provider that simply has fewer (a recorded file with fewer samples) loses none.
    """
    return max(0, asked - len(got.samples)) if got.failed_calls else 0


def _build_source(index: int, spec: SourceSpec, ctx: Any) -> Source:
    base: TierSpec | None = ctx.tier
    if spec.provider is None and base is None:
        raise ConfigurationError(
            "self_consistency: a mixture source outside a tier needs `provider` and `model`"
        )
    if spec.provider is None:
        assert base is not None
        data: dict[str, Any] = {
            "provider": base.provider,
            "model": spec.model or base.model,
            "options": {**base.options, **spec.options},
            "params": {**base.params.model_dump(exclude_unset=True), **spec.params},
            "price": spec.price or base.price,
            "free": spec.free or base.free,
            "retry": base.retry,
        }
    else:
        data = {
            "provider": spec.provider,
            "model": spec.model,
            "options": spec.options,
            "params": spec.params,
            "price": spec.price,
            "free": spec.free,
        }
    name = f"{base.name if base is not None else 'self_consistency'}.mixture{index}"
    tier = TierSpec.model_validate({"name": name, **data})
    provider = ctx.build_provider(tier)
    r = tier.retry
    return Source(
        provider=provider,
        n=spec.samples,
        price=ctx.price(tier, provider),
        name=f"mixture{index}:{tier.model}" + ("" if spec.template is None else "+template"),
        template=spec.template,
        retry=RetryPolicy(r.attempts, r.initial, r.max_wait, r.jitter, r.max_retry_after),
    )


__all__ = ["Agreement", "SelfConsistencyScorer", "Source", "SourceSpec", "agreement", "with_template"]
