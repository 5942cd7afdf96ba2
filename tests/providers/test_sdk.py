"""The shared SDK edge: error mapping, retry-after, token estimates, local URLs, prices."""

from __future__ import annotations

import asyncio
import email.utils
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from cascade.errors import (
    InvalidResponseError,
    PermanentProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.price_table import CHECKED, PRICES, lookup
from cascade.providers import _sdk
from cascade.request import Request
from cascade.types import Completion, Message, Sample, ToolCall, Usage


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
    assert [s.text for s in out.samples] == ["a", "c"] and out.failed_calls == 1
    # a completion merged again (the first choice + the fetched rest) keeps its failures
    again = _sdk.merge([comp("x"), out])
    assert again.failed_calls == 1 and again.raw["errors"] == ["boom"]
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

    made: list[object] = []
    clients = _sdk.PerLoop(lambda: made.append(object()) or made[-1])

    async def get_twice() -> tuple[object, object]:
        return clients.get(), clients.get()

    a1, a2 = asyncio.run(get_twice())
    b1, _ = asyncio.run(get_twice())
    assert a1 is a2 and a1 is not b1 and len(made) == 2
    assert len(clients._clients) <= 1  # the closed loop's client was dropped


def test_every_sdk_client_shares_one_certificate_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx reads the CA bundle for each client it builds (about 80 ms); ours read it once per
    process and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` setting."""
    import ssl

    import httpcore2

    from cascade.providers.anthropic import AnthropicProvider
    from cascade.providers.openai import OpenAIProvider

    built: list[ssl.SSLContext] = []
    real = httpcore2.default_ssl_context  # what httpx calls for ``verify=True``

    def counted(**kw: Any) -> ssl.SSLContext:
        built.append(real(**kw))
        return built[-1]

    monkeypatch.setattr(httpcore2, "default_ssl_context", counted)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(_sdk, "_TLS", {})
    url = "http://127.0.0.1:9/v1"
    providers = [OpenAIProvider("gpt-4o-mini", api_key="k", base_url=url) for _ in range(3)]
    providers += [AnthropicProvider("claude-haiku-4-5", api_key="k", base_url=url) for _ in range(3)]

    async def async_clients() -> None:
        for p in providers:
            p._async.get()

    asyncio.run(async_clients())
    assert len(built) == 1  # six sync and six async clients
    cafile = ssl.get_default_verify_paths().openssl_cafile
    monkeypatch.setenv("SSL_CERT_FILE", cafile)  # another setting: its own check, then shared again
    OpenAIProvider("gpt-4o-mini", api_key="k", base_url=url)
    OpenAIProvider("gpt-4o-mini", api_key="k", base_url=url)
    assert len(built) == 2 and _sdk.tls_context() is built[1]
    for p in providers:
        p.close()


def test_import_cascade_does_not_import_the_sdks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cascade, cascade.registry, cascade.price_table; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic', 'httpx2')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- untrusted usage ----------------------------------------------------------------------------

BOUND = Usage(100, 64)


def checked(
    usage: Usage | None, samples: tuple[Sample, ...] = (Sample("four words of text"),)
) -> tuple[Usage, str]:
    return _sdk.check_usage(usage, samples=samples, bound=BOUND, provider="p", model="m")


def test_plausible_usage_is_billed_as_reported() -> None:
    assert checked(Usage(80, 10, 15)) == (Usage(80, 10, 15), "reported")
    # above the estimate but not absurdly (hidden tool prompts): still as reported
    assert checked(Usage(2 * 100 + 1024, 64)) == (Usage(1224, 64), "reported")


def test_missing_usage_is_estimated_from_the_request_and_the_text() -> None:
    usage, source = checked(None, (Sample("x" * 30), Sample("", tool_calls=(ToolCall("f", {"a": 1}),))))
    assert source == "estimated" and usage.input_tokens == BOUND.input_tokens
    assert 10 <= usage.output_tokens <= BOUND.output_tokens
    long, _ = checked(None, (Sample("x" * 10_000),))
    assert long.output_tokens == BOUND.output_tokens  # never above what could be produced


def test_impossible_usage_is_clamped_to_the_worst_case() -> None:
    assert checked(Usage(100_000_000, 10)) == (Usage(100, 10), "clamped")
    assert checked(Usage(50, 1_000_000)) == (Usage(50, 64), "clamped")
    # cache reads and writes count towards the prompt side too
    usage, source = checked(Usage(10, 5, 5_000, 5_000))
    assert (
        source == "clamped"
        and usage.input_tokens + usage.cached_input_tokens + usage.cache_creation_tokens == 100
    )


@pytest.mark.parametrize("usage", [Usage(-1, 5), Usage(5, -50_000), Usage(5, 5, -1), Usage(5, 5, 0, -3)])
def test_negative_usage_is_an_invalid_response(usage: Usage) -> None:
    with pytest.raises(InvalidResponseError, match="negative") as info:
        checked(usage)
    assert info.value.transient and info.value.status_code == 200


def test_token_counts_from_untrusted_fields() -> None:
    assert _sdk.token_count(5) == 5 and _sdk.token_count(5.0) == 5 and _sdk.token_count(-2) == -2
    assert _sdk.token_count("5") is None and _sdk.token_count(True) is None and _sdk.token_count(5.5) is None


def test_merge_keeps_the_least_trustworthy_usage_source() -> None:
    ok = Completion((Sample("a"),), Usage(1, 1), "m")
    est = Completion((Sample("b"),), Usage(1, 1), "m", usage_source="estimated")
    clamped = Completion((Sample("c"),), Usage(1, 1), "m", usage_source="clamped")
    assert _sdk.merge([ok, ok]).usage_source == "reported"
    assert _sdk.merge([ok, est]).usage_source == "estimated"
    assert _sdk.merge([est, clamped, ok]).usage_source == "clamped"


def test_error_objects_are_found() -> None:
    assert _sdk.error_object({"error": {"type": "server_error", "message": "down"}}) == "server_error: down"
    assert _sdk.error_object({"error": "plain"}) == "plain"
    assert _sdk.error_object({}) is None and _sdk.error_object(None) is None


def test_the_deadline_nests_and_resets() -> None:
    with _sdk.deadline(10):
        outer = _sdk._DEADLINE.get()
        with _sdk.deadline(100):
            assert _sdk._DEADLINE.get() == outer  # an earlier deadline stays in force
        with _sdk.deadline(0.001):
            assert (_sdk._DEADLINE.get() or 0) < (outer or 0)
    assert _sdk._DEADLINE.get() is None


def test_the_sync_client_sockets_honour_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _sdk.http_client(openai.DefaultHttpxClient)
    backend = client._transport._pool._network_backend  # type: ignore[attr-defined]
    assert type(backend).__name__ == "_DeadlineBackend"
    client.close()
    # a proxy from the environment is still used, and its sockets keep the deadline too
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = _sdk.http_client(anthropic.DefaultHttpxClient)
    pools = [t._pool for t in client._mounts.values() if t is not None]  # type: ignore[attr-defined]
    assert any(type(p).__name__ == "HTTPProxy" for p in pools)
    assert all(type(p._network_backend).__name__ == "_DeadlineBackend" for p in pools)
    client.close()


def test_deadline_streams_shrink_every_wait_and_survive_tls() -> None:
    import httpcore2

    seen: list[float | None] = []

    class Inner(httpcore2.NetworkStream):
        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            seen.append(timeout)
            return b"x"

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Any:
            seen.append(timeout)
            return Inner()

    stream = _sdk._DeadlineStream(Inner())
    assert stream.read(1, 30.0) == b"x" and seen[-1] == 30.0  # no deadline: the SDK's timeout
    with _sdk.deadline(0.5):
        tls = stream.start_tls(object(), server_hostname="api.example.com", timeout=30.0)
        assert isinstance(tls, _sdk._DeadlineStream) and 0 < (seen[-1] or 0) <= 0.5
        tls.read(1, 30.0)
        assert 0 < (seen[-1] or 0) <= 0.5
    with _sdk.deadline(0.0), pytest.raises(httpcore2.ReadTimeout):
        stream.read(1, 30.0)
