"""The shared SDK edge: error mapping, retry-after, token estimates, local URLs, prices."""

from __future__ import annotations

import email.utils
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from cascade.errors import (
    PermanentProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.price_table import CHECKED, PRICES, lookup
from cascade.providers import _sdk
from cascade.types import Completion, Message, Request, Sample, Usage


def status_error(sdk: Any, status: int, body: Any = None, headers: dict[str, str] | None = None) -> Exception:
    request = httpx2.Request("POST", "https://api.example.com/v1/x")
    response = httpx2.Response(status, headers=headers or {}, request=request, json=body)
    client = sdk.OpenAI(api_key="x") if sdk is openai else sdk.Anthropic(api_key="x")
    err: Exception = client._make_status_error_from_response(response)
    return err


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after": "3"}, RateLimitError),
        (408, {}, TransientProviderError),
        (409, {}, TransientProviderError),
        (500, {}, TransientProviderError),
        (503, {}, TransientProviderError),
        (529, {}, TransientProviderError),
        (400, {}, PermanentProviderError),
        (401, {}, PermanentProviderError),
        (403, {}, PermanentProviderError),
        (404, {}, PermanentProviderError),
        (400, {"x-should-retry": "true"}, TransientProviderError),
        (503, {"x-should-retry": "false"}, PermanentProviderError),
    ],
)
def test_status_mapping(sdk: Any, status: int, headers: dict[str, str], expected: type[Exception]) -> None:
    body = {"error": {"type": "some_error", "message": "went wrong"}}
    mapped = _sdk.map_error(
        status_error(sdk, status, body, {"x-request-id": "req_1", **headers}), provider="p", sdk=sdk
    )
    assert type(mapped) is expected
    assert mapped.status_code == status and mapped.provider == "p"
    assert "went wrong" in str(mapped)
    if sdk is openai:
        assert mapped.request_id == "req_1"
    if status == 429:
        assert mapped.retry_after == 3.0


def test_insufficient_quota_is_permanent() -> None:
    body = {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "quota"}}
    mapped = _sdk.map_error(status_error(openai, 429, body), provider="openai", sdk=openai)
    assert type(mapped) is PermanentProviderError and mapped.status_code == 429


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_connection_and_timeout(sdk: Any) -> None:
    request = httpx2.Request("POST", "https://api.example.com/v1/x")
    assert (
        type(_sdk.map_error(sdk.APITimeoutError(request=request), provider="p", sdk=sdk))
        is ProviderTimeoutError
    )
    conn = sdk.APIConnectionError(request=request)
    assert type(_sdk.map_error(conn, provider="p", sdk=sdk)) is TransientProviderError


def test_retry_after_forms() -> None:
    assert _sdk.retry_after({"retry-after-ms": "1500"}) == 1.5
    assert _sdk.retry_after({"retry-after": "2"}) == 2.0
    assert _sdk.retry_after({"retry-after": "nonsense"}) is None
    assert _sdk.retry_after({}) is None and _sdk.retry_after(None) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_sdk.retry_after({"retry-after": later}) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _sdk.retry_after({"retry-after": past}) == 0.0
    assert _sdk.retry_after({"retry-after-ms": "bad", "retry-after": "4"}) == 4.0


def test_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_KEY", "  k  ")
    assert _sdk.api_key("SOME_KEY", tier="t", provider="X") == "k"
    monkeypatch.setenv("SOME_KEY", "")
    with pytest.raises(Exception, match="tier 't': environment variable SOME_KEY is not set"):
        _sdk.api_key("SOME_KEY", tier="t", provider="X")


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://localhost:11434/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://192.168.1.20:8080/v1", True),
        ("http://10.0.0.5/v1", True),
        ("http://172.20.0.3:8000/v1", True),
        ("http://vllm:8000/v1", True),
        ("http://gpu-box.local:8000/v1", True),
        ("https://api.together.xyz/v1", False),
        ("https://8.8.8.8/v1", False),
        ("http://172.40.0.1/v1", False),
        (None, False),
    ],
)
def test_is_local_url(url: str | None, local: bool) -> None:
    assert _sdk.is_local_url(url) is local


def test_estimate_is_high_for_ascii_and_counts_other_scripts_per_character() -> None:
    english = Request.of("The quick brown fox jumps over the lazy dog. " * 20)  # ~200 real tokens
    assert _sdk.estimate_input_tokens(english) >= 250
    cjk = Request.of("数学问题" * 50)
    assert _sdk.estimate_input_tokens(cjk) >= 200
    with_tools = Request(
        (Message("user", "hi"),), tools=({"type": "function", "function": {"name": "f" * 90}},)
    )
    assert _sdk.estimate_input_tokens(with_tools) > _sdk.estimate_input_tokens(Request.of("hi")) + 30


def test_merge_and_partial_failures() -> None:
    def comp(text: str) -> Completion:
        return Completion((Sample(text),), Usage(10, 2, 1), "m", request_id=f"r-{text}", latency_s=0.1)

    merged = _sdk.merge([comp("a"), comp("b")])
    assert [s.text for s in merged.samples] == ["a", "b"] and merged.usage == Usage(20, 4, 2)
    assert merged.request_id == "r-a" and merged.raw["request_ids"] == ["r-a", "r-b"]
    results = iter([comp("a"), TransientProviderError("boom"), comp("c")])

    def call() -> Completion:
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    out = _sdk.call_many(call, 3, parallel=1)
    assert [s.text for s in out.samples] == ["a", "c"] and out.raw["failed_calls"] == 1
    # a completion merged again (the first choice + the fetched rest) keeps its failures
    again = _sdk.merge([comp("x"), out])
    assert again.raw["failed_calls"] == 1 and again.raw["errors"] == ["boom"]
    with pytest.raises(RateLimitError):
        _sdk.call_many(lambda: (_ for _ in ()).throw(RateLimitError("slow down")), 2, parallel=2)


def test_price_table() -> None:
    assert CHECKED.count("-") == 2 and len(PRICES) >= 20
    assert lookup("openai", "gpt-4o-mini-2024-07-18") == lookup("openai", "gpt-4o-mini")
    assert lookup("openai", "gpt-4o-2024-05-13") != lookup("openai", "gpt-4o")  # a snapshot listed itself
    assert lookup("anthropic", "claude-haiku-4-5-20251001") == lookup("anthropic", "claude-haiku-4-5")
    assert lookup("anthropic", "claude-3-5-haiku-latest") == lookup("anthropic", "claude-3-5-haiku")
    assert lookup("openai", "claude-haiku-4-5") is None and lookup("openai", "gpt-unknown") is None
    haiku = lookup("anthropic", "claude-haiku-4-5")
    assert haiku is not None and haiku.cost(Usage(1_000_000, 0, 1_000_000, 1_000_000)) == Decimal("2.35")


def test_one_async_client_per_event_loop() -> None:
    import asyncio

    made: list[object] = []
    clients = _sdk.PerLoop(lambda: made.append(object()) or made[-1])

    async def get_twice() -> tuple[object, object]:
        return clients.get(), clients.get()

    a1, a2 = asyncio.run(get_twice())
    b1, _ = asyncio.run(get_twice())
    assert a1 is a2 and a1 is not b1 and len(made) == 2
    assert len(clients._clients) <= 1  # the closed loop's client was dropped


def test_import_cascade_does_not_import_the_sdks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cascade, cascade.registry, cascade.price_table; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic', 'httpx2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
