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
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade.errors import CascadeError, ConfigurationError, ProviderError, ScorerError
from cascade.learn.classifier import Classifier, check_trained_for
from cascade.learn.estimator import (
    Embedder,
    LangChainEmbedder,
    OpenAIEmbedder,
    PromptEstimator,
    SkipEstimator,
    embedder_from_spec,
    load_prompt_estimator,
    prompt_examples,
    train_prompt_estimator,
)
from cascade.learn.features import GROUPS
from cascade.logging import get_logger
from cascade.protocols import Scorer
from cascade.request import Request
from cascade.retry import acall_with_retry, call_with_retry
from cascade.scorers.answers import ExtractorKind, make_extractor
from cascade.scorers.self_consistency import SelfConsistencyScorer, Source, SourceSpec, _build_source
from cascade.types import ZERO, Completion, Sample, Score, Usage

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
]
