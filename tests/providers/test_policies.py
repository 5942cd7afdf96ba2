"""Real providers inside the engine: retries by error class, cost from usage, mixed-provider policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

import cascade
from cascade.cli import main
from cascade.engine.build import build as _build
from cascade.errors import ConfigurationError
from cascade.policy.schema import Policy
from cascade.price_table import lookup
from tests.providers import helpers
from tests.providers.conftest import Endpoints, made

ASK = "What is 2+2? Reply with the number only."
NO_WAIT = {"attempts": 3, "initial": 0, "max_wait": 0, "jitter": 0, "max_retry_after": 0}


def build(*args: Any, **kwargs: Any) -> cascade.Cascade:
    """Build, and have the conftest close the SDK clients after the test."""
    c = _build(*args, **kwargs)
    helpers.OPEN.extend(t.provider for t in c.tiers if hasattr(t.provider, "aclose"))
    return c


def one_tier(provider: str, model: str, base_url: str | None, **options: Any) -> Policy:
    return Policy.model_validate(
        {
            "name": f"{provider}-only",
            "tiers": [
                {
                    "name": "only",
                    "provider": provider,
                    "model": model,
                    "params": {"max_tokens": 64, "temperature": 0},
                    "retry": NO_WAIT,
                    "options": {"base_url": base_url, **options},
                }
            ],
        }
    )


# -- which errors the engine retries ------------------------------------------------------------

CASES = [
    # provider, marker, retried requests before the outcome, final decision
    ("openai", "!fail=429x1", 1, "accepted"),
    ("openai", "!fail=500x2", 2, "accepted"),
    ("openai", "!fail=500", 2, "failed"),
    ("openai", "!fail=400", 0, "failed"),
    ("openai", "!quota", 0, "failed"),
    ("anthropic", "!fail=529x1", 1, "accepted"),
    ("anthropic", "!fail=429x2", 2, "accepted"),
    ("anthropic", "!fail=400", 0, "failed"),
]


@pytest.mark.wire_only
@pytest.mark.parametrize(("provider", "marker", "retries", "decision"), CASES)
def test_engine_retries_transient_errors_only(
    endpoints: Endpoints, cassette: Any, provider: str, marker: str, retries: int, decision: str
) -> None:
    model, url = (
        ("gpt-4o-mini", endpoints.openai)
        if provider == "openai"
        else ("claude-haiku-4-5", endpoints.anthropic)
    )
    c = build(one_tier(provider, model, url))
    if decision == "failed":
        with pytest.raises(cascade.AllTiersFailedError) as info:
            c.run(f"{ASK} {marker} !answers=4")
        attempt = info.value.attempts[0]
    else:
        result = c.run(f"{ASK} {marker} !answers=4")
        attempt = result.attempts[0]
        assert result.answer == "4"
    assert attempt.decision == decision and attempt.retries == retries
    assert made(cassette) == retries + 1


# -- money ----------------------------------------------------------------------------------------


@pytest.mark.wire_only
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cost_is_the_price_of_the_usage(endpoints: Endpoints, cassette: Any, provider: str) -> None:
    model, url = (
        ("gpt-4o-mini", endpoints.openai)
        if provider == "openai"
        else ("claude-haiku-4-5", endpoints.anthropic)
    )
    c = build(one_tier(provider, model, url))
    result = await c.arun(f"{ASK} !cached=4 !answers=4")
    attempt = result.attempts[0]
    price = lookup(provider, model)
    assert price is not None
    assert attempt.usage.cached_input_tokens == 4
    assert attempt.cost == price.cost(attempt.usage) and attempt.cost > 0
    assert result.cost == attempt.cost


def test_missing_key_fails_the_build_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        build(one_tier("anthropic", "claude-haiku-4-5", None))


def test_unknown_model_needs_a_price(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    with pytest.raises(ConfigurationError, match="no price known"):
        build(one_tier("openai", "gpt-99-imaginary", None))
    assert build(one_tier("openai", "gpt-4o-mini-2024-07-18", None)).tiers[0].price == lookup(
        "openai", "gpt-4o-mini"
    )


# -- three providers, one policy ------------------------------------------------------------------

POLICY = """\
name: mixed
tiers:
  - name: cheap
    provider: openai
    model: gpt-4o-mini
    params: {{max_tokens: 64, temperature: 0}}
    options: {{base_url: {openai}}}
    scorer: {{kind: regex, pattern: '^\\d+$'}}
    threshold: 1.0
  - name: medium
    provider: anthropic
    model: claude-haiku-4-5
    params: {{max_tokens: 64, temperature: 0}}
    options: {{base_url: {anthropic}}}
    scorer: {{kind: regex, pattern: '^\\d+$'}}
    threshold: 1.0
  - name: strong
    provider: langchain
    model: fake-strong
    free: true
    options:
      class: "langchain_core.language_models.fake_chat_models:FakeListChatModel"
      kwargs: {{responses: ["4"]}}
"""
PROMPT = "What is 2+2? !answers=I_think_it_is_four"


def _policy_file(tmp_path: Path, endpoints: Endpoints) -> Path:
    path = tmp_path / "mixed.yaml"
    text = POLICY.format(openai=json.dumps(endpoints.openai), anthropic=json.dumps(endpoints.anthropic))
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.wire_only
def test_openai_anthropic_langchain_end_to_end(endpoints: Endpoints, cassette: Any, tmp_path: Path) -> None:
    c = build(_policy_file(tmp_path, endpoints))
    result = c.run(PROMPT)
    assert result.answer == "4" and result.tier == "strong" and result.accepted
    assert [(a.tier, a.provider, a.decision) for a in result.attempts] == [
        ("cheap", "openai", "escalated"),
        ("medium", "anthropic", "escalated"),
        ("strong", "langchain", "accepted"),
    ]
    cheap, medium, strong = result.attempts
    assert cheap.cost > 0 and medium.cost > 0 and strong.cost == 0
    assert result.cost == cheap.cost + medium.cost
    assert made(cassette) == 2  # one OpenAI and one Anthropic request; the LangChain tier is local


@pytest.mark.wire_only
async def test_async_end_to_end_with_a_langchain_model_passed_in(
    endpoints: Endpoints, cassette: Any, tmp_path: Path
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    c = build(_policy_file(tmp_path, endpoints), providers={"strong": FakeListChatModel(responses=["4"])})
    result = await c.arun(PROMPT)
    assert result.answer == "4" and [a.decision for a in result.attempts] == [
        "escalated",
        "escalated",
        "accepted",
    ]


@pytest.mark.wire_only
def test_cascade_run_cli(
    endpoints: Endpoints, cassette: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--policy", str(_policy_file(tmp_path, endpoints)), "--json", PROMPT])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["answer"] == "4" and out["tier"] == "strong"
    assert [a["provider"] for a in out["attempts"]] == ["openai", "anthropic", "langchain"]


def test_cascade_run_cli_without_a_key_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = tmp_path / "mixed.yaml"
    path.write_text(POLICY.format(openai="null", anthropic="null"))
    assert main(["run", "--policy", str(path), "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert "OPENAI_API_KEY" in err and "\n" not in err
