"""Builders shared by the provider tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascade.engine.build import BuildContext
from cascade.policy.schema import TierSpec
from cascade.providers.anthropic import AnthropicProvider
from cascade.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from cascade.retry import RetryPolicy

NO_WAIT = RetryPolicy(attempts=3, initial=0, max_wait=0, jitter=0, max_retry_after=0)
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tier(provider: str, model: str, options: dict[str, Any] | None = None, **kw: Any) -> TierSpec:
    params = {"max_tokens": 64, "temperature": 0.0, **kw.pop("params", {})}
    return TierSpec(
        name=kw.pop("name", "t"), provider=provider, model=model, params=params, options=options or {}, **kw
    )


def openai(base_url: str | None, model: str = OPENAI_MODEL, **options: Any) -> OpenAIProvider:
    top = _split(options)
    spec = tier("openai", model, {"base_url": base_url, **options}, **top)
    return _track(
        OpenAIProvider.from_config(spec, OpenAIProvider.Options(**spec.options), BuildContext(Path.cwd()))
    )


def compatible(
    base_url: str, model: str = "llama-3.1-8b-instruct", **options: Any
) -> OpenAICompatibleProvider:
    top = _split(options)
    spec = tier("openai_compatible", model, {"base_url": base_url, **options}, **top)
    opts = OpenAICompatibleProvider.Options(**spec.options)
    return _track(OpenAICompatibleProvider.from_config(spec, opts, BuildContext(Path.cwd())))


def anthropic(base_url: str | None, model: str = ANTHROPIC_MODEL, **options: Any) -> AnthropicProvider:
    top = _split(options)
    spec = tier("anthropic", model, {"base_url": base_url, **options}, **top)
    return _track(
        AnthropicProvider.from_config(
            spec, AnthropicProvider.Options(**spec.options), BuildContext(Path.cwd())
        )
    )


OPEN: list[Any] = []  # providers built by a test, closed after it (conftest)


def _track(provider: Any) -> Any:
    OPEN.append(provider)
    return provider


def _split(options: dict[str, Any]) -> dict[str, Any]:
    """Move tier-level keys (timeout, params) out of the provider options."""
    return {k: options.pop(k) for k in ("timeout", "params") if k in options}
