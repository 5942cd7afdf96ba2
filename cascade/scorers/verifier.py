"""A combined verifier over every signal, and a prompt-only estimator for skipping a tier.

**Verifier** (``kind: verifier``): one calibrated classifier (:mod:`cascade.scorers.classifier`,
same training code and artifact format, ``kind: verifier``) over the inputs a policy chooses:

* feature ``groups`` of the prompt and the answer: hashed n-grams and dense cues of the prompt
  (``prompt``) and of the answer text (``answer``), token logprob statistics when the provider
  returns them (``logprobs``), and the agreement of the tier's own ``k`` samples (``agreement``);
* agreement with named ``partners``: other models (or the same model with another prompt)
  asked by the scorer, one input per partner (1 when its answer equals the tier's) plus the
  share of partners that agree;
* the scores of other ``scorers`` (a judge, a regex, a JSON check...), one input each, plus
  whether that scorer answered;
* built-in ``checks`` of the answer text: ``arithmetic`` recomputes every ``a op b = c`` step of
  a worked answer (and GSM8K-style ``<<a*b=c>>`` annotations) and counts the wrong ones.

Partners and scorers cost what their calls cost (``Score.cost``, reserved in ``max_cost``). The
artifact records which inputs it was trained on; a policy that names different ones fails at
build time. Train with ``cascade train-scorer --verifier`` or ``cascade tune --classifiers N``::

    scorer:
      kind: verifier
      path: scorers/llama-8b.verifier.json
      k: 3
      answer: number
      partners: [{model: gpt-4o-mini, provider: openai, samples: 1}]

**Prompt-only estimator** (a tier's ``skip:``): before a tier is called, the probability that
its answer would be right, from the prompt alone: hashed word n-grams and lengths by default
(numpy only), or those plus an embedding (any LangChain ``Embeddings``, or an OpenAI-compatible
embeddings endpoint). :func:`load_prompt_estimator` loads one; ``cascade train-scorer
--prompt-only`` trains one.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade import outcomes
from cascade.errors import CascadeError, ConfigurationError, ProviderError, ScorerError
from cascade.logging import get_logger
from cascade.protocols import Scorer
from cascade.retry import acall_with_retry, call_with_retry
from cascade.scorers.answers import ExtractorKind, make_extractor
from cascade.scorers.classifier import Classifier, Example, check_trained_for, require_model, train
from cascade.scorers.features import GROUPS, FeatureConfig, Floats
from cascade.scorers.self_consistency import SelfConsistencyScorer, Source, SourceSpec, _build_source
from cascade.types import ZERO, Completion, Request, Sample, Score, Usage

_EMPTY = (Sample(""),)
Check = Literal["arithmetic"]


# -- checks of the answer text -----------------------------------------------------------------

_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_EQUATION = re.compile(
    r"([-+*/x×÷().\d\s,$%]*\d[-+*/x×÷().\d\s,$%]*?)"  # the left side: numbers and operators
    r"\s*=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)"  # = the claimed number
    r"(?![\d,.]*\s*[/*x×÷^]\s*\d)"  # not a fraction or product on the right
)
_OPERATION = re.compile(r"\d\s*[-+*/]\s*[\d(]")


def _evaluate(node: ast.AST, depth: int = 0) -> float:
    if depth > 50:
        raise ValueError("too deep")
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_evaluate(node.operand, depth + 1)))
    raise ValueError("not arithmetic")


def arithmetic_check(text: str) -> tuple[int, int]:
    """``(steps checked, steps wrong)``: every ``a op b = c`` in ``text`` recomputed (numbers,
    + - * / x, parentheses, percentages; no names, no powers: nothing but arithmetic is evaluated)."""
    done = wrong = 0
    for left, right in _EQUATION.findall(text[:20_000]):
        expr = left.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*").replace("÷", "/")
        expr = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", expr.strip().lstrip(".").strip())
        if len(expr) > 200 or not _OPERATION.search(expr):
            continue
        try:
            value = _evaluate(ast.parse(expr, mode="eval").body)
            claimed = float(right.replace(",", ""))
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
            continue
        if not math.isfinite(value):
            continue
        done += 1
        if abs(value - claimed) > 1e-2 * max(1.0, abs(claimed)) and abs(round(value, 2) - claimed) > 0.011:
            wrong += 1
    return done, wrong


# -- the verifier -------------------------------------------------------------------------------


class VerifierOptions(BaseModel):
    """Options of ``kind: verifier`` (also what ``cascade train-scorer --verifier`` trains for)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="Verifier artifact (JSON) written by `cascade train-scorer --verifier`.")
    k: int = Field(1, ge=1, le=100, description="Samples drawn from the tier (their agreement is an input).")
    answer: ExtractorKind = Field("text", description="How to extract an answer to compare with partners.")
    pattern: str | None = Field(None, description="answer: regex: the pattern (group 1 if any).")
    field: str | None = Field(None, description="answer: json_field: dotted path of the field.")
    choices: str = Field("ABCDE", description="answer: choice: the letters.")
    features: list[str] | None = Field(
        None,
        description="Feature groups (prompt, answer, logprobs, agreement); default: the artifact's. "
        "Must match what the artifact was trained with.",
    )
    partners: list[SourceSpec] = Field(
        default_factory=list, description="Other models (or prompts) whose answers are compared."
    )
    scorers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Other scorers whose scores are inputs (name -> scorer)."
    )
    checks: list[Check] = Field(
        default_factory=list, description="Built-in checks of the answer text (arithmetic)."
    )

    @field_validator("features")
    @classmethod
    def _groups(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not set(v) <= set(GROUPS)):
            raise ValueError(f"features must be a non-empty subset of {list(GROUPS)}")
        return v

    @field_validator("scorers")
    @classmethod
    def _kinds(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, spec in v.items():
            if not isinstance(spec, dict) or "kind" not in spec:
                raise ValueError(f"scorers.{name}: a scorer needs a kind")
            if spec["kind"] == "verifier":
                raise ValueError(f"scorers.{name}: a verifier cannot take another verifier's score")
        return v


@dataclass(frozen=True, slots=True)
class Inputs:
    """The verifier's extra inputs for one completion, and what gathering them cost."""

    values: tuple[float, ...]
    cost: Decimal
    usage: Usage
    detail: Mapping[str, Any]


class VerifierInputs:
    """Partners and other scorers: the parts of the verifier that call something."""

    def __init__(
        self,
        sc: SelfConsistencyScorer,
        partners: Sequence[Source] = (),
        scorers: Mapping[str, Scorer] | None = None,
        checks: Sequence[Check] = (),
    ) -> None:
        self.sc = sc
        self.partners = tuple(partners)
        self.scorers = dict(scorers or {})
        self.checks = tuple(dict.fromkeys(checks))

    @classmethod
    def build(cls, options: VerifierOptions, ctx: Any) -> VerifierInputs:
        from cascade.policy.schema import ScorerSpec

        try:
            extractor = make_extractor(
                options.answer, pattern=options.pattern, field=options.field, choices=options.choices
            )
        except ValueError as err:
            raise ConfigurationError(f"verifier: {err}") from None
        sc = SelfConsistencyScorer(extractor, options.k)
        partners = [_build_source(i, spec, ctx) for i, spec in enumerate(options.partners)]
        scorers: dict[str, Scorer] = {}
        for name, spec in options.scorers.items():
            try:
                scorers[name] = ctx.build_scorer(ScorerSpec(**spec))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(x) for x in first.get("loc", ()))
                raise ConfigurationError(
                    f"verifier: scorers.{name}{'.' + where if where else ''}: {first.get('msg')}"
                ) from None
        return cls(sc, partners, scorers, options.checks)

    @property
    def names(self) -> tuple[str, ...]:
        out: list[str] = []
        for p in self.partners:
            out += [f"agree:{p.name}", f"answered:{p.name}"]
        if self.partners:
            out.append("partners_agree_share")
        for name in self.scorers:
            out += [f"score:{name}", f"scored:{name}"]
        for check in self.checks:
            out += [f"check:{check}_steps", f"check:{check}_wrong", f"check:{check}_any_wrong"]
        return tuple(out)

    def _key(self, sample: Sample) -> str | None:
        """The sample's answer; a failed (user) extractor is no answer, a feature like any other."""
        try:
            return self.sc.key(sample)
        except ScorerError:
            return None

    def _combine(
        self,
        completion: Completion,
        got: Sequence[Completion | CascadeError],
        scores: Sequence[Score | CascadeError],
    ) -> Inputs:
        values: list[float] = []
        cost, usage = ZERO, Usage()
        detail: dict[str, Any] = {}
        mine = self._key(completion.samples[0]) if completion.samples else None
        agree_n = 0
        for src, g in zip(self.partners, got, strict=True):
            if isinstance(g, Completion):
                cost += src.cost(g)
                usage += g.usage
                theirs = self._key(g.samples[0]) if g.samples else None
                same = mine is not None and theirs == mine
                agree_n += same
                values += [1.0 if same else 0.0, 1.0 if theirs is not None else 0.0]
                detail[src.name] = "agrees" if same else "differs"
            else:
                values += [0.0, 0.0]
                detail[src.name] = f"error: {type(g).__name__}"
        if self.partners:
            values.append(agree_n / len(self.partners))
        for name, s in zip(self.scorers, scores, strict=True):
            if isinstance(s, Score):
                cost += s.cost
                usage += s.usage
                values += [float(s.value), 1.0]
                detail[name] = round(float(s.value), 4)
            else:
                values += [0.0, 0.0]
                detail[name] = f"error: {type(s).__name__}"
        for _ in self.checks:  # arithmetic, the only one so far
            text = completion.samples[0].text if completion.samples else ""
            done, wrong = arithmetic_check(text or "")
            values += [math.log1p(done), math.log1p(wrong), 1.0 if wrong else 0.0]
            detail["arithmetic"] = f"{wrong} of {done} steps wrong"
        return Inputs(tuple(values), cost, usage, detail)

    def gather(self, request: Request, completion: Completion) -> Inputs:
        got: list[Completion | CascadeError] = []
        for src in self.partners:
            sub = src.request(request)
            try:
                g, _ = call_with_retry(lambda: src.provider.complete(sub, src.n), src.retry)  # noqa: B023
            except ProviderError as exc:
                got.append(exc)
                continue
            got.append(g)
        scores: list[Score | CascadeError] = []
        for scorer in self.scorers.values():
            try:
                scores.append(scorer.score(request, completion))
            except (ScorerError, ProviderError) as exc:
                scores.append(exc)
        return self._combine(completion, got, scores)

    async def agather(self, request: Request, completion: Completion) -> Inputs:
        async def partner(src: Source) -> Completion | CascadeError:
            sub = src.request(request)
            try:
                g, _ = await acall_with_retry(lambda: src.provider.acomplete(sub, src.n), src.retry)
            except ProviderError as exc:
                return exc
            return g

        async def other(scorer: Scorer) -> Score | CascadeError:
            try:
                return await scorer.ascore(request, completion)
            except (ScorerError, ProviderError) as exc:
                return exc

        got = await asyncio.gather(*(partner(s) for s in self.partners))
        scores = await asyncio.gather(*(other(s) for s in self.scorers.values()))
        return self._combine(completion, list(got), list(scores))

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        out = sum((s.price.cost(s.provider.max_usage(s.request(request), s.n)) for s in self.partners), ZERO)
        return out + sum((s.max_cost(request, max_output_tokens) for s in self.scorers.values()), ZERO)


class VerifierScorer:
    """P(the answer is right) from every chosen signal, by one calibrated classifier."""

    Options = VerifierOptions

    def __init__(self, classifier: Classifier, inputs: VerifierInputs, source: str = "verifier") -> None:
        if classifier.extra != inputs.names:
            raise ConfigurationError(
                f"{source}: the artifact was trained with inputs {list(classifier.extra) or 'none'}, "
                f"the policy gives {list(inputs.names) or 'none'} (same partners and scorers, in order)"
            )
        self.classifier = classifier
        self.inputs = inputs
        self.samples = inputs.sc.samples

    @classmethod
    def from_config(cls, options: VerifierOptions, ctx: Any) -> VerifierScorer:
        path = ctx.path(options.path)
        clf = Classifier.load(path, kind="verifier")
        check_trained_for(
            clf, str(path), model=ctx.tier.model if ctx.tier is not None else None, answer=options.answer
        )
        if options.features is not None and set(options.features) != set(clf.config.groups):
            raise ConfigurationError(
                f"{path}: trained on feature groups {list(clf.config.groups)}, the policy asks for "
                f"{options.features}; retrain or drop `features`"
            )
        return cls(clf, VerifierInputs.build(options, ctx), str(path))

    def _score(self, request: Request, completion: Completion, inputs: Inputs) -> Score:
        samples = completion.samples or (Sample(""),)
        p, logit = self.classifier.predict(request.prompt, samples, inputs.values)
        detail: dict[str, Any] = {"logit": round(logit, 4)}
        if inputs.detail:
            detail["inputs"] = dict(inputs.detail)
        get_logger().debug("verifier_scored", score=round(p, 4), inputs=len(inputs.values))
        return Score(p, chosen=0, cost=inputs.cost, usage=inputs.usage, detail=detail)

    def score(self, request: Request, completion: Completion) -> Score:
        return self._score(request, completion, self.inputs.gather(request, completion))

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self._score(request, completion, await self.inputs.agather(request, completion))

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return self.inputs.max_cost(request, max_output_tokens)


def verifier_examples(
    options: VerifierOptions,
    data: outcomes.Outcomes,
    model: str,
    *,
    ids: set[str] | None = None,
    positive_at: float = 0.5,
    base_dir: Path | None = None,
) -> tuple[list[Example], tuple[str, ...]]:
    """Labelled examples of ``model``'s answers with the verifier's inputs, gathered through the
    real scorer code with every call replayed from ``data`` (only records in ``ids`` when given)."""
    from cascade.evaluate.simulate import ReplayContext
    from cascade.policy.schema import TierSpec

    require_model(data, model)
    ctx = ReplayContext(base_dir or Path.cwd(), data, "auto")
    tier = TierSpec(name="verifier", provider="replay", model=model, options={"path": str(data.path)})
    ctx.tier = tier
    inputs = VerifierInputs.build(options, ctx)
    provider = ctx.build_provider(tier)
    ctx.tier = None
    out: list[Example] = []
    for r in data.records:
        if ids is not None and r.id not in ids:
            continue
        recorded = r.responses.get(model)
        if not recorded or recorded[0].quality is None:
            continue
        request = Request.of(r.prompt, metadata={"id": r.id})
        try:
            completion = provider.complete(request, options.k)
        except ProviderError:
            continue
        got = inputs.gather(request, completion)
        label = 1.0 if recorded[0].quality >= positive_at else 0.0
        out.append(Example(r.prompt, completion.samples, label, r.id, r.split, got.values))
    return out, inputs.names


def train_verifier(
    examples: Sequence[Example],
    names: Sequence[str],
    *,
    groups: Sequence[str] = GROUPS,
    bits: int = 16,
    **kwargs: Any,
) -> Classifier:
    """A verifier artifact from :func:`verifier_examples` (the classifier's training code)."""
    config = FeatureConfig(bits=bits, groups=tuple(groups))
    return train(examples, config=config, extra=tuple(names), kind="verifier", **kwargs)


# -- the prompt-only estimator ------------------------------------------------------------------


@runtime_checkable
class SkipEstimator(Protocol):
    """What a tier's ``skip:`` needs: P(this tier's answer would be right) from the request."""

    def predict(self, request: Request) -> float: ...


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> Floats: ...


def _as_matrix(vectors: Any, n: int, source: str) -> Floats:
    """Validated embeddings: ``n`` finite vectors of one length."""
    try:
        m = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProviderError(f"{source}: embeddings are not lists of numbers", provider=source) from None
    if m.ndim != 2 or m.shape[0] != n or m.shape[1] == 0 or not np.isfinite(m).all():
        raise ProviderError(
            f"{source}: expected {n} finite embedding vectors of one length, got shape {m.shape}",
            provider=source,
        )
    return m


class LangChainEmbedder:
    """Any LangChain ``Embeddings`` (``embed_documents``)."""

    def __init__(self, embeddings: Any) -> None:
        self.embeddings = embeddings

    def embed(self, texts: Sequence[str]) -> Floats:
        try:
            vectors = self.embeddings.embed_documents(list(texts))
        except CascadeError:
            raise
        except Exception as exc:  # a third-party model: map whatever it raises at the edge
            raise ProviderError(
                f"embeddings: {type(exc).__name__}: {str(exc)[:200]}", provider="langchain"
            ) from exc
        return _as_matrix(vectors, len(texts), "langchain embeddings")


class OpenAIEmbedder:
    """The OpenAI (or an OpenAI-compatible) embeddings endpoint, errors mapped like the provider's."""

    def __init__(
        self,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        base_url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        import openai

        from cascade.providers import _sdk

        self.model = model
        key = os.environ.get(api_key_env, "").strip() or ("local" if _sdk.is_local_url(base_url) else "")
        if not key:
            raise ConfigurationError(
                f"embeddings: environment variable {api_key_env} is not set (OpenAI API key)"
            )
        kw: dict[str, Any] = {"api_key": key, "timeout": timeout, "max_retries": 0}
        if base_url:
            kw["base_url"] = base_url
        self.client = openai.OpenAI(**kw)

    def embed(self, texts: Sequence[str]) -> Floats:
        import openai

        from cascade.providers import _sdk

        try:
            response = self.client.embeddings.create(model=self.model, input=list(texts))
        except openai.OpenAIError as exc:
            raise _sdk.map_error(exc, provider="openai", sdk=openai) from exc
        except (AttributeError, TypeError, ValueError, KeyError) as exc:  # the SDK choked on the body
            raise ProviderError(
                f"openai embeddings: malformed response ({type(exc).__name__})", provider="openai"
            ) from exc
        data = getattr(response, "data", None)
        if not isinstance(data, list):
            raise ProviderError("openai embeddings: the response has no data list", provider="openai")
        ordered = sorted(data, key=lambda d: getattr(d, "index", 0))
        return _as_matrix([getattr(d, "embedding", None) for d in ordered], len(texts), "openai embeddings")


def embedder_from_spec(spec: Mapping[str, Any], embeddings: Any = None) -> Embedder:
    """The embedder an artifact names: ``{source: openai, model, base_url?, api_key_env?}``,
    ``{source: langchain, class: "package.module:Class", kwargs: {...}}``, or ``{source: object}``
    (the caller passes ``embeddings``, a LangChain ``Embeddings``)."""
    if embeddings is not None:
        return LangChainEmbedder(embeddings)
    source = spec.get("source")
    if source == "openai":
        return OpenAIEmbedder(
            str(spec["model"]),
            api_key_env=str(spec.get("api_key_env", "OPENAI_API_KEY")),
            base_url=spec.get("base_url"),
        )
    if source == "langchain":
        module, _, attr = str(spec.get("class", "")).partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            raise ConfigurationError(f"embeddings: cannot import {spec.get('class')!r}") from None
        return LangChainEmbedder(cls(**dict(spec.get("kwargs") or {})))
    raise ConfigurationError(
        f"embeddings: the estimator needs an embeddings object (source {source!r}); pass embeddings=..."
    )


class PromptEstimator:
    """P(a tier's answer would be right) from the prompt alone (``predict(request) -> float``)."""

    def __init__(
        self, classifier: Classifier, embedder: Embedder | None = None, threshold: float | None = None
    ) -> None:
        if classifier.kind != "prompt":
            raise ConfigurationError(f"a {classifier.kind} artifact is not a prompt-only estimator")
        dims = (
            int(classifier.meta.get("embedding", {}).get("dims", 0))
            if classifier.meta.get("embedding")
            else 0
        )
        if dims != len(classifier.extra):
            raise ConfigurationError(
                f"estimator: {len(classifier.extra)} extra inputs, {dims} embedding dimensions"
            )
        if dims and embedder is None:
            raise ConfigurationError("estimator: trained with embeddings; give an embeddings source")
        self.classifier = classifier
        self.embedder = embedder if dims else None
        self.threshold = threshold

    def _extra(self, prompts: Sequence[str]) -> Floats:
        if self.embedder is None:
            return np.zeros((len(prompts), 0))
        m = self.embedder.embed(prompts)
        if m.shape[1] != len(self.classifier.extra):
            raise ProviderError(
                f"embeddings: {m.shape[1]} dimensions, the estimator was trained on "
                f"{len(self.classifier.extra)}",
                provider="embeddings",
            )
        return m

    def predict(self, request: Request) -> float:
        extra = self._extra([request.prompt])[0]
        return self.classifier.predict(request.prompt, _EMPTY, tuple(extra.tolist()))[0]

    def predict_many(self, prompts: Sequence[str]) -> Floats:
        """Predictions for many prompts at once (one embeddings call)."""
        if not prompts:
            return np.zeros(0)
        extra = self._extra(prompts)
        rows = self.classifier.rows(((p, _EMPTY) for p in prompts), [tuple(e) for e in extra.tolist()])
        return self.classifier.predict_rows(rows)

    def save(self, path: str | Path) -> None:
        self.classifier.save(path)


def load_prompt_estimator(path: str | Path, *, embeddings: Any = None) -> PromptEstimator:
    """The prompt-only estimator in an artifact written by ``cascade train-scorer --prompt-only``
    (one-line :class:`ConfigurationError` on a missing, malformed or wrong-kind file).
    ``embeddings``: a LangChain ``Embeddings`` for an estimator trained with one."""
    clf = Classifier.load(path, kind="prompt")
    spec = clf.meta.get("embedding")
    embedder = embedder_from_spec(spec, embeddings) if spec else None
    return PromptEstimator(clf, embedder)


def prompt_examples(
    data: outcomes.Outcomes,
    model: str,
    *,
    positive_at: float = 0.5,
    ids: set[str] | None = None,
    versus: str | None = None,
) -> list[Example]:
    """One example per labelled record of ``model``: its prompt, and whether the answer was right.

    With ``versus`` (a stronger model, e.g. the next tier) the label is whether ``model``'s answer
    is *as good as* that model's (right, or both wrong): skipping then sends exactly the prompts
    where the stronger model would gain, which routes better when both are often wrong."""
    for m in (model, versus):
        if m is not None:
            require_model(data, m)
    out = []
    for r in data.records:
        if ids is not None and r.id not in ids:
            continue
        recorded = r.responses.get(model)
        if not recorded or recorded[0].quality is None:
            continue
        right = recorded[0].quality >= positive_at
        if versus is not None:
            other = r.responses.get(versus)
            if not other or other[0].quality is None:
                continue
            right = right or other[0].quality < positive_at
        out.append(Example(r.prompt, _EMPTY, 1.0 if right else 0.0, r.id, r.split))
    return out


def train_prompt_estimator(
    examples: Sequence[Example],
    *,
    embedder: Embedder | None = None,
    embedding: Mapping[str, Any] | None = None,
    bits: int = 16,
    meta: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PromptEstimator:
    """Train on ``examples`` (from :func:`prompt_examples`: the training part only). With an
    ``embedder`` its vectors are inputs too; ``embedding`` is how a loader rebuilds it (stored)."""
    info = dict(meta or {})
    extra: tuple[str, ...] = ()
    rows = list(examples)
    if embedder is not None:
        m = embedder.embed([e.prompt for e in rows])
        extra = tuple(f"emb{i}" for i in range(m.shape[1]))
        rows = [
            Example(e.prompt, e.samples, e.label, e.id, e.split, tuple(v))
            for e, v in zip(rows, m.tolist(), strict=True)
        ]
        info["embedding"] = {**dict(embedding or {"source": "object"}), "dims": len(extra)}
    config = FeatureConfig(bits=bits, groups=("prompt",))
    clf = train(rows, config=config, meta=info, extra=extra, kind="prompt", **kwargs)
    return PromptEstimator(clf, embedder)


__all__ = [
    "Embedder",
    "Inputs",
    "LangChainEmbedder",
    "OpenAIEmbedder",
    "PromptEstimator",
    "SkipEstimator",
    "VerifierInputs",
    "VerifierOptions",
    "VerifierScorer",
    "arithmetic_check",
    "embedder_from_spec",
    "load_prompt_estimator",
    "prompt_examples",
    "train_prompt_estimator",
    "train_verifier",
    "verifier_examples",
]
