"""The prompt-only estimator (a tier's ``skip:``): before a tier is called, the probability that
its answer would be right, from the prompt alone: hashed word n-grams and lengths by default
(numpy only), or those plus an embedding (any LangChain ``Embeddings``, or an OpenAI-compatible
embeddings endpoint). :func:`load_prompt_estimator` loads one; ``cascade train-scorer
--prompt-only`` trains one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cascade import outcomes
from cascade.errors import CascadeError, ConfigurationError, ProviderError
from cascade.learn.classifier import Classifier, Example, require_model, train
from cascade.learn.features import FeatureConfig, Floats
from cascade.protocols import SkipEstimator
from cascade.request import Request
from cascade.types import Sample

_EMPTY = (Sample(""),)


# -- the prompt-only estimator ------------------------------------------------------------------


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
    "LangChainEmbedder",
    "OpenAIEmbedder",
    "PromptEstimator",
    "SkipEstimator",
    "embedder_from_spec",
    "load_prompt_estimator",
    "prompt_examples",
    "train_prompt_estimator",
]
